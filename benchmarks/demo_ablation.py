"""Where the demo's gain comes from: the demo (``isr_reid.demo.run_demo``) with one training option changed.

    python benchmarks/demo_ablation.py --variants isr bn_only no_jitter uniform --json out.json

Variants (everything else as in ``isr-reid demo``: same world, same seed, same steps):

- ``isr``: the demo as shipped;
- ``bn_only``: lr 1e-12, so that only the BatchNorm running statistics adapt to the synthetic world
  (train-mode forward passes on the videos): is the gain learning, or normalisation statistics?
- ``no_jitter``: no photometric jitter (colour_jitter 0): the pairs alone, without augmentation;
- ``uniform``: every mined pair weighted 1 (ISR's reliability weighting off).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

VARIANTS = {
    "isr": {},
    "bn_only": {"lr": 1e-12},
    "no_jitter": {"color_jitter": 0.0},
    "uniform": {"reliability": "uniform"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--output", default="demo_ablation", help="folder for each variant's demo output")
    p.add_argument("--train-steps", type=int, default=None, help="default: the demo's")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    from isr_reid.demo import DEFAULT_TRAIN_STEPS, run_demo

    steps = DEFAULT_TRAIN_STEPS if args.train_steps is None else args.train_steps
    rows = []
    for name in args.variants:
        t0 = time.perf_counter()
        res = run_demo(Path(args.output) / name, train_steps=steps, train_options=VARIANTS[name], progress=False,
                       log=lambda *a: None)
        rows.append({"variant": name, "options": VARIANTS[name], "model": res.model, "before": res.before, "after": res.after,
                     "mining": res.mining, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{name}: done in {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"model {rows[0]['model']}, {steps} ISR steps; python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| variant | rank-1 before -> after | mAP before -> after | mining precision before -> after | seconds |")
    print("|---|---|---|---|---|")
    for r in rows:
        b, a, m = r["before"], r["after"], r["mining"]
        print(f"| {r['variant']} | {b['rank1']:.1%} -> {a['rank1']:.1%} | {b['mAP']:.1%} -> {a['mAP']:.1%} | "
              f"{m['before']:.1%} -> {m['after']:.1%} | {r['seconds']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
