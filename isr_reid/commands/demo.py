"""isr-reid demo: the whole pipeline offline on synthetic data."""

from __future__ import annotations

import argparse

HELP = "run the whole pipeline offline on synthetic pedestrians: train with ISR, search, print metrics, save a picture"
DESCRIPTION = """The main job, on a CPU with no network, in a few minutes:

  1. draw a synthetic multi-camera pedestrian set (people with distinct clothing walking
     across frames, seen by several cameras with different lighting), plus unlabeled videos
     of other people;
  2. embed query and gallery crops with the small model isr_resnet18 (random init) and measure
     cross-camera retrieval (rank-1, mAP);
  3. train the model with ISR on the unlabeled videos (pairs mined across frames, no labels);
  4. measure again, and save a picture of queries with their top-ranked results
     (green border = same person, red = another person).
"""
EXAMPLES = """\
  isr-reid demo --output demo_output"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", default="demo_output", help="folder for the data, picture and metrics")
    p.add_argument("--train-steps", type=int, default=80, help="ISR training steps (0 skips training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    run_demo(args.output, train_steps=args.train_steps, seed=args.seed, progress=False if args.no_progress else None)
    return 0
