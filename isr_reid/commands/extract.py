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

Example:
  isr-reid extract --model isr_swin_base crops/ -o features.npz
"""

LIST_SUFFIXES = (".txt", ".lst")


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


def run(args: argparse.Namespace) -> int:
    from ..data.extract import extract_features
    from ..data.features import save_features

    model = model_from_args(args)
    result = extract_features(
        model,
        expand_cli_inputs(args.inputs),
        batch_size=args.batch_size,
        flip=args.flip,
        progress=False if args.no_progress else None,
        num_workers=args.workers,
        skip_bad=args.skip_bad,
    )
    save_features(
        args.output,
        result.embeddings,
        result.labels,
        model=model.cfg.name,
        config=model.cfg.to_dict(),
        skipped=[{"index": s.index, "path": s.label, "reason": s.reason} for s in result.skipped],
    )
    print(f"wrote {len(result.embeddings)} embeddings ({model.cfg.embed_dim}-d) to {args.output}")
    for s in result.skipped:
        print(f"skipped {s.label}: {s.reason}")
    return 0
