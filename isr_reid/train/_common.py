"""Pieces shared by the trainers: distributed setup, LR schedule, crop loading, checkpoints, progress."""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
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


RESUME_MAY_CHANGE = frozenset({"max_steps"})
"""Run options that may differ on resume. Changing ``max_steps`` extends or shortens the run: the
cosine schedule is recomputed for the new total (warm-up kept), so the LR after the resume step is not
that of the original run. Run control (checkpoint_every, log_every, progress, device, amp) is not part
of the run config at all."""

RESUME_INHERITS = frozenset({"warmup_steps"})
"""Options whose ``None`` (the default) means "as in the checkpoint" when resuming."""


def _plain(value: Any) -> Any:
    # tuples and lists compare equal once written to a checkpoint (lists) and read back
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def check_resume_config(
    ckpt_path: Path,
    saved: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    *,
    may_change: Collection[str] = RESUME_MAY_CHANGE,
    inherits: Collection[str] = RESUME_INHERITS,
) -> list[str]:
    """Raise ValueError naming every run option that differs from the checkpoint's (both values); return the unchecked ones.

    Options in ``may_change`` may differ; an option in ``inherits`` set to None takes the checkpoint's
    value. Options the checkpoint does not record (an older version wrote it) are returned, unchecked.
    """
    saved = saved or {}
    diffs, unchecked = [], []
    for key, value in current.items():
        if key in may_change or (key in inherits and value is None):
            continue
        if key not in saved:
            unchecked.append(key)
        elif _plain(saved[key]) != _plain(value):
            diffs.append(f"{key}: checkpoint {_plain(saved[key])!r}, this run {_plain(value)!r}")
    if diffs:
        raise ValueError(
            f"cannot resume from {ckpt_path}: {len(diffs)} run option(s) differ from the checkpoint's: "
            + "; ".join(diffs)
            + ". Resume with the checkpoint's values, or train into a new output folder"
            + f" (options that may change on resume: {', '.join(sorted(may_change)) or 'none'})."
        )
    return unchecked


def resume_checkpoint(
    ckpt_path: Path | None,
    config: Mapping[str, Any],
    *,
    max_steps: int,
    is_main: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """The checkpoint to resume from, after checking its run config (:func:`check_resume_config`); None if there is none.

    Says what it does: "resuming from step N of M", or that no checkpoint exists and training starts at
    step 0 (through ``log``, else as a warning), on the main rank.
    """

    def say(msg: str, warn: bool = False) -> None:
        if not is_main:
            return
        if log is not None:
            log(msg)
        elif warn:
            warnings.warn(msg, stacklevel=3)

    if ckpt_path is None or not ckpt_path.is_file():
        say(f"resume: no checkpoint at {ckpt_path}; starting from step 0", warn=True)
        return None
    state = load_checkpoint(ckpt_path)
    unchecked = check_resume_config(ckpt_path, state.get("config"), config)
    step = int(state["step"])
    if step > max_steps:
        raise ValueError(f"cannot resume from {ckpt_path}: it is at step {step}, past max_steps {max_steps}")
    if unchecked:
        say(f"resume: {ckpt_path} does not record {', '.join(unchecked)} (an older version wrote it); "
            "these options are not checked against this run", warn=True)
    say(f"resuming from step {step} of {max_steps} ({ckpt_path})")
    return state


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


@dataclass
class Optimization:
    """Adam, the warm-up + cosine LR schedule, and the fp16 gradient scaler of one training run."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    warmup_steps: int

    def step(self, loss: torch.Tensor) -> None:
        """Backward, optimizer step through the scaler, then the schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def make_optimization(
    params: Sequence[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    max_steps: int,
    warmup_steps: int | None,
    use_amp: bool,
    amp_dtype: torch.dtype,
) -> Optimization:
    """Adam over ``params`` with linear warm-up (default: a tenth of the steps) and cosine decay."""
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    warm = max(1, max_steps // 10) if warmup_steps is None else warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, max_steps, warm))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return Optimization(optimizer, scheduler, scaler, warm)


def all_finite(value: torch.Tensor, world_size: int) -> bool:
    """Whether ``value`` is finite on every rank (all ranks agree, so none waits in a collective)."""
    flag = torch.tensor([1.0 if bool(torch.isfinite(value).all()) else 0.0], device=value.device)
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def gather_rank_states(state: dict[str, Any], world_size: int) -> dict[str, Any]:
    """Merge every rank's ``{rank: state}`` dict (sampler and RNG states) so rank 0 can checkpoint them all."""
    if world_size == 1:
        return state
    import torch.distributed as dist

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, state)
    return {k: v for g in gathered for k, v in g.items()}
