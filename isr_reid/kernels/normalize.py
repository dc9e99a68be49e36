"""uint8 images -> (x / 255 - mean) / std in one pass, NCHW or channels_last, float32/16 or bfloat16.

Registered as ``isr_reid::normalize_images``, so that ``extract()`` ships uint8 batches to the GPU
(4x fewer bytes than float32) and normalises them there in a single read and write.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.library import triton_op, wrap_triton

from ._backend import _jit, _triton_runs_on, _use_triton

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch path needs neither
    triton = tl = None

__all__ = ["normalize_images", "normalize_images_torch"]

_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _nchw_view(images: torch.Tensor, layout: str, out_dtype: torch.dtype) -> torch.Tensor:
    """Validate and return a (B, 3, H, W) view of ``images`` (no copy)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 images, got {images.dtype}")
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"normalize_images: out_dtype must be float32, float16 or bfloat16, got {out_dtype}")
    if images.dim() != 4:
        raise ValueError(f"normalize_images expects a 4-d batch in layout {layout!r}, got shape {tuple(images.shape)}")
    if layout == "nhwc":
        images = images.permute(0, 3, 1, 2)
    elif layout != "nchw":
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    if images.shape[1] != 3:
        raise ValueError(f"expected 3-channel images (B,3,H,W) after layout {layout!r}, got {tuple(images.shape)}")
    return images


def _affine(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """(x/255 - m)/s as x * a + c, per channel, in double precision."""
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"normalize_images: mean and std need 3 values each, got {list(mean)} and {list(std)}")
    if any(float(s) == 0.0 for s in std):
        raise ValueError(f"normalize_images: std must be non-zero, got {list(std)}")
    a = [1.0 / (255.0 * float(s)) for s in std]
    c = [-float(m) / float(s) for m, s in zip(mean, std)]
    return a, c


def normalize_images_torch(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layout: str = "nchw",
    out_dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """PyTorch path of :func:`normalize_images`: one float32 buffer, converted and scaled in place."""
    src = _nchw_view(images, layout, out_dtype)
    a, c = _affine(mean, std)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(src.shape, dtype=torch.float32, device=src.device, memory_format=fmt)
    out.copy_(src)  # uint8 -> float32 and the layout change in one pass
    scale = torch.tensor(a, dtype=torch.float32, device=src.device).view(1, 3, 1, 1)
    shift = torch.tensor(c, dtype=torch.float32, device=src.device).view(1, 3, 1, 1)
    out.mul_(scale).add_(shift)
    return out if out_dtype == torch.float32 else out.to(dtype=out_dtype, memory_format=fmt)


def _normalize_kernel(
    x_ptr, out_ptr, HW,
    x_sb, x_sc, x_sp, o_sb, o_sc, o_sp,
    a0, a1, a2, c0, c1, c2,
    BLOCK: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK pixels of one image, all three channels (p is the flat h*W + w index).
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < HW
    src = x_ptr + b * x_sb + offs * x_sp
    dst = out_ptr + b * o_sb + offs * o_sp
    ty = out_ptr.dtype.element_ty
    v = tl.load(src, mask=mask, other=0).to(tl.float32)
    tl.store(dst, (v * a0 + c0).to(ty), mask=mask)
    v = tl.load(src + x_sc, mask=mask, other=0).to(tl.float32)
    tl.store(dst + o_sc, (v * a1 + c1).to(ty), mask=mask)
    v = tl.load(src + 2 * x_sc, mask=mask, other=0).to(tl.float32)
    tl.store(dst + 2 * o_sc, (v * a2 + c2).to(ty), mask=mask)


def _pixel_strides(t: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(t, batch stride, channel stride, flat-pixel stride) of (B, 3, H, W) ``t``; copies if H, W do not merge."""
    h, w = t.shape[2], t.shape[3]
    if h > 1 and t.stride(2) != w * t.stride(3):
        t = t.contiguous()
    return t, t.stride(0), t.stride(1), t.stride(3)


def _launch(images_nchw: torch.Tensor, a: list[float], c: list[float], out: torch.Tensor) -> torch.Tensor:
    """Run the Triton kernel: (B,3,H,W) uint8 view -> ``out`` (B,3,H,W), any dtype/memory format with merged H, W."""
    x, x_sb, x_sc, x_sp = _pixel_strides(images_nchw)
    checked, o_sb, o_sc, o_sp = _pixel_strides(out)
    if checked is not out:
        raise ValueError(f"normalize_images: out strides {out.stride()} do not merge H and W")
    batch, _, h, w = x.shape
    if batch * h * w == 0:
        return out
    block = 1024 if x.device.type == "cuda" else 64  # the interpreter pays per program
    wrap_triton(_jit(_normalize_kernel))[(batch, triton.cdiv(h * w, block))](
        x, out, h * w, x_sb, x_sc, x_sp, o_sb, o_sc, o_sp, *a, *c, BLOCK=block
    )
    return out


@triton_op("isr_reid::normalize_images", mutates_args=())
def _normalize_op(images: torch.Tensor, a: list[float], c: list[float], out_dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    # images: a (B,3,H,W) view. The device check lives here, inside the op, for torch.compile/export.
    if triton is not None and _triton_runs_on(images):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(images.shape, dtype=out_dtype, device=images.device, memory_format=fmt)
        return _launch(images, a, c, out)
    mean = [-ci / (ai * 255.0) for ai, ci in zip(a, c)]
    std = [1.0 / (255.0 * ai) for ai in a]
    return normalize_images_torch(images, mean, std, out_dtype=out_dtype, channels_last=channels_last)


def normalize_images(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layout: str = "nchw",
    out_dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """Normalise uint8 images (B,3,H,W) or, with ``layout="nhwc"``, (B,H,W,3) to float (B,3,H,W).

    out = (x / 255 - mean) / std per RGB channel, written in ``out_dtype``, NCHW or channels_last.
    """
    src = _nchw_view(images, layout, out_dtype)
    if not _use_triton(src, "normalize_images"):
        return normalize_images_torch(
            images, mean, std, layout=layout, out_dtype=out_dtype, channels_last=channels_last
        )
    a, c = _affine(mean, std)
    return _normalize_op(src, a, c, out_dtype, channels_last)
