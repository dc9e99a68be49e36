"""isr-reid evaluate: embed a benchmark's query and gallery sets and report CMC, mAP and mINP."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_model_arguments, model_from_args

HELP = "evaluate a model on a ReID benchmark (R1, R5, R10, mAP, mINP)"
DESCRIPTION = """Embed the query and gallery images of a benchmark, rank the gallery for every query
and print R1, R5, R10, mAP and mINP (Market-1501 protocol: gallery images of the query's id taken
by the query's camera are ignored; queries without a remaining match are skipped).

Datasets: market1501, msmt17, dukemtmc, cuhk03 (CUHK03-NP, --cuhk03-variant), folder
(<root>/query/<pid>/<cam>_<name>.jpg and <root>/gallery/<pid>/...), mot (MOT gt tracks as crops:
each track's first crop is its query; the track's crops fewer than --min-frame-gap frames from it
are not counted as its matches, since near-adjacent video frames are near copies).

--features FILE evaluates embeddings already made, without a model:
  - a file from 'isr-reid extract' of the dataset's images, with --dataset and --root to label them
    (every query and gallery image of the dataset must be in the file, found by path);
  - a file from 'evaluate --save-features', which carries its own labels (--dataset not needed).

--metric scl ranks scl_resnet50 embeddings by SCL's distance, 0.5 ||g - g'|| + 0.5 mean_k ||s_k - s_k'||
(Pang et al., ACM TOMM 2022), as SCL's own evaluation does."""
EXAMPLES = """\
  isr-reid evaluate --model isr_swin_base --dataset market1501 --root data/Market-1501-v15.09.15
  isr-reid evaluate --model isr_resnet50 --weights my.safetensors --dataset folder --root my_set \\
      --rerank --json results.json --save-features feats.npz
  isr-reid evaluate --features feats.npz --metric cosine --rerank"""


# = isr_reid.data.datasets.MOT_MIN_FRAME_GAP (not imported here: it would import torch for --help)
MOT_MIN_FRAME_GAP = 30


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, required=False)
    p.add_argument("--dataset", default=None,
                   choices=["market1501", "msmt17", "dukemtmc", "cuhk03", "folder", "mot"], help="dataset layout")
    p.add_argument("--root", default=None, help="dataset folder")
    p.add_argument("--features", default=None, metavar="FILE",
                   help="evaluate this features file (.npz/.safetensors from extract or --save-features) "
                        "instead of embedding the images; no --model")
    p.add_argument("--metric", choices=["cosine", "euclidean", "scl"], default="cosine",
                   help="distance to rank by (default cosine); scl: SCL's distance, for scl_resnet50")
    p.add_argument("--camera-pattern", default=None,
                   help="folder datasets: regex whose group 1 is the camera in a file name (default: before the first '_')")
    p.add_argument("--cuhk03-variant", choices=["detected", "labeled"], default="detected")
    p.add_argument("--cuhk03-metric", action="store_true",
                   help="CUHK03 single-shot CMC (10 random draws of one gallery image per id) instead of Market-1501's")
    p.add_argument("--min-frame-gap", type=int, default=MOT_MIN_FRAME_GAP, metavar="N",
                   help=f"mot: a track's crops fewer than N frames from its query crop are not scored as "
                        f"matches (default {MOT_MIN_FRAME_GAP}, 1 s at 30 fps; 0 scores adjacent frames)")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--flip", action="store_true", help="average each embedding with its mirrored image's")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-rank", type=int, default=50, help="length of the CMC curve in the JSON")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    p.add_argument("--save-features", default=None, metavar="FILE",
                   help="keep the query and gallery embeddings with pids, camids and paths (.npz or .safetensors)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def _dataset_options(args: argparse.Namespace) -> dict:
    if args.dataset == "folder" and args.camera_pattern:
        return {"camera_pattern": args.camera_pattern}
    if args.dataset == "cuhk03":
        return {"variant": args.cuhk03_variant}
    if args.dataset == "mot":
        return {"min_frame_gap": args.min_frame_gap}
    return {}


def format_table(summary: dict[str, float]) -> str:
    """The metrics as a two-line table, in percent."""
    keys = list(summary)
    head = "  ".join(f"{k:>7s}" for k in keys)
    row = "  ".join(f"{100 * summary[k]:7.2f}" for k in keys)
    return f"{head}\n{row}"


def _labels_from_file(f: Any) -> dict[str, Any]:
    """Query/gallery embeddings and labels of a features file written by ``evaluate --save-features``."""

    missing = [k for k in ("pids", "camids", "is_query") if k not in f.extra]
    if missing:
        raise ValueError(f"--features: the file has no {', '.join(missing)} (it was not written by "
                         "'evaluate --save-features'); pass --dataset and --root to label its images")
    is_q = f.extra["is_query"].astype(bool)
    return {
        "query": f.embeddings[is_q], "gallery": f.embeddings[~is_q],
        "q_pids": f.extra["pids"][is_q], "g_pids": f.extra["pids"][~is_q],
        "q_cams": f.extra["camids"][is_q], "g_cams": f.extra["camids"][~is_q],
    }


