"""The CNN/ViT embedding head in one read of the feature map: pool (mean or GeM) -> per-channel affine -> L2.

Registered as the custom op ``isr_reid::pool_bn_l2`` (``torch.library.triton_op``) with autograd
for x, p, scale and shift. The op body runs the Triton kernel where Triton can run (CUDA, or any
device under ``TRITON_INTERPRET=1``) on float16/bfloat16/float32 input, else the PyTorch path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.library import triton_op, wrap_triton

from ._backend import _jit, _on_gpu, _triton_runs_on, _use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch path needs neither
    triton = tl = None

__all__ = ["pool_bn_l2", "pool_bn_l2_torch"]

_MODES = ("mean", "gem")
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_NORM_EPS = 1e-12  # F.normalize's floor on the norm


def _check_inputs(
    x: torch.Tensor,
    mode: str,
    p: torch.Tensor | float | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
) -> int:
    if x.dim() not in (3, 4):
        raise ValueError(f"pool_bn_l2: x must be (B,C,H,W) or tokens (B,L,C), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"pool_bn_l2: x must be a float tensor, got {x.dtype}")
    if mode not in _MODES:
        raise ValueError(f"pool_bn_l2: mode must be 'mean' or 'gem', got {mode!r}")
    if mode == "gem" and p is None:
        raise ValueError("pool_bn_l2: mode='gem' needs p")
    if isinstance(p, torch.Tensor) and p.numel() != 1:
        raise ValueError(f"pool_bn_l2: p must be a scalar, got shape {tuple(p.shape)}")
    c = x.shape[1] if x.dim() == 4 else x.shape[2]
    if x.numel() == 0:
        raise ValueError(f"pool_bn_l2: x has an empty dimension, shape {tuple(x.shape)}")
    for name, t in (("scale", scale), ("shift", shift)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"pool_bn_l2: {name} must have shape ({c},) for {c} channels, got {tuple(t.shape)}")
    return c


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    # float32 accumulation for half types; float64 stays float64 so that gradcheck is meaningful
    return torch.promote_types(x.dtype, torch.float32)


def _pool_torch(x: torch.Tensor, mode: str, p: torch.Tensor | float | None, eps: float) -> torch.Tensor:
    """Mean or GeM pooling to (B, C) in the accumulation dtype, with as few full-size temporaries as possible."""
    acc = _acc_dtype(x)
    grad = torch.is_grad_enabled() and (x.requires_grad or (isinstance(p, torch.Tensor) and p.requires_grad))
    if mode == "gem":
        v = x.to(acc)  # keeps x's memory format; a copy only for half types
        v = v.clamp_(min=eps) if v is not x and not grad else v.clamp(min=eps)
        if grad:
            x = v.pow(p.to(acc) if isinstance(p, torch.Tensor) else float(p))
        elif isinstance(p, torch.Tensor):
            # in place, and exp(p log v) rather than pow with a tensor exponent: ~3x faster on CPU
            x = v.log_().mul_(p.to(acc)).exp_()
        else:
            x = v.pow_(float(p))
    # a reduction over one contiguous axis beats one over (H, W) on CPU, so flatten where that is a view
    kw = {} if x.dtype == acc else {"dtype": acc}  # half types: accumulate in float32 without a copy
    if x.dim() == 3:
        pooled = x.mean(1, **kw)
    elif x.is_contiguous():
        pooled = x.flatten(2).mean(2, **kw)
    else:
        pooled = x.mean((2, 3), **kw)
    if mode == "gem":
        inv_p = 1.0 / (p.to(acc) if isinstance(p, torch.Tensor) else float(p))
        pooled = pooled.pow(inv_p)
    return pooled


def pool_bn_l2_torch(
    x: torch.Tensor,
    *,
    mode: str = "mean",
    p: torch.Tensor | float | None = None,
    eps: float = 1e-6,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """PyTorch path of :func:`pool_bn_l2` (float32 result; float64 for float64 input)."""
    _check_inputs(x, mode, p, scale, shift)
    return _pool_bn_l2_unchecked(x, mode, p, eps, scale, shift, normalize)


def _pool_bn_l2_unchecked(
    x: torch.Tensor,
    mode: str,
    p: torch.Tensor | float | None,
    eps: float,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    normalize: bool,
) -> torch.Tensor:
    y = _pool_torch(x, mode, p, eps)
    if scale is not None:
        y = y * scale.to(y.dtype)
    if shift is not None:
        y = y + shift.to(y.dtype)
    return F.normalize(y, dim=1, eps=_NORM_EPS) if normalize else y


def _pool_affine_kernel(
    x_ptr, p_ptr, scale_ptr, shift_ptr, y_ptr,
    C, N, stride_b, stride_c, stride_n, inv_n, eps,
    GEM: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # One program: one image, BLOCK_C channels, all N positions; float32 accumulation.
    b = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    rows = x_ptr + b.to(tl.int64) * stride_b + offs_c[:, None].to(tl.int64) * stride_c
    if GEM:
        p = tl.load(p_ptr).to(tl.float32)
    acc = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        mask = mask_c[:, None] & (offs_n[None, :] < N)
        v = tl.load(rows + offs_n[None, :] * stride_n, mask=mask, other=0.0).to(tl.float32)
        if GEM:
            # max(v, eps)^p as exp2(p * log2(.)): one transcendental pair, no libdevice pow
            v = tl.where(mask, tl.exp2(p * tl.log2(tl.maximum(v, eps))), 0.0)
        acc += v
    pooled = tl.sum(acc, axis=1) * inv_n
    if GEM:
        # padded channels pooled to 0: keep log2 finite there (they are never stored)
        pooled = tl.exp2(tl.log2(tl.where(mask_c, pooled, 1.0)) / p)
    if HAS_SCALE:
        pooled = pooled * tl.load(scale_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        pooled = pooled + tl.load(shift_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    tl.store(y_ptr + b * C + offs_c, pooled, mask=mask_c)


def _l2_rows_kernel(y_ptr, C, norm_eps, BLOCK: tl.constexpr):
    # In place: row b of y (B, C) float32 divided by max(||row||, norm_eps).
    row = y_ptr + tl.program_id(0).to(tl.int64) * C
    sq = tl.zeros([BLOCK], dtype=tl.float32)
    for c0 in range(0, C, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        v = tl.load(row + offs, mask=offs < C, other=0.0)
        sq += v * v
    inv = 1.0 / tl.maximum(tl.sqrt(tl.sum(sq, axis=0)), norm_eps)
    for c0 in range(0, C, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        v = tl.load(row + offs, mask=offs < C, other=0.0)
        tl.store(row + offs, v * inv, mask=offs < C)


_autotuned: dict[int, object] = {}


def _pool_kernel():  # -> a launchable kernel whose grid takes meta["BLOCK_C"]
    kernel = _jit(_pool_affine_kernel)
    if not _on_gpu():
        # the interpreter pays per program, so few large ones (C=1000 still spans several)
        return kernel, {"BLOCK_C": 128, "BLOCK_N": 32}
    # several configs only on a real GPU: the interpreter fails on multi-config autotune
    tuned = _autotuned.get(id(kernel))
    if tuned is None:
        configs = [
            triton.Config({"BLOCK_C": bc, "BLOCK_N": bn}, num_warps=w)
            for bc, bn, w in [(32, 64, 4), (64, 32, 4), (64, 64, 4), (32, 128, 4), (64, 128, 8), (128, 32, 4), (128, 64, 8)]
        ]
        tuned = _autotuned[id(kernel)] = triton.autotune(configs, key=["C", "N", "stride_c", "stride_n"])(kernel)
    return tuned, {}


def _feature_strides(x: torch.Tensor) -> tuple[torch.Tensor, int, int, int, int]:
    """x as (B, C, N) strides without copying when H and W merge (NCHW, channels_last, tokens)."""
    if x.dim() == 3:  # tokens (B, L, C)
        return x, x.shape[2], x.shape[1], x.stride(2), x.stride(1)
    _, c, h, w = x.shape
    if x.stride(2) != w * x.stride(3) and h > 1:
        x = x.contiguous()
    return x, c, h * w, x.stride(1), x.stride(3)


def _launch(
    x: torch.Tensor,
    p: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    mode: str,
    eps: float,
    normalize: bool,
    out: torch.Tensor,
) -> torch.Tensor:
    """Run the Triton kernels on ``x`` into ``out`` (B, C) float32 (tests pass a NaN-filled ``out``)."""
    x, c, n, stride_c, stride_n = _feature_strides(x)
    batch = x.shape[0]
    kernel, fixed = _pool_kernel()
    gem = mode == "gem"
    dummy = out  # never read: the constexpr flags switch the loads off
    wrap_triton(kernel)[lambda meta: (batch, triton.cdiv(c, meta["BLOCK_C"]))](
        x, p if gem else dummy, scale if scale is not None else dummy, shift if shift is not None else dummy, out,
        c, n, x.stride(0), stride_c, stride_n, 1.0 / n, eps,
        GEM=gem, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, **fixed,
    )  # fmt: skip
    if normalize:
        block = min(triton.next_power_of_2(c), 4096)
        wrap_triton(_jit(_l2_rows_kernel))[(batch,)](out, c, _NORM_EPS, BLOCK=block)
    return out


@triton_op("isr_reid::pool_bn_l2", mutates_args=())
def _pool_bn_l2_op(
    x: torch.Tensor,
    p: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    mode: str,
    eps: float,
    normalize: bool,
) -> torch.Tensor:
    # The device check lives here, inside the op, so that torch.compile/export trace the right branch.
    if triton is not None and x.dtype in _KERNEL_DTYPES and _triton_runs_on(x):
        c = x.shape[1] if x.dim() == 4 else x.shape[2]
        out = torch.empty((x.shape[0], c), dtype=torch.float32, device=x.device)
        return _launch(x, p, scale, shift, mode, eps, normalize, out)
    return _pool_bn_l2_unchecked(x, mode, p, eps, scale, shift, normalize)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, p, scale, shift, mode, eps, normalize = inputs
    ctx.save_for_backward(x, p, scale, shift, output)
    ctx.mode, ctx.eps, ctx.normalize = mode, eps, normalize


def _backward(ctx, grad_out: torch.Tensor):  # type: ignore[no-untyped-def]
    """Analytic gradients of out = L2(pool(x) * scale + shift) for x, p, scale and shift."""
    x, p, scale, shift, out = ctx.saved_tensors
    acc = out.dtype
    dims = (2, 3) if x.dim() == 4 else (1,)
    n = x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[1]
    g = grad_out.to(acc)
    # recompute the pooled values instead of saving them: (B, C) is cheap next to the map
    gem = ctx.mode == "gem"
    xa = x.to(acc)
    if gem:
        pa = p.to(acc)
        v = xa.clamp(min=ctx.eps)
        vp = v.pow(pa)
        s = vp.mean(dims)
        m = s.pow(1.0 / pa)
    else:
        m = xa.mean(dims)
    y = m if scale is None else m * scale.to(acc)
    if shift is not None:
        y = y + shift.to(acc)
    if ctx.normalize:
        norm = y.norm(dim=1, keepdim=True)
        # d(y/max(|y|,e))/dy: projection off the output direction, except where the floor is active
        dy = torch.where(norm > _NORM_EPS, (g - out * (g * out).sum(1, keepdim=True)) / norm, g / _NORM_EPS)
    else:
        dy = g
    d_scale = (dy * m).sum(0).to(scale.dtype) if scale is not None and ctx.needs_input_grad[2] else None
    d_shift = dy.sum(0).to(shift.dtype) if shift is not None and ctx.needs_input_grad[3] else None
    dm = dy if scale is None else dy * scale.to(acc)
    d_x = d_p = None
    expand = (slice(None), slice(None), None, None) if x.dim() == 4 else (slice(None), None, slice(None))
    if gem:
        if ctx.needs_input_grad[0]:
            # dm/dx_i = m * v_i^(p-1) / (N * s), zero where the clamp is active
            coef = (dm * m / (s * n))[expand]
            d_x = (coef * vp / v * (xa >= ctx.eps)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            # dm/dp = m * (mean(v^p log v) / (p s) - log(s) / p^2)
            t = (vp * v.log()).mean(dims)
            d_p = (dm * m * (t / (pa * s) - s.log() / (pa * pa))).sum().reshape(p.shape).to(p.dtype)
    elif ctx.needs_input_grad[0]:
        d_x = (dm / n)[expand].expand(x.shape).to(x.dtype)
    return d_x, d_p, d_scale, d_shift, None, None, None


_pool_bn_l2_op.register_autograd(_backward, setup_context=_setup_context)


def pool_bn_l2(
    x: torch.Tensor,
    *,
    mode: str = "mean",
    p: torch.Tensor | float | None = None,
    eps: float = 1e-6,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Pool a feature map (B,C,H,W) (NCHW or channels_last) or tokens (B,L,C) to (B,C) float32, then affine, then L2.

    mean: m_c = mean_i x_ci. GeM (Radenovic et al., TPAMI 2018): m_c = (mean_i max(x_ci, eps)^p)^(1/p).
    Then y_c = m_c * scale_c + shift_c (an eval-mode BatchNorm folded into scale/shift), and
    y / max(||y||_2, 1e-12) when ``normalize``. Differentiable in x, p, scale and shift.
    """
    _check_inputs(x, mode, p, scale, shift)
    if not _use_triton(x, "pool_bn_l2"):
        return _pool_bn_l2_unchecked(x, mode, p, eps, scale, shift, normalize)
    p_t = None
    if mode == "gem":
        p_t = p if isinstance(p, torch.Tensor) else torch.tensor(float(p), device=x.device)
        p_t = p_t.reshape(())
    return _pool_bn_l2_op(x, p_t, scale, shift, mode, float(eps), bool(normalize))
