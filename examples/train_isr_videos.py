"""Train a model with ISR on your own unlabeled videos in MOT layout, then load the result.

Shows: ``train_isr`` (Dou et al., ICCV 2023): positive pairs are mined across frames of the same
video by bipartite matching of the embeddings, weighted by their reliability, and trained with
the reliability-guided contrastive loss; no identity labels. The videos are MOTChallenge-style
sequences: ``<seq>/seqinfo.ini``, ``<seq>/img1/000001.jpg ...`` and ``<seq>/det/det.txt`` (one line per
detection: ``frame,-1,x,y,w,h,score``), one or many sequences under ROOT. The output folder holds
``model.safetensors`` + ``config.json`` and loads with ``load_model(NAME, weights=OUTPUT)``.

    python examples/train_isr_videos.py my_videos/ -o isr_run --model isr_resnet50 --steps 2000
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train a model with ISR on unlabeled videos (MOT layout).")
    p.add_argument("videos", help="a MOT sequence folder, or a folder of them")
    p.add_argument("--output", "-o", required=True, help="output folder (checkpoint.pt, model.safetensors, config.json)")
    p.add_argument("--model", default="isr_resnet50", help="zoo name to train (default isr_resnet50)")
    p.add_argument("--weights", default=None, help="start from these weights (default: the model's published ones)")
    p.add_argument("--random-init", action="store_true", help="start from random weights")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64, help="crops per step")
    p.add_argument("--videos-per-batch", type=int, default=4, help="frame pairs per step, one per video")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--min-score", type=float, default=None, help="drop detections scored below this")
    p.add_argument("--min-height", type=float, default=0.0, help="drop boxes lower than this (pixels)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    import math

    from isr_reid import load_model
    from isr_reid.train import train_isr

    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)
    result = train_isr(
        model, args.videos, max_steps=args.steps, batch_size=args.batch_size,
        videos_per_batch=args.videos_per_batch, lr=args.lr, min_score=args.min_score, min_size=args.min_height,
        output_dir=args.output, resume=args.resume, device=args.device,
    )
    last = result.history[-1]
    print(f"trained {result.steps} steps: last loss {last['loss']:.4f}, "
          f"positive pairs {last.get('pairs', math.nan):.0f}, saved to {result.output_dir}")

    # The folder is a saved model: it loads like any zoo model, with its config (input size etc.).
    trained = load_model(args.model, weights=args.output, device=args.device)
    print(f"reloaded {trained.cfg.name} from {args.output}: input {trained.cfg.input_size}, {trained.embed_dim}-d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
