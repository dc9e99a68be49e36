"""Search a gallery of person crops with query images and draw the ranked results.

Shows: embedding two folders, a ``GalleryIndex`` (exact search on torch, or faiss for large
galleries; it can be saved and reloaded with its paths), and ``draw_ranked_results``, which writes
one row per query: the query, then its top-k gallery images with their similarity.

    python examples/search_gallery.py --query queries/ --gallery gallery/ -k 10 -o ranked.png
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Search a gallery with query images and draw the ranked results.")
    p.add_argument("--query", required=True, help="a query image or a folder of them")
    p.add_argument("--gallery", required=True, help="a folder of gallery images (recursive)")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument("--output", "-o", default="ranked.png", help="the picture to write (PNG)")
    p.add_argument("--json", default=None, help="also write the results as JSON here")
    p.add_argument("--index", default=None, help="also save the gallery index here (reload with GalleryIndex.load)")
    p.add_argument("--backend", choices=("torch", "faiss"), default="torch", help="search backend (default torch)")
    p.add_argument("--model", default="isr_swin_base", help="zoo name (see 'isr-reid models')")
    p.add_argument("--weights", default=None, help="local weights (.safetensors, saved model dir, upstream .pth)")
    p.add_argument("--random-init", action="store_true", help="random weights (to try the pipeline offline)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    from pathlib import Path

    from isr_reid import load_model
    from isr_reid.data import list_images
    from isr_reid.retrieval import GalleryIndex
    from isr_reid.retrieval.visualize import draw_ranked_results

    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)
    queries = [Path(args.query)] if Path(args.query).is_file() else list_images(args.query)
    gallery = list_images(args.gallery)
    index = GalleryIndex(model.extract(gallery), paths=[str(g) for g in gallery], backend=args.backend,
                         info={"model": model.cfg.name})
    if args.index:
        index.save(args.index)
    found = index.search(model.extract(queries), k=args.k)

    draw_ranked_results(queries, gallery, found.indices, scores=found.scores, out_path=args.output)
    results = []
    for q, idx, sims in zip(queries, found.indices, found.scores):
        hits = [{"path": str(gallery[i]), "similarity": round(float(s), 6)} for i, s in zip(idx, sims) if i >= 0]
        results.append({"query": str(q), "results": hits})
        print(f"{q}: " + ", ".join(f"{Path(h['path']).name} ({h['similarity']:.3f})" for h in hits[:3]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