def _rows_by_path(f: Any, records: list[Any], split: str, features: str) -> Any:
    """The rows of features file ``f`` for ``records``, matched by absolute path."""
    import os

    row_of: dict[str, int] = {}
    for i, p in enumerate(f.paths):
        row_of.setdefault(os.path.abspath(p), i)
    if any(r.box is not None for r in records):
        raise ValueError(f"--features: the {split} items of this dataset are crops of video frames, which a "
                         "features file from 'isr-reid extract' does not hold; evaluate with --model, or pass "
                         "a file written by 'evaluate --save-features' without --dataset")
    rows, absent = [], []
    for r in records:
        i = row_of.get(os.path.abspath(r.path))
        (absent if i is None else rows).append(r.path if i is None else i)
    if absent:
        raise ValueError(f"--features: {features} has no embedding of {len(absent)} {split} image(s) of the "
                         f"dataset, e.g. {absent[0]}; extract the dataset's folder: "
                         f"isr-reid extract --model NAME {os.path.dirname(absent[0])} -o FILE")
    return f.embeddings[rows]


def _check_matches(ds: Any, args: argparse.Namespace) -> None:
    """Fail early when no query has a gallery item of its pid from another camera (nothing to score)."""
    cams: dict[int, set[int]] = {}
    for r in ds.gallery:
        cams.setdefault(r.pid, set()).add(r.camid)
    if any(cams.get(q.pid, set()) - {q.camid} for q in ds.query):
        return
    if args.dataset == "mot":
        raise ValueError(f"--root {args.root}: no track has a crop at least --min-frame-gap {args.min_frame_gap} "
                         "frames from its query crop; lower --min-frame-gap (these sequences are short)")
    raise ValueError(f"--root {args.root}: no query has a gallery image of its person from another camera")


def _distances(q: Any, g: Any, metric: str, rerank: bool, progress: bool | None) -> Any:
    from ..retrieval import pairwise_distance, rerank_features
    from ..retrieval.reranking import rerank as rerank_dist

    if not rerank:
        return pairwise_distance(q, g, metric)
    if metric in ("cosine", "euclidean"):
        # Unit embeddings: cosine and Euclidean distances rank alike; the reference re-ranking takes Euclidean.
        return rerank_features(q, g, progress=progress)
    return rerank_dist(pairwise_distance(q, g, metric), pairwise_distance(q, q, metric),
                       pairwise_distance(g, g, metric))


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .._io import atomic_path
    from ..data.datasets import load_dataset, record_images
    from ..data.features import load_features, save_features
    from ..retrieval import evaluate_rank

    if args.features and (args.model or args.weights):
        raise ValueError("--features and --model/--weights exclude each other: the features file's embeddings "
                         "are evaluated as they are")
    if not args.features and not (args.model and args.dataset and args.root):
        raise ValueError("pass --model NAME, --dataset and --root (or --features FILE)")
    if bool(args.dataset) != bool(args.root):
        raise ValueError("--dataset and --root go together")
    ds = None
    if args.dataset:
        ds = load_dataset(args.dataset, args.root, **_dataset_options(args))
        if not ds.query or not ds.gallery:
            raise ValueError(f"--root {args.root}: the {args.dataset} dataset has an empty query or gallery set")
        _check_matches(ds, args)  # before any embedding
    progress = False if args.no_progress else None
    if args.features:
        f = load_features(args.features)
        model_name = f.model
        if ds is None:
            data = _labels_from_file(f)
        else:
            data = {split: _rows_by_path(f, getattr(ds, split), split, args.features) for split in ("query", "gallery")}
    else:
        model = model_from_args(args)
        model_name = model.cfg.name
        data = {split: model.extract(record_images(getattr(ds, split)), batch_size=args.batch_size,
                                     flip=args.flip, progress=progress) for split in ("query", "gallery")}
    if ds is not None:
        data.update(q_pids=np.array([r.pid for r in ds.query]), g_pids=np.array([r.pid for r in ds.gallery]),
                    q_cams=np.array([r.camid for r in ds.query]), g_cams=np.array([r.camid for r in ds.gallery]))
    if args.save_features:
        paths = [r.path for r in ds.query + ds.gallery] if ds is not None else f.paths
        save_features(
            args.save_features,
            np.concatenate([data["query"], data["gallery"]]),
            paths,
            model=model_name,
            config=f.config if args.features else model.cfg.to_dict(),
            extra={
                "pids": np.concatenate([data["q_pids"], data["g_pids"]]).astype(np.int64),
                "camids": np.concatenate([data["q_cams"], data["g_cams"]]).astype(np.int64),
                "is_query": np.r_[np.ones(len(data["q_pids"]), np.uint8), np.zeros(len(data["g_pids"]), np.uint8)],
            },
        )
    distmat = _distances(data["query"], data["gallery"], args.metric, args.rerank, progress)
    result = evaluate_rank(distmat, data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"],
                           max_rank=args.max_rank, protocol="cuhk03" if args.cuhk03_metric else "market1501")
    summary = result.summary()
    name = ds.name if ds is not None else str(args.features)
    print(f"{name}: {len(data['q_pids'])} queries ({result.num_valid} with a match), {len(data['g_pids'])} gallery "
          f"images; model {model_name}, {args.metric} distance{' + re-ranking' if args.rerank else ''}")
    print(format_table(summary))
    if args.json:
        payload = {
            "model": model_name, "weights": args.weights, "init": None if args.features else args.init,
            "features": args.features, "dataset": ds.name if ds is not None else None,
            "root": str(ds.root) if ds is not None else None, "metric": args.metric,
            "rerank": bool(args.rerank), "flip": bool(args.flip),
            "min_frame_gap": args.min_frame_gap if args.dataset == "mot" else None,
            "protocol": "cuhk03" if args.cuhk03_metric else "market1501",
            "num_query": len(data["q_pids"]), "num_gallery": len(data["g_pids"]), "num_valid": result.num_valid,
            **summary, "cmc": [float(v) for v in result.cmc],
        }
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(payload, indent=2))
    return 0
