"""isr-reid search: the nearest gallery images of query images."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, model_from_args

HELP = "find the top-k gallery images of query images (a gallery folder or a saved index)"
DESCRIPTION = """Embed the query images and list the k most similar gallery images with their
cosine similarity.

--gallery is a folder of images (embedded now, recursively; a parent folder named by an integer is
taken as the person id) or a gallery index saved with --save-index (<name>.safetensors + <name>.json).
A query's person id is likewise its parent folder's name when that is an integer; where the ids of
a query and its results are known, --save-png draws green (same id) or red borders.

Examples:
  isr-reid search --model isr_swin_base --gallery crops/ --query q1.jpg q2.jpg -k 5 --save-png hits.png
  isr-reid search --model isr_swin_base --gallery crops/ --save-index gallery --query q1.jpg
  isr-reid search --model isr_swin_base --gallery gallery.safetensors --query q1.jpg --json hits.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--gallery", required=True, metavar="DIR|INDEX", help="gallery image folder or saved index")
    p.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query images or folders")
    p.add_argument("-k", "--topk", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--backend", choices=["torch", "faiss"], default="torch",
                   help="index backend when the gallery is a folder (faiss needs isr-reid[faiss])")
    p.add_argument("--save-index", default=None, metavar="PATH",
                   help="save the gallery folder's index (PATH.safetensors + PATH.json) for later searches")
    p.add_argument("--save-png", default=None, metavar="OUT", help="draw each query with its ranked results")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--flip", action="store_true", help="average each embedding with its mirrored image's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pid_of(path: object) -> int | None:
    from pathlib import Path

    name = Path(str(path)).parent.name
    return int(name) if name.lstrip("-").isdigit() else None


def _queries(items: list[str]) -> list[str]:
    from pathlib import Path

    from ..data.images import list_images

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(str(x) for x in list_images(p))
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"query image not found: {item}")
    if not out:
        raise ValueError(f"--query: no images found in {', '.join(items)}")
    return out


def _gallery(args: argparse.Namespace, model: object, progress: bool | None) -> object:
    from pathlib import Path

    from ..data.images import list_images
    from ..retrieval.index import GalleryIndex

    path = Path(args.gallery)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ValueError(f"--gallery: no images under {path}")
        emb = model.extract([str(f) for f in files], batch_size=args.batch_size, flip=args.flip, progress=progress)
        pids = [_pid_of(f) for f in files]
        index = GalleryIndex(emb, paths=[str(f) for f in files],
                             pids=pids if all(p is not None for p in pids) else None,
                             backend=args.backend, info={"model": model.cfg.name})
        if args.save_index:
            written = index.save(args.save_index)
            print(f"saved the gallery index ({len(index)} images) to {written}")
        return index
    index = GalleryIndex.load(path)
    made_by = index.info.get("model")
    if made_by and made_by != model.cfg.name:
        raise ValueError(f"--gallery: the index {path} holds {made_by} embeddings, not {model.cfg.name}")
    if index.dim != model.cfg.embed_dim:
        raise ValueError(f"--gallery: the index {path} holds {index.dim}-d embeddings, the model makes "
                         f"{model.cfg.embed_dim}-d ones")
    return index


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .._io import atomic_path

    if args.topk < 1:
        raise ValueError(f"--topk: expected a positive number, got {args.topk}")
    progress = False if args.no_progress else None
    model = model_from_args(args)
    queries = _queries(args.query)
    index = _gallery(args, model, progress)
    q_emb = model.extract(queries, batch_size=args.batch_size, flip=args.flip, progress=progress)
    res = index.search(q_emb, k=args.topk)
    scores = res.scores
    g_paths = index.meta["paths"] or [f"#{i}" for i in range(len(index))]
    g_pids = index.meta["pids"]
    q_pids = [_pid_of(q) for q in queries]
    report = []
    for qi, q in enumerate(queries):
        print(f"query {q}" + (f" (id {q_pids[qi]})" if q_pids[qi] is not None else ""))
        hits = []
        for rank, (gi, score) in enumerate(zip(res.indices[qi].tolist(), scores[qi].tolist()), 1):
            if gi < 0:
                continue
            pid = g_pids[gi] if g_pids is not None else None
            print(f"  {rank:3d}  {score:7.4f}  {g_paths[gi]}" + (f"  id {pid}" if pid is not None else ""))
            hits.append({"rank": rank, "score": float(score), "index": int(gi), "path": g_paths[gi], "pid": pid})
        report.append({"query": q, "pid": q_pids[qi], "results": hits})
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"model": model.cfg.name, "gallery": str(args.gallery), "queries": report},
                                      indent=2))
    if args.save_png:
        from ..retrieval.visualize import draw_ranked_results

        if (res.indices < 0).any():
            raise ValueError("--save-png: some queries have fewer than k results; lower -k or raise nprobe")
        correct = None
        if g_pids is not None and all(p is not None for p in q_pids):
            correct = np.asarray(g_pids)[res.indices] == np.asarray(q_pids)[:, None]
        out = draw_ranked_results(queries, g_paths, res.indices, scores=scores, correct=correct,
                                  out_path=args.save_png)
        print(f"wrote {out}")
    return 0
