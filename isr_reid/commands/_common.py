"""Arguments shared by the commands that load a model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models.base import ReIDModel

__all__ = ["add_model_arguments", "add_training_run_arguments", "model_from_args"]


def add_model_arguments(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    """--model, --weights, --random-init, --input-size, --device."""
    g = p.add_argument_group("model")
    g.add_argument("--model", "-m", required=default_model is None, default=default_model,
                   help="zoo name (see 'isr-reid models')" + (f"; default {default_model}" if default_model else ""))
    g.add_argument("--weights", "-w", default=None,
                   help="weights: a .safetensors file, a saved model directory, an upstream .pth checkpoint, "
                        "or hf-hub:owner/repo[@rev]; default: the model's published weights")
    g.add_argument("--random-init", action="store_true",
                   help="use randomly initialised weights (for trying the pipeline; embeddings are meaningless)")
    g.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="override the model's input size")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def model_from_args(args: argparse.Namespace) -> ReIDModel:
    """Load the model that ``add_model_arguments`` described."""
    from ..zoo import load_model

    if args.random_init and args.weights:
        raise ValueError("--random-init and --weights exclude each other")
    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    return load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device, **overrides)


def add_training_run_arguments(p: argparse.ArgumentParser, *, checkpoint_every: int, log_every: int) -> None:
    """Run control shared by the training commands: input size, checkpoints, resume, seed, device, AMP, logging."""
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA")
    p.add_argument("--log-every", type=int, default=log_every)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
