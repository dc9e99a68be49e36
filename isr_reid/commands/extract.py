"""isr-reid extract: images -> a features file."""

from __future__ import annotations

import argparse

from ._common import add_model_arguments, model_from_args

HELP = "embed images (a directory, glob, image files or a list file) into a features file"
DESCRIPTION = """Embed person crops and save the embeddings with their input paths.

INPUT can be a directory (its images, recursively, sorted), a quoted glob ('crops/**/*.jpg'), an
image file, or a list file (.txt/.lst: one image path per line; relative paths are relative to the
list file). The output (.npz or .safetensors) holds 'embeddings' (N, D) float32 with unit rows,
the input paths in row order, the model name and config, and the skipped inputs with the reason.
Read it in Python with isr_reid.data.features.load_features(PATH); 'isr-reid search --gallery' and
'isr-reid evaluate --features' take it as it is.

Under torchrun each process embeds a share of the inputs (on GPU LOCAL_RANK when CUDA is
available) and rank 0 writes the whole file, rows in input order:
  torchrun --nproc_per_node 4 -m isr_reid.cli extract --model isr_swin_base crops/ -o features.npz
"""
EXAMPLES = """\
  isr-reid extract --model isr_swin_base crops/ -o features.npz
  isr-reid extract --model isr_resnet18 --init random --input-size 128 64 crops/ -o features.npz"""

LIST_SUFFIXES = (".txt", ".lst")
PARAM_FLAGS = {"num_workers": "--workers"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="directory, glob, image file, or list file")
    p.add_argument("--output", "-o", required=True, help="features file to write (.npz or .safetensors)")
    add_model_arguments(p)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: up to 4)")
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's embedding")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out unreadable images and record them (and why) in the output instead of failing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def expand_cli_inputs(inputs: list[str]) -> list[str]:
    """Replace list files by the paths they hold; keep directories, globs and image files as given."""
    from pathlib import Path

    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            out.extend(str(p if Path(p).is_absolute() else path.parent / p) for p in lines if _is_entry(p))
        else:
            out.append(item)
    return out


def _is_entry(line: str) -> bool:
    return bool(line) and not line.startswith("#")


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size), initialising torch.distributed when launched by torchrun."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def run(args: argparse.Namespace) -> int:
    import os

    import numpy as np

    from ..data.extract import extract_features
    from ..data.features import save_features
    from ..data.images import expand_images

    rank, world = _distributed_rank()
    if world > 1 and args.device is None:
        import torch

        if torch.cuda.is_available():
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    model = model_from_args(args)
    items = expand_images(expand_cli_inputs(args.inputs))
    positions = np.arange(rank, len(items), world)  # this rank's share, by input position
    result = extract_features(
        model,
        [items[i].source for i in positions],
        batch_size=args.batch_size,
        flip=args.flip,
        progress=False if args.no_progress or rank > 0 else None,
        num_workers=args.workers,
        skip_bad=args.skip_bad,
    )
    share = (positions[result.indices], result.embeddings, [(int(positions[s.index]), s.label, s.reason)
                                                             for s in result.skipped])
    if world > 1:
        import torch.distributed as dist

        shares = [None] * world if rank == 0 else None
        dist.gather_object(share, shares, dst=0)
        if rank > 0:
            dist.destroy_process_group()
            return 0
        dist.destroy_process_group()
    else:
        shares = [share]
    order = np.concatenate([s[0] for s in shares])
    embeddings = np.concatenate([s[1] for s in shares])[np.argsort(order, kind="stable")]
    order.sort()
    skipped = sorted(x for s in shares for x in s[2])
    save_features(
        args.output,
        embeddings,
        [items[i].label for i in order],
        model=model.cfg.name,
        config=model.cfg.to_dict(),
        skipped=[{"index": i, "path": label, "reason": reason} for i, label, reason in skipped],
    )
    print(f"wrote {len(embeddings)} embeddings ({model.cfg.embed_dim}-d) to {args.output}")
    for _, label, reason in skipped:
        print(f"skipped {label}: {reason}")
    return 0
