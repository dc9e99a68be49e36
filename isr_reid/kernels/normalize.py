"""uint8 images -> (x / 255 - mean) / std in one pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["normalize_images", "normalize_images_torch"]


def normalize_images_torch(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    layout: str = "nchw",
    out_dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """PyTorch path of :func:`normalize_images`."""
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 images, got {images.dtype}")
    if layout == "nhwc":
        images = images.permute(0, 3, 1, 2)
    elif layout != "nchw":
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected 3-channel images (B,3,H,W) after layout {layout!r}, got {tuple(images.shape)}")
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    out = (images.float() / 255.0 - m) / s
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return out.to(dtype=out_dtype, memory_format=fmt)


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
    return normalize_images_torch(
        images, mean, std, layout=layout, out_dtype=out_dtype, channels_last=channels_last
    )
