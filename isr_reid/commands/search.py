"""isr-reid search: the nearest gallery images of query images."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ._common import add_model_arguments, model_from_args

HELP = "find the top-k gallery images of query images (a gallery folder, a features file or a saved index)"
DESCRIPTION = """Embed the query images and list the k nearest gallery images with their similarity
(cosine; with --metric euclidean or scl, their distance).

--gallery is one of
  - a folder of images (embedded now, recursively);
  - a features file written by 'isr-reid extract' or 'evaluate --save-features' (.npz or .safetensors);
  - an index saved with --save-index (<name>.safetensors + <name>.json).
With a features file or an index, --model (and --input-size) default to the ones that made it, and a
different model is an error.

Person ids, for the JSON and the green (same person) / red borders of --save-png: an image's person is
its parent folder when that folder's name is an integer, qualified by the folders between it and the
gallery (or query) folder other than split folders (query, gallery, train, test, bounding_box_*):
crops/MOT17-02/1/ and crops/MOT17-04/1/ are two persons, while data/query/0001/ and
data/gallery/0001/ are one.

--metric scl ranks scl_resnet50 embeddings by SCL's distance, 0.5 ||g - g'|| + 0.5 mean_k ||s_k - s_k'||."""
EXAMPLES = """\
  isr-reid search --model isr_swin_base --gallery crops/ --query q1.jpg q2.jpg -k 5 --save-png hits.png
  isr-reid search --model isr_swin_base --gallery crops/ --save-index gallery --query q1.jpg
  isr-reid search --gallery features.npz --query q1.jpg --json hits.json"""
PARAM_FLAGS = {"k": "--topk"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, required=False)
    p.add_argument("--gallery", required=True, metavar="DIR|FEATURES|INDEX",
                   help="gallery image folder, features file (.npz/.safetensors from extract) or saved index")
    p.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query images or folders")
    p.add_argument("-k", "--topk", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--metric", choices=["cosine", "euclidean", "scl"], default=None,
                   help="distance (default: the saved index's, else cosine); scl: for scl_resnet50")
    p.add_argument("--backend", choices=["torch", "faiss"], default="torch",
                   help="index backend when the gallery is a folder or features file (faiss needs isr-reid[faiss])")
    p.add_argument("--save-index", default=None, metavar="PATH",
                   help="save the gallery's index (PATH.safetensors + PATH.json) for later searches")
    p.add_argument("--save-png", default=None, metavar="OUT", help="draw each query with its ranked results")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--flip", action="store_true", help="average each embedding with its mirrored image's")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


# Folders that split a dataset rather than name a sequence: query/0001 and gallery/0001 are one person.
SPLIT_FOLDERS = frozenset({"query", "gallery", "train", "test", "bounding_box_train", "bounding_box_test"})


def _under(path: str, root: str | None) -> str | None:
    """The folders between ``root`` and ``path``'s parent, split folders left out ('/'-joined, '' for
    none), or None when ``path`` is not under ``root``."""
    if root is None:
        return None
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return "/".join(part for part in Path(rel).parent.parent.parts if part not in SPLIT_FOLDERS)


def person_of(path: str, *roots: str | None) -> tuple[str, int] | None:
    """(sequence, pid) of an image: pid = its parent folder's integer name, sequence = the folders
    between the first of ``roots`` that holds it and that parent ('' when none holds it)."""
    name = Path(path).parent.name
    if not name.lstrip("-").isdigit():
        return None
    for root in roots:
        seq = _under(path, root)
        if seq is not None:
            return seq, int(name)
    return "", int(name)


def _label(person: tuple[str, int] | None) -> str | None:
    return None if person is None else (f"{person[0]}/{person[1]}" if person[0] else str(person[1]))


def _queries(items: list[str]) -> tuple[list[str], list[str | None]]:
    """The query image paths, and for each the folder it was listed from (None for a file)."""
    from ..data.images import list_images

    out: list[str] = []
    roots: list[str | None] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            files = [str(x) for x in list_images(p)]
            out.extend(files)
            roots.extend([os.path.abspath(p)] * len(files))
        elif p.is_file():
            out.append(str(p))
            roots.append(None)
        else:
            raise FileNotFoundError(f"--query: image not found: {item}")
    if not out:
        raise ValueError(f"--query: no images found in {', '.join(items)}")
    return out, roots


def _common_root(paths: list[str]) -> str | None:
    """The folder above every image's person folder: the common path of their grandparents."""
    if not paths:
        return None
    try:
        return os.path.commonpath([os.path.dirname(os.path.dirname(os.path.abspath(p))) for p in paths])
    except ValueError:  # paths on different drives
        return None


def _load_saved(args: argparse.Namespace) -> Any:
    """The gallery's index when --gallery is a features file or saved index, else None (a folder)."""
    from ..retrieval.index import GalleryIndex, is_features_file

    path = Path(args.gallery)
    if path.is_dir():
        return None
    if is_features_file(path):
        return GalleryIndex.from_features(path, metric=args.metric or "cosine", backend=args.backend)
    index = GalleryIndex.load(path)
    if args.metric and args.metric != index.metric:
        if index.backend != "torch":
            raise ValueError(f"--metric {args.metric}: the {index.backend} index {path} was built for "
                             f"{index.metric}; rebuild it from the folder or features file")
        fields = {k: v for k, v in index.meta.items() if v is not None}
        index = GalleryIndex(index.embeddings, metric=args.metric, info=index.info, **fields)
    return index


