"""Fine-tune a pretrained model on your own labeled person crops, and measure it before and after.

Shows: the generic folder dataset (``load_dataset("folder", root)``: ``<root>/train/<pid>/<cam>_<any>.jpg``
plus ``query/`` and ``gallery/`` in the same layout; the camera is the file name's part before its
first underscore), ``finetune`` (the "Bag of Tricks" recipe of Luo et al., CVPRW 2019: PxK batches,
label-smoothed cross-entropy after the BNNeck + batch-hard triplet before it), ``evaluate_model``
(rank-1 / mAP on query vs gallery), and loading the result (``load_model(NAME, weights=OUTPUT)``).

    python examples/finetune_folder.py my_people/ -o finetuned --model isr_resnet50 --steps 2000
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fine-tune a model on a labeled folder of person crops.")
    p.add_argument("root", help="dataset folder with train/, query/ and gallery/, each <pid>/<cam>_<any>.<ext>")
    p.add_argument("--output", "-o", required=True, help="output folder (checkpoint.pt, model.safetensors, config.json)")
    p.add_argument("--model", default="isr_resnet50", help="zoo name to fine-tune (default isr_resnet50)")
    p.add_argument("--weights", default=None, help="start from these weights (default: the model's published ones)")
    p.add_argument("--random-init", action="store_true", help="start from random weights")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--ids-per-batch", type=int, default=16, help="P: identities per batch")
    p.add_argument("--instances", type=int, default=4, help="K: images per identity in a batch")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--json", default=None, help="write the metrics before and after as JSON here")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    from pathlib import Path

    from isr_reid import load_model
    from isr_reid.data.datasets import load_dataset
    from isr_reid.train import evaluate_model, finetune

    data = load_dataset("folder", args.root)
    print(data.summary())
    if not data.train:
        raise SystemExit(f"{args.root}: no train/ images to fine-tune on")
    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)

    before = evaluate_model(model, data)
    result = finetune(model, data.train, max_steps=args.steps, ids_per_batch=args.ids_per_batch,
                      instances=args.instances, lr=args.lr, eval_dataset=data, output_dir=args.output,
                      device=args.device)
    after = result.metrics
    metrics = {
        "before": {"rank1": float(before.cmc[0]), "mAP": float(before.mAP)},
        "after": {"rank1": float(after.cmc[0]), "mAP": float(after.mAP)},
        "steps": result.steps,
    }
    for when in ("before", "after"):
        print(f"{when:6s} rank-1 {metrics[when]['rank1']:.2%}  mAP {metrics[when]['mAP']:.2%}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    tuned = load_model(args.model, weights=args.output, device=args.device)
    print(f"saved to {args.output}: reload with load_model({tuned.cfg.name!r}, weights={str(args.output)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
