"""The part of ISR's Swin head before its Linear: LayerNorm over channels, then the mean over tokens.

Registered as ``isr_reid::ln_mean_tokens``: one read of the tokens (B, L, C), float32 result.
The Linear and the L2 after it are :func:`torch.nn.functional.linear` and
:func:`isr_reid.kernels.l2_normalize` (with the Linear's bias fused into the L2).
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

__all__ = ["ln_mean_tokens", "ln_mean_tokens_torch"]

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_KERNEL_C = 8192  # one row of channels per tile


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"ln_mean_tokens: x must be tokens (B, L, C), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"ln_mean_tokens: x must be a float tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"ln_mean_tokens: x has an empty dimension, shape {tuple(x.shape)}")
    c = x.shape[2]
    for name, t in (("weight", weight), ("bias", bias)):
        if tuple(t.shape) != (c,):
            raise ValueError(f"ln_mean_tokens: {name} must have shape ({c},), got {tuple(t.shape)}")


def ln_mean_tokens_torch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PyTorch path of :func:`ln_mean_tokens` (float32 result; float64 for float64 input)."""
    _check_inputs(x, weight, bias)
    acc = torch.promote_types(x.dtype, torch.float32)
    # the affine inside layer_norm: on CPU, layer_norm without weight is slower than with it
    return F.layer_norm(x.to(acc), (x.shape[-1],), weight.to(acc), bias.to(acc), eps).mean(1)


def _ln_mean_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    L, C, stride_b, stride_l, stride_c, inv_c, inv_l, eps,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # One program per image: BLOCK_L tokens at a time, all channels in one tile; float32 throughout.
    b = tl.program_id(0)
    offs_c = tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    base = x_ptr + b.to(tl.int64) * stride_b + offs_c[None, :] * stride_c
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for l0 in range(0, L, BLOCK_L):
        offs_l = l0 + tl.arange(0, BLOCK_L)
        mask = (offs_l[:, None] < L) & mask_c[None, :]
        v = tl.load(base + offs_l[:, None].to(tl.int64) * stride_l, mask=mask, other=0.0).to(tl.float32)
        mu = tl.sum(v, axis=1) * inv_c
        d = tl.where(mask, v - mu[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) * inv_c + eps)
        acc += tl.sum(d * rstd[:, None], axis=0)
    w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    bias = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * C + offs_c, acc * inv_l * w + bias, mask=mask_c)


def _launch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out: torch.Tensor) -> torch.Tensor:
    """Run the Triton kernel on tokens ``x`` into ``out`` (B, C) float32 (tests pass a NaN-filled ``out``)."""
    batch, length, c = x.shape
    block_c = triton.next_power_of_2(c)
    block_l = max(1, min(16, 8192 // block_c))
    wrap_triton(_jit(_ln_mean_kernel))[(batch,)](
        x, weight, bias, out, length, c, x.stride(0), x.stride(1), x.stride(2), 1.0 / c, 1.0 / length, eps,
        BLOCK_L=block_l, BLOCK_C=block_c, num_warps=8 if block_c >= 1024 else 4,
    )  # fmt: skip
    return out


@triton_op("isr_reid::ln_mean_tokens", mutates_args=())
def _ln_mean_tokens_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    # The device check lives here, inside the op, so that torch.compile/export trace the right branch.
    if triton is not None and x.dtype in _KERNEL_DTYPES and x.shape[2] <= _MAX_KERNEL_C and _triton_runs_on(x):
        out = torch.empty((x.shape[0], x.shape[2]), dtype=torch.float32, device=x.device)
        return _launch(x, weight, bias, eps, out)
    return ln_mean_tokens_torch(x, weight, bias, eps)


def ln_mean_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the channels of tokens (B,L,C) (Ba et al., 2016), then the mean over tokens: (B,C) float32.

    Autograd goes through the PyTorch path (the fused op is for inference).
    """
    _check_inputs(x, weight, bias)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias))
    if needs_grad or not _use_triton(x, "ln_mean_tokens"):
        return ln_mean_tokens_torch(x, weight, bias, eps)
    return _ln_mean_tokens_op(x, weight, bias, float(eps))
