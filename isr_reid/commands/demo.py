"""isr-reid demo: ISR training on unlabeled video, offline, on a synthetic multi-camera world."""

from __future__ import annotations

import argparse

HELP = "ISR training that you can see work, offline: synthetic cameras -> ImageNet start -> ISR on unlabeled video -> metrics + picture"
DESCRIPTION = """The main job, on a CPU with no network, in a few minutes:

  1. draw a synthetic multi-camera world: unlabeled videos (several people per frame sharing
     one scene, detector boxes with jitter, misses and false boxes) and, for testing, other
     people seen by every camera (own scene, lighting, viewpoint, scale and occluders);
  2. embed the test people with isr_mobilenetv2 (ImageNet weights from the 'demo' extra) and
     print cross-camera retrieval (rank-1, mAP) and how well ISR's matching pairs the video;
  3. train with ISR on the unlabeled videos (pairs mined across frames, no identity labels);
  4. print the metrics again, and save a picture of the same queries before and after training
     (green border = same person, red = another person).

Without the 'demo' extra (pip install 'isr-reid[demo]') it says so and runs a random-init
pipeline check with isr_resnet18 instead, labelled as such."""
# Printed at the end of --help by isr_reid.cli (every command's help ends with its examples).
EXAMPLES = """\
  isr-reid demo --output demo_output
  isr-reid demo --train-steps 40 --seed 1 --no-progress"""


# isr_reid.demo.DEFAULT_TRAIN_STEPS; repeated here so that `isr-reid --help` imports no torch (a test checks they agree)
DEFAULT_TRAIN_STEPS = 150


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", default="demo_output", help="folder for the data, picture, features and metrics")
    p.add_argument("--train-steps", type=int, default=DEFAULT_TRAIN_STEPS,
                   help=f"ISR training steps (default {DEFAULT_TRAIN_STEPS}; 0 skips training)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the model's head and training")
    p.add_argument("--pipeline-check", action="store_true",
                   help="run the random-init pipeline check (isr_resnet18) even when the 'demo' extra is installed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..demo import PIPELINE_CHECK_MODEL, run_demo

    if args.train_steps < 0:
        raise SystemExit(f"isr-reid demo: --train-steps must be >= 0, got {args.train_steps}")
    run_demo(args.output, train_steps=args.train_steps, seed=args.seed,
             model=PIPELINE_CHECK_MODEL if args.pipeline_check else None,
             progress=False if args.no_progress else None)
    return 0
