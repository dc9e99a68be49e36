"""Image inputs: expand what the caller gave into single images, decode, convert to RGB uint8, resize.

Every input kind ends as an RGB uint8 HWC array, squash-resized with PIL's bilinear filter
(antialiased when shrinking, as torchvision's ``Resize`` on PIL images does), so that the same
picture gives the same pixels whatever form it came in.

Files and PIL images go through one conversion, :func:`pil_to_rgb`: the EXIF orientation is applied
(the picture as viewers show it, as ``ImageOps.exif_transpose`` gives it); 16-bit and 32-bit
integer grey (modes ``I;16*`` and ``I``, values 0..65535) is scaled to 8 bits by round(v * 255 / 65535);
float grey (mode ``F``) must hold values in [0, 1] and is scaled by 255; alpha (RGBA, LA, PA, a
palette's transparent index) is dropped, as it is for 4-channel arrays; every other mode (1, L, P,
CMYK, YCbCr, ...) is converted by PIL. Arrays and tensors carry no EXIF.
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageInput",
    "ImageInputError",
    "expand_images",
    "list_images",
    "load_image",
    "pil_to_rgb",
    "resize_image",
    "to_rgb_uint8",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})


class ImageInputError(ValueError):
    """An input image that cannot be used; the message names it (index and path or kind)."""

    def __init__(self, index: int | None, label: str, reason: str):
        self.index, self.label, self.reason = index, label, reason
        where = f"images[{index}] ({label})" if index is not None else label
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ImageInput:
    """One image to embed: a file path or an in-memory image (PIL, numpy HWC, torch CHW)."""

    source: Any
    label: str

    @property
    def is_path(self) -> bool:
        return isinstance(self.source, (str, Path))


def list_images(directory: str | os.PathLike[str]) -> list[Path]:
    """The image files under ``directory`` (recursively), sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _expand_path(path: Path) -> list[ImageInput]:
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise FileNotFoundError(
                f"no image files under {path} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return [ImageInput(str(f), str(f)) for f in files]
    if not path.exists() and _glob.has_magic(str(path)):
        files = sorted(Path(p) for p in _glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise FileNotFoundError(f"the pattern {path} matches no file")
        return [ImageInput(str(f), str(f)) for f in files]
    return [ImageInput(str(path), str(path))]


def expand_images(images: Any) -> list[ImageInput]:
    """Flatten ``images`` (a path, directory, glob, PIL image, array, tensor, or a list of them) into single images.

    A numpy array with 4 dims is a batch of HWC images; a torch tensor with 4 dims a batch of CHW.
    """
    import torch

    out: list[ImageInput] = []

    def add(item: Any, label: str) -> None:
        if isinstance(item, (str, os.PathLike)):
            out.extend(_expand_path(Path(item)))
        elif isinstance(item, Image.Image):
            out.append(ImageInput(item, f"PIL {item.mode} {item.size[0]}x{item.size[1]}"))
        elif isinstance(item, np.ndarray):
            if item.ndim == 4:
                out.extend(ImageInput(item[i], f"numpy {item[i].shape} {item.dtype}") for i in range(len(item)))
            else:
                out.append(ImageInput(item, f"numpy {item.shape} {item.dtype}"))
        elif isinstance(item, torch.Tensor):
            if item.dim() == 4:
                out.extend(
                    ImageInput(item[i], f"tensor {tuple(item[i].shape)} {item.dtype}") for i in range(len(item))
                )
            else:
                out.append(ImageInput(item, f"tensor {tuple(item.shape)} {item.dtype}"))
        elif isinstance(item, (list, tuple)):
            for j, sub in enumerate(item):
                add(sub, f"{label}[{j}]")
        else:
            raise ImageInputError(
                len(out), label, f"unsupported input type {type(item).__name__}; expected a path, PIL image, "
                "numpy HWC uint8 array, torch CHW tensor, or a list of them"
            )

    add(images, "images")
    if not out:
        raise ValueError("no images to embed: the input is empty")
    return out


_EXIF_ORIENTATION = 0x0112
_MAX_16BIT = 65535


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file fully (so truncation is caught here) as RGB, by the rules of :func:`pil_to_rgb`."""
    with Image.open(path) as img:
        img.load()
        return pil_to_rgb(img)


def pil_to_rgb(img: Image.Image) -> Image.Image:
    """A PIL image as the RGB picture a viewer shows: EXIF orientation applied, 16-bit/float grey scaled, alpha dropped."""
    if img.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1):
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "I" or mode.startswith("I;16"):
        a = np.asarray(img)
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > _MAX_16BIT:
            raise ValueError(
                f"integer image (PIL mode {mode}) has values in [{lo}, {hi}]; only 16-bit grey (0..65535) is "
                "read (scaled to 8 bits): scale it to uint8 yourself and pass an array"
            )
        a8 = ((a.astype(np.uint32) * 255 + _MAX_16BIT // 2) // _MAX_16BIT).astype(np.uint8)  # round(v * 255 / 65535)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError(f"float image (PIL mode F) holds {int((~np.isfinite(a)).sum())} NaN or inf pixels")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float image (PIL mode F) must hold values in [0, 1], found [{lo:.3g}, {hi:.3g}]: scale it to "
                "uint8 yourself and pass an array"
            )
        return Image.fromarray(np.round(a * 255.0).astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL's own path for a transparent palette; the alpha is dropped next
    return img.convert("RGB")


_CHANNELS = (1, 3, 4)


def _check_layout(shape: tuple[int, ...], layout: str) -> None:
    """Refuse a 3-dim shape that reads as both HWC and CHW (e.g. (3, H, 3)): the layout is never guessed."""
    if len(shape) == 3 and shape[0] in _CHANNELS and shape[2] in _CHANNELS:
        kind = "numpy arrays are read as HWC" if layout == "HWC" else "tensors are read as CHW"
        raise ValueError(
            f"ambiguous image layout: shape {shape} is a {shape[0]}x{shape[1]} HWC image or a {shape[1]}x{shape[2]} "
            f"CHW image ({kind}, but an image 1 to 4 pixels wide or high is almost surely a transposed one); "
            "to embed such an image, pass it as a PIL image (Image.fromarray of its HWC uint8 array)"
        )


def _check_channels(arr: np.ndarray, layout: str) -> np.ndarray:
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"expected a {layout} image with 3 dims, got shape {arr.shape}")
    channels = arr.shape[2]
    if layout == "HWC" and channels not in _CHANNELS and arr.shape[0] in _CHANNELS:
        raise ValueError(
            f"numpy images are HWC; shape {arr.shape} looks CHW: pass arr.transpose(1, 2, 0) or a torch tensor"
        )
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    if channels == 4:  # drop alpha
        return arr[:, :, :3]
    if channels != 3:
        raise ValueError(f"expected 1, 3 or 4 channels in a {layout} image, got shape {arr.shape}")
    return arr


def to_rgb_uint8(source: Any, channel_order: str = "rgb") -> np.ndarray:
    """Any single image -> an RGB uint8 (H, W, 3) array. ``channel_order`` applies to arrays and tensors only."""
    import torch

    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if isinstance(source, (str, os.PathLike)):
        return np.asarray(load_image(source))
    if isinstance(source, Image.Image):
        return np.asarray(pil_to_rgb(source))
    if isinstance(source, torch.Tensor):
        t = source.detach().cpu()
        _check_layout(tuple(t.shape), "CHW")
        if t.dim() == 3 and t.shape[0] in _CHANNELS:
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise ValueError(f"expected a CHW tensor (C in 1, 3, 4), got shape {tuple(source.shape)}")
        if t.dtype == torch.uint8:
            arr = t.numpy()
        elif t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"float tensor holds {int((~torch.isfinite(t)).sum())} NaN or inf values")
            lo, hi = float(t.min()), float(t.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"float tensors must hold values in [0, 1], found [{lo:.3g}, {hi:.3g}]")
            arr = (t.float() * 255.0).round().to(torch.uint8).numpy()
        else:
            raise TypeError(f"unsupported tensor dtype {t.dtype}; use uint8 or float in [0, 1]")
        arr = _check_channels(arr, "CHW")
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 HWC, got dtype {source.dtype}")
        _check_layout(source.shape, "HWC")
        arr = _check_channels(source, "HWC")
    else:
        raise TypeError(f"unsupported image type {type(source).__name__}")
    if channel_order == "bgr":
        arr = arr[:, :, ::-1]
    if min(arr.shape[:2]) == 0:
        raise ValueError(f"empty image of shape {arr.shape}")
    return np.ascontiguousarray(arr)


def resize_image(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Squash-resize an RGB uint8 (H, W, 3) array to ``size`` = (H, W) with PIL bilinear."""
    h, w = int(size[0]), int(size[1])
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