def _check_model(args: argparse.Namespace, index: Any) -> None:
    """Default --model/--input-size to those that made ``index``; refuse a different model."""
    made_by = index.info.get("model")
    size = (index.info.get("config") or {}).get("input_size")
    if args.model is None:
        if not made_by:
            raise ValueError(f"--model is required: {args.gallery} does not record the model that made it")
        args.model = made_by
    elif made_by and made_by != args.model:
        raise ValueError(f"--gallery: {args.gallery} holds {made_by} embeddings, not --model {args.model}'s")
    if size and args.input_size is None:
        args.input_size = list(size)  # queries are embedded as the gallery was
    elif size and list(args.input_size) != list(size):
        raise ValueError(f"--gallery: {args.gallery} was embedded at --input-size {size[0]} {size[1]}, "
                         f"not {args.input_size[0]} {args.input_size[1]}")


def _gallery_from_folder(args: argparse.Namespace, model: Any, progress: bool | None) -> Any:
    from ..data.images import list_images
    from ..retrieval.index import GalleryIndex

    root = os.path.abspath(args.gallery)
    files = [str(f) for f in list_images(args.gallery)]
    if not files:
        raise ValueError(f"--gallery: no images under {args.gallery}")
    emb = model.extract(files, batch_size=args.batch_size, flip=args.flip, progress=progress)
    people = [person_of(f, root) for f in files]
    known = all(p is not None for p in people)
    return GalleryIndex(emb, paths=files, pids=[p[1] for p in people] if known else None,
                        videos=[p[0] for p in people] if known else None, metric=args.metric or "cosine",
                        backend=args.backend, info={"model": model.cfg.name, "config": model.cfg.to_dict(),
                                                    "root": root})


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from .._io import atomic_path

    if args.topk < 1:
        raise ValueError(f"--topk: expected a positive number, got {args.topk}")
    progress = False if args.no_progress else None
    queries, q_roots = _queries(args.query)
    index = _load_saved(args)
    if index is not None:
        _check_model(args, index)
    elif args.model is None:
        raise ValueError("--model NAME is required when --gallery is an image folder (see 'isr-reid models')")
    model = model_from_args(args)
    if index is None:
        index = _gallery_from_folder(args, model, progress)
    elif index.dim != model.cfg.embed_dim:
        raise ValueError(f"--gallery: {args.gallery} holds {index.dim}-d embeddings, --model {model.cfg.name} "
                         f"makes {model.cfg.embed_dim}-d ones")
    if args.save_index:
        written = index.save(args.save_index)
        print(f"saved the gallery index ({len(index)} images) to {written}")
    q_emb = model.extract(queries, batch_size=args.batch_size, flip=args.flip, progress=progress)
    res = index.search(q_emb, k=args.topk)
    g_paths = index.meta["paths"] or [f"#{i}" for i in range(len(index))]
    g_root = index.info.get("root") or _common_root(index.meta["paths"] or [])
    if index.meta["pids"] is not None:
        seqs = index.meta["videos"] or [""] * len(index)
        g_people = list(zip(seqs, index.meta["pids"]))
    elif index.meta["paths"] is not None:
        g_people = [person_of(p, g_root) for p in g_paths]
    else:
        g_people = [None] * len(index)
    q_people = [person_of(q, g_root, r) for q, r in zip(queries, q_roots)]
    cosine = index.metric == "cosine"
    report = []
    for qi, q in enumerate(queries):
        print(f"query {q}" + (f" (id {_label(q_people[qi])})" if q_people[qi] is not None else ""))
        hits = []
        for rank, (gi, dist) in enumerate(zip(res.indices[qi].tolist(), res.distances[qi].tolist()), 1):
            if gi < 0:
                continue
            who = g_people[gi]
            value = 1.0 - dist if cosine else dist
            print(f"  {rank:3d}  {value:7.4f}  {g_paths[gi]}" + (f"  id {_label(who)}" if who is not None else ""))
            hits.append({"rank": rank, "score" if cosine else "distance": float(value), "index": int(gi),
                         "path": g_paths[gi], "pid": None if who is None else who[1], "person": _label(who)})
        report.append({"query": q, "pid": None if q_people[qi] is None else q_people[qi][1],
                       "person": _label(q_people[qi]), "results": hits})
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"model": model.cfg.name, "gallery": str(args.gallery), "metric": index.metric,
                                       "queries": report}, indent=2))
    if args.save_png:
        from ..retrieval.visualize import draw_ranked_results

        if (res.indices < 0).any():
            raise ValueError("--save-png: some queries have fewer than k results; lower -k or raise nprobe")
        correct = None
        if all(p is not None for p in g_people) and all(p is not None for p in q_people):
            correct = np.array([[q_people[qi] == g_people[gi] for gi in row]
                                for qi, row in enumerate(res.indices.tolist())])
        scores = res.scores if cosine else res.distances  # printed under each result
        out = draw_ranked_results(queries, g_paths, res.indices, scores=scores, correct=correct,
                                  out_path=args.save_png)
        print(f"wrote {out}")
    return 0
