"""isr-reid train: ISR on unlabeled videos."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, add_training_run_arguments, model_from_args

HELP = "train a model with ISR on unlabeled videos (MOT folders, crop folders or crop lists)"
DESCRIPTION = """Train with ISR (Dou et al., ICCV 2023): persons in two frames of one video are matched by a
maximum-weight bipartite matching of their embeddings; matched pairs are positives of a
reliability-weighted contrastive loss.

--videos takes (a) a folder of MOTChallenge sequences (seqinfo.ini, img1/, det/det.txt), (b) a folder
<root>/<video>/<frame>/<crop>.jpg, or (c) a .csv/.json crop list (video, frame, path[, x, y, w, h, score]).
The output folder holds checkpoint.pt (every --checkpoint-every steps), train_history.json and the
final model (model.safetensors + config.json): use it with --weights OUTPUT in any command, or
load_model(NAME, weights=OUTPUT) in Python. The start is --weights, else (--init auto, the default) the
model's published weights when it has any, else a random init seeded by --seed.
Multi-GPU: torchrun --nproc-per-node N -m isr_reid.cli train ...  (each process its own videos)."""
PARAM_FLAGS = {"min_size": "--min-height", "output_dir": "--output"}  # library names in errors -> flags
EXAMPLES = """\
  isr-reid train --model isr_resnet18 --videos MOT17/train --output runs/isr --max-steps 2000
  isr-reid train --model isr_swin_base --init pretrained --videos crops.csv --output runs/swin --resume"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, default_init="auto")
    p.add_argument("--videos", required=True, help="MOT folder, crop folder, or .csv/.json crop list")
    p.add_argument("--output", required=True, help="output folder (checkpoints and the final model)")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64, help="crops per step (upper bound)")
    p.add_argument("--videos-per-batch", type=int, default=4, help="frame pairs per step, each from a different video")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--temperature", type=float, default=0.07)
    p.add_argument("--delta", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"), help="frame gap range, in frame steps")
    p.add_argument("--reliability", choices=("margin", "uniform"), default="margin", help="pair weights ('uniform' is the ablation)")
    p.add_argument("--momentum", type=float, default=None, help="mine pairs with a momentum encoder (e.g. 0.999)")
    p.add_argument("--color-jitter", type=float, default=0.0,
                   help="per-crop random channel gain and gamma of this strength (e.g. 0.3; default off)")
    p.add_argument("--min-score", type=float, default=None, help="drop detections below this score")
    p.add_argument("--min-height", type=float, default=0.0, help="drop crops shorter than this (pixels)")
    add_training_run_arguments(p, checkpoint_every=100, log_every=10)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    import torch

    from ..train import train_isr

    torch.manual_seed(args.seed)  # a reproducible random init (and the same on every rank)
    model = model_from_args(args, device="cpu")
    result = train_isr(
        model,
        args.videos,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        videos_per_batch=args.videos_per_batch,
        lr=args.lr,
        temperature=args.temperature,
        delta=tuple(args.delta),
        reliability=args.reliability,
        momentum=args.momentum,
        color_jitter=args.color_jitter,
        min_score=args.min_score,
        min_size=args.min_height,
        output_dir=args.output,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        seed=args.seed,
        amp=False if args.no_amp else None,
        device=args.device,
        progress=False if args.no_progress else None,
        log_every=args.log_every,
        log=lambda s: print(s, file=sys.stderr),
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one summary
        return 0
    last = result.history[-1] if result.history else {}
    print(f"trained {result.steps} steps; final loss {last.get('loss', float('nan')):.4f}; model written to {args.output}")
    return 0
