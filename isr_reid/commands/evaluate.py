"""isr-reid evaluate: embed a benchmark's query and gallery sets and report CMC, mAP and mINP."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, model_from_args

HELP = "evaluate a model on a ReID benchmark (R1, R5, R10, mAP, mINP)"
DESCRIPTION = """Embed the query and gallery images of a benchmark, rank the gallery for every query
and print R1, R5, R10, mAP and mINP (Market-1501 protocol: gallery images of the query's id taken
by the query's camera are ignored; queries without a remaining match are skipped).

Datasets: market1501, msmt17, dukemtmc, cuhk03 (CUHK03-NP, --cuhk03-variant), folder
(<root>/query/<pid>/<cam>_<name>.jpg and <root>/gallery/<pid>/...), mot (MOT gt tracks as crops).

Examples:
  isr-reid evaluate --model isr_swin_base --dataset market1501 --root data/Market-1501-v15.09.15
  isr-reid evaluate --model isr_resnet50 --weights my.safetensors --dataset folder --root my_set \\
      --rerank --json results.json --save-features feats.npz
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--dataset", required=True,
                   choices=["market1501", "msmt17", "dukemtmc", "cuhk03", "folder", "mot"], help="dataset layout")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--camera-pattern", default=None,
                   help="folder datasets: regex whose group 1 is the camera in a file name (default: before the first '_')")
    p.add_argument("--cuhk03-variant", choices=["detected", "labeled"], default="detected")
    p.add_argument("--cuhk03-metric", action="store_true",
                   help="CUHK03 single-shot CMC (10 random draws of one gallery image per id) instead of Market-1501's")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--flip", action="store_true", help="average each embedding with its mirrored image's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-rank", type=int, default=50, help="length of the CMC curve in the JSON")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    p.add_argument("--save-features", default=None, metavar="FILE",
                   help="keep the query and gallery embeddings with pids, camids and paths (.npz or .safetensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _dataset_options(args: argparse.Namespace) -> dict:
    if args.dataset == "folder" and args.camera_pattern:
        return {"camera_pattern": args.camera_pattern}
    if args.dataset == "cuhk03":
        return {"variant": args.cuhk03_variant}
    return {}


def format_table(summary: dict[str, float]) -> str:
    """The metrics as a two-line table, in percent."""
    keys = list(summary)
    head = "  ".join(f"{k:>7s}" for k in keys)
    row = "  ".join(f"{100 * summary[k]:7.2f}" for k in keys)
    return f"{head}\n{row}"


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .._io import atomic_path
    from ..data.datasets import load_dataset, record_images
    from ..data.features import save_features
    from ..retrieval import evaluate_rank, pairwise_distance, rerank_features

    ds = load_dataset(args.dataset, args.root, **_dataset_options(args))
    if not ds.query or not ds.gallery:
        raise ValueError(f"{args.root}: the {args.dataset} dataset has an empty query or gallery set")
    model = model_from_args(args)
    progress = False if args.no_progress else None
    feats = {}
    for split in ("query", "gallery"):
        records = getattr(ds, split)
        feats[split] = model.extract(record_images(records), batch_size=args.batch_size, flip=args.flip,
                                     progress=progress)
    q_pids = np.array([r.pid for r in ds.query])
    g_pids = np.array([r.pid for r in ds.gallery])
    q_cams = np.array([r.camid for r in ds.query])
    g_cams = np.array([r.camid for r in ds.gallery])
    if args.save_features:
        records = ds.query + ds.gallery
        save_features(
            args.save_features,
            np.concatenate([feats["query"], feats["gallery"]]),
            [r.path for r in records],
            model=model.cfg.name,
            config=model.cfg.to_dict(),
            extra={
                "pids": np.concatenate([q_pids, g_pids]).astype(np.int64),
                "camids": np.concatenate([q_cams, g_cams]).astype(np.int64),
                "is_query": np.r_[np.ones(len(q_pids), np.uint8), np.zeros(len(g_pids), np.uint8)],
            },
        )
    if args.rerank:
        distmat = rerank_features(feats["query"], feats["gallery"], progress=progress)
    else:
        distmat = pairwise_distance(feats["query"], feats["gallery"], "cosine")
    result = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=args.max_rank,
                           protocol="cuhk03" if args.cuhk03_metric else "market1501")
    summary = result.summary()
    print(f"{ds.name}: {len(ds.query)} queries ({result.num_valid} with a match), {len(ds.gallery)} gallery images;"
          f" model {model.cfg.name}{' + re-ranking' if args.rerank else ''}")
    print(format_table(summary))
    if args.json:
        payload = {
            "model": model.cfg.name, "weights": args.weights, "random_init": bool(args.random_init),
            "dataset": ds.name, "root": str(ds.root), "rerank": bool(args.rerank), "flip": bool(args.flip),
            "protocol": "cuhk03" if args.cuhk03_metric else "market1501",
            "num_query": len(ds.query), "num_gallery": len(ds.gallery), "num_valid": result.num_valid,
            **summary, "cmc": [float(v) for v in result.cmc],
        }
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(payload, indent=2))
    return 0
