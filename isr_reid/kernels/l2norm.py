"""The part of a head after its matrix product: add the Linear's bias, then L2-normalise rows.

Registered as ``isr_reid::l2_normalize``: one read of (…, D), float32 result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import triton_op, wrap_triton

from ._backend import _jit, _triton_runs_on, _use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch path needs neither
    triton = tl = None

__all__ = ["l2_normalize", "l2_normalize_torch"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_NORM_EPS = 1e-12  # F.normalize's floor on the norm


def _check_inputs(x: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() < 1 or not x.is_floating_point():
        raise ValueError(f"l2_normalize: x must be a float tensor (..., D), got {x.dtype} shape {tuple(x.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[-1],):
        raise ValueError(f"l2_normalize: bias must have shape ({x.shape[-1]},), got {tuple(bias.shape)}")


def l2_normalize_torch(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch path of :func:`l2_normalize` (float32 result; float64 for float64 input)."""
    _check_inputs(x, bias)
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if bias is not None:
        x = x + bias.to(x.dtype)
    return F.normalize(x, dim=-1, eps=_NORM_EPS)


def _l2_bias_kernel(x_ptr, bias_ptr, out_ptr, D, stride_row, norm_eps, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    # One program per row: the norm in a first sweep, the scaled row in a second (rows are short).
    r = tl.program_id(0).to(tl.int64)
    sq = tl.zeros([BLOCK], dtype=tl.float32)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + r * stride_row + offs, mask=offs < D, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(bias_ptr + offs, mask=offs < D, other=0.0).to(tl.float32)
        sq += v * v
    inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(sq, axis=0)), norm_eps)
    for d0 in range(0, D, BLOCK):
        offs = d0 + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + r * stride_row + offs, mask=offs < D, other=0.0).to(tl.float32)
        if HAS_BIAS:
            v += tl.load(bias_ptr + offs, mask=offs < D, other=0.0).to(tl.float32)
        tl.store(out_ptr + r * D + offs, v * inv, mask=offs < D)


def _launch(x: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
    """Run the Triton kernel on ``x`` into ``out`` (same shape, float32; tests pass a NaN-filled ``out``)."""
    d = x.shape[-1]
    rows = x.reshape(-1, d)
    if d > 1 and rows.stride(1) != 1:
        rows = rows.contiguous()
    block = min(triton.next_power_of_2(d), 4096)
    wrap_triton(_jit(_l2_bias_kernel))[(rows.shape[0],)](
        rows, bias if bias is not None else rows, out, d, rows.stride(0), _NORM_EPS,
        HAS_BIAS=bias is not None, BLOCK=block,
    )  # fmt: skip
    return out


@triton_op("isr_reid::l2_normalize", mutates_args=())
def _l2_normalize_op(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # The device check lives here, inside the op, so that torch.compile/export trace the right branch.
    if triton is not None and x.dtype in _KERNEL_DTYPES and x.numel() > 0 and _triton_runs_on(x):
        return _launch(x, bias, torch.empty(x.shape, dtype=torch.float32, device=x.device))
    return l2_normalize_torch(x, bias)


def l2_normalize(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(x + bias) / max(||x + bias||_2, 1e-12) over the last dim, in float32.

    Autograd goes through the PyTorch path (the fused op is for inference).
    """
    _check_inputs(x, bias)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
    if needs_grad or not _use_triton(x, "l2_normalize"):
        return l2_normalize_torch(x, bias)
    return _l2_normalize_op(x, bias)
