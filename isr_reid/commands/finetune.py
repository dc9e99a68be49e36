"""isr-reid finetune: supervised fine-tuning on a labeled ReID dataset."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, add_training_run_arguments, model_from_args

HELP = "fine-tune a model on a labeled ReID dataset (CE + triplet, BNNeck, PxK sampler), then evaluate"
DESCRIPTION = """Fine-tune with the "Bag of Tricks" recipe (Luo et al., CVPRW 2019): a PxK identity sampler,
cross-entropy with label smoothing on the BNNeck feature, batch-hard triplet loss before it, Adam with
warm-up and cosine decay. The start is --weights, else (--init auto, the default) the model's published
weights when it has any, else a random init seeded by --seed. At the end the query/gallery split is
evaluated (rank-1, mAP). The output folder works as --weights OUTPUT in any command.
Datasets: market1501, msmt17, dukemtmc, cuhk03, folder (<root>/{train,query,gallery}/<pid>/<file>), mot."""
PARAM_FLAGS = {"triplet_margin": "--margin", "output_dir": "--output"}  # library names in errors -> flags
EXAMPLES = """\
  isr-reid finetune --model isr_swin_base --dataset market1501 --root data/Market-1501-v15.09.15 --output runs/ft
  isr-reid finetune --model isr_resnet50 --weights runs/isr --dataset folder --root my_set --output runs/ft2"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, default_init="auto")
    p.add_argument("--dataset", required=True, help="dataset name: market1501, msmt17, dukemtmc, cuhk03, folder, mot")
    p.add_argument("--root", required=True, help="the dataset's root folder")
    p.add_argument("--output", required=True, help="output folder (checkpoint.pt, the final model)")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--ids-per-batch", type=int, default=16, help="P of the PxK sampler")
    p.add_argument("--instances", type=int, default=4, help="K of the PxK sampler")
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--margin", type=float, default=0.3, help="triplet margin")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    add_training_run_arguments(p, checkpoint_every=500, log_every=50)


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys

    import torch

    from ..data.datasets import load_dataset
    from ..train.finetune import finetune

    dataset = load_dataset(args.dataset, args.root)
    if not dataset.train:
        raise ValueError(f"dataset {args.dataset!r} at {args.root} has no training images")
    torch.manual_seed(args.seed)
    model = model_from_args(args, device="cpu")
    result = finetune(
        model,
        dataset.train,
        max_steps=args.max_steps,
        ids_per_batch=args.ids_per_batch,
        instances=args.instances,
        lr=args.lr,
        label_smoothing=args.label_smoothing,
        triplet_margin=args.margin,
        eval_dataset=None if args.no_eval or not dataset.query else dataset,
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
    if os.environ.get("RANK", "0") != "0":
        return 0
    print(f"fine-tuned {result.steps} steps; model written to {args.output}")
    if result.metrics is not None:
        m = result.metrics
        print(json.dumps({"rank1": float(m.cmc[0]), "rank5": float(m.cmc[min(4, len(m.cmc) - 1)]),
                          "mAP": float(m.mAP), "mINP": float(m.mINP), "num_valid": int(m.num_valid)}))
    return 0
