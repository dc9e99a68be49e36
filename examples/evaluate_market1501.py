"""Evaluate a model on Market-1501: rank-1/5/10, mAP and mINP under the standard protocol.

Shows: ``load_dataset("market1501", root)`` (reads ``query/`` and ``bounding_box_test/``, junk
images left out), embedding query and gallery, ``pairwise_distance``, optional k-reciprocal
re-ranking (Zhong et al., CVPR 2017), and ``evaluate_rank`` (gallery images of the query's own
person and camera are ignored, as in the benchmark's protocol).

    python examples/evaluate_market1501.py /data/Market-1501-v15.09.15 --model isr_swin_base
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Evaluate a model on Market-1501 (rank-k, mAP, mINP).")
    p.add_argument("root", help="the Market-1501 folder (holding query/ and bounding_box_test/)")
    p.add_argument("--model", default="isr_swin_base", help="zoo name (see 'isr-reid models')")
    p.add_argument("--weights", default=None, help="local weights (.safetensors, saved model dir, upstream .pth)")
    p.add_argument("--random-init", action="store_true", help="random weights (to try the pipeline offline)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's embedding")
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.add_argument("--json", default=None, help="also write the metrics as JSON here")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    import numpy as np

    from isr_reid import load_model
    from isr_reid.data.datasets import load_dataset
    from isr_reid.retrieval import evaluate_rank, pairwise_distance, rerank

    data = load_dataset("market1501", args.root)
    print(data.summary())
    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)
    q = model.extract([r.path for r in data.query], batch_size=args.batch_size, flip=args.flip)
    g = model.extract([r.path for r in data.gallery], batch_size=args.batch_size, flip=args.flip)
    if args.rerank:
        # the reference re-ranking takes Euclidean distances
        dist = rerank(pairwise_distance(q, g, "euclidean"), pairwise_distance(q, q, "euclidean"),
                      pairwise_distance(g, g, "euclidean"))
    else:
        dist = pairwise_distance(q, g, "cosine")
    result = evaluate_rank(
        dist,
        np.array([r.pid for r in data.query]), np.array([r.pid for r in data.gallery]),
        np.array([r.camid for r in data.query]), np.array([r.camid for r in data.gallery]),
    )
    metrics = {
        "rank1": float(result.cmc[0]), "rank5": float(result.cmc[4]), "rank10": float(result.cmc[9]),
        "mAP": float(result.mAP), "mINP": float(result.mINP), "num_valid_queries": int(result.num_valid),
    }
    print("  ".join(f"{k} {v:.2%}" if k != "num_valid_queries" else f"{k} {v}" for k, v in metrics.items()))
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
