"""Which path an op takes (Triton or PyTorch), and lazily built Triton kernels.

``ISR_REID_KERNELS=auto|triton|torch`` is read at every call, and :func:`kernel_backend`
overrides it inside a block. Triton is imported only when a Triton path runs, and kernels are
``triton.jit``-ed on first use, once per interpreter mode, because ``triton.jit`` decides at
decoration time whether to compile or to interpret (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

__all__ = ["BACKENDS", "current_backend", "kernel_backend"]

BACKENDS = ("auto", "triton", "torch")
_ENV = "ISR_REID_KERNELS"
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("isr_reid_kernel_backend", default=None)
_jitted: dict[tuple[Callable[..., Any], bool], Any] = {}
# found, not imported: a constant that torch.compile can trace through
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _check(name: str, source: str) -> str:
    value = name.strip().lower()
    if value not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}, got {name!r}")
    return value


def current_backend() -> str:
    """The backend in force: the innermost :func:`kernel_backend`, else ``$ISR_REID_KERNELS``, else "auto"."""
    name = _override.get()
    if name is not None:
        return name
    return _check(os.environ.get(_ENV, "auto") or "auto", f"${_ENV}")


@contextlib.contextmanager
def kernel_backend(name: str) -> Iterator[None]:
    """Use backend ``name`` ("auto", "triton" or "torch") inside the block, whatever ``$ISR_REID_KERNELS`` says."""
    token = _override.set(_check(name, "kernel_backend(name)"))
    try:
        yield
    finally:
        _override.reset(token)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_runs_on(t: torch.Tensor) -> bool:
    """Whether a Triton kernel can run on ``t``'s device: CUDA, or anything under TRITON_INTERPRET=1."""
    return t.device.type == "cuda" or _interpreting()


def _use_triton(t: torch.Tensor, op: str) -> bool:
    """The path decision of the public wrappers: True to call the custom op, False for plain PyTorch."""
    backend = current_backend()
    if backend == "torch":
        return False
    if backend == "auto":
        return t.device.type == "cuda" and _HAS_TRITON
    if not _HAS_TRITON:
        raise RuntimeError(f"{op}: ${_ENV}=triton but triton is not installed")
    if not _triton_runs_on(t):
        raise RuntimeError(
            f"{op}: ${_ENV}=triton on a {t.device.type} tensor needs TRITON_INTERPRET=1 "
            "(set before triton is imported) or a CUDA tensor"
        )
    return True


def _jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit(fn)``, built once per interpreter mode (interpreted kernels run on CPU tensors)."""
    key = (fn, _interpreting())
    kernel = _jitted.get(key)
    if kernel is None:
        import triton

        kernel = _jitted[key] = triton.jit(fn)
    return kernel


def _on_gpu() -> bool:
    """A real (compiled) Triton run, where several autotune configs are allowed."""
    return not _interpreting() and torch.cuda.is_available()
