"""Pieces shared by the trainers: distributed setup, LR schedule, crop loading, checkpoints, progress."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | torch.device | None) -> DistInfo:
    """Read torchrun's environment; start the process group (NCCL on CUDA, else gloo) when world size > 1."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        dev = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistInfo(rank, world, local_rank, dev)


def warmup_cosine(step: int, total: int, warmup: int, min_factor: float = 0.01) -> float:
    """The LR factor at ``step``: linear warm-up from 1/warmup to 1, then cosine down to ``min_factor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))


def load_crops(
    crops: Sequence[Any], size: tuple[int, int], cache: dict[str, Any] | None = None
) -> torch.Tensor:
    """Crops (objects with ``path`` and ``box``) -> uint8 (N, 3, H, W), squash-resized to ``size``; frames decoded once."""
    from ..data.images import load_image, resize_image
    from ..data.video import crop_image

    frames: dict[str, Any] = {} if cache is None else cache
    out = np.empty((len(crops), size[0], size[1], 3), dtype=np.uint8)
    for i, c in enumerate(crops):
        if c.path not in frames:
            try:
                frames[c.path] = load_image(c.path)
            except (OSError, ValueError) as e:
                raise ValueError(f"cannot read image {c.path}: {e}") from e
        try:
            img = crop_image(frames[c.path], c.box)
        except ValueError as e:
            raise ValueError(f"{c.path}: {e}") from e
        out[i] = resize_image(np.asarray(img), size)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary name, renamed into place."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e


def show_progress(progress: bool | None, is_main: bool) -> bool:
    """A progress bar on the main rank when asked, or by default when stderr is a terminal."""
    if not is_main:
        return False
    return bool(progress) if progress is not None else sys.stderr.isatty()


def amp_setup(amp: bool | None, device: torch.device) -> tuple[bool, torch.dtype]:
    """Whether to autocast, and the dtype (bf16 where supported, else fp16 with a grad scaler)."""
    use = device.type == "cuda" if amp is None else bool(amp)
    if use and device.type != "cuda":
        raise ValueError("amp=True needs a CUDA device")
    dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
    return use, dtype


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") else model
