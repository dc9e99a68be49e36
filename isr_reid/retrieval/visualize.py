"""Ranked-result pictures: each query followed by its top-k gallery thumbnails, one row per query."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path

__all__ = ["draw_ranked_results"]

_GREEN = (0, 170, 0)
_RED = (220, 0, 0)
_GREY = (200, 200, 200)
_BORDER = 3
_GAP = 4
_SEPARATOR = 12
_LABEL_H = 14


def _open(img: Any, what: str) -> Any:
    from PIL import Image

    from ..data.images import load_image, pil_to_rgb

    if isinstance(img, Image.Image):
        return pil_to_rgb(img)  # the picture as it was embedded
    if isinstance(img, (str, os.PathLike)):
        try:
            return load_image(img)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what}: image file not found: {img}") from None
    if isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        return Image.fromarray(img)
    raise TypeError(f"{what}: expected a PIL image, a path or an HxWx3 uint8 array, got {type(img).__name__}")


def _thumb(img: Any, size: tuple[int, int], border: tuple[int, int, int] | None) -> Any:
    from PIL import Image

    h, w = size
    out = Image.new("RGB", (w, h), border or _GREY)
    inner = img.resize((w - 2 * _BORDER, h - 2 * _BORDER), Image.BILINEAR) if border else img.resize((w, h))
    out.paste(inner, (_BORDER, _BORDER) if border else (0, 0))
    return out


def draw_ranked_results(
    query_images: Sequence[Any],
    gallery_images: Sequence[Any],
    ranked_indices: Any,
    *,
    scores: Any = None,
    correct: Any = None,
    out_path: str | os.PathLike[str],
    thumb_size: tuple[int, int] = (128, 64),
) -> Path:
    """Draw one row per query (query, separator, its ranked gallery thumbnails) and write a PNG.

    ``ranked_indices`` (Nq, k) index ``gallery_images``; ``scores`` (Nq, k) are printed under each
    thumbnail; ``correct`` (Nq, k) bool gives green (True) or red (False) borders. ``thumb_size`` is
    (height, width). The file is written atomically; returns its path.
    """
    from PIL import Image, ImageDraw

    ranked = np.asarray(ranked_indices)
    if ranked.ndim != 2:
        raise ValueError(f"ranked_indices: expected shape (Nq, k), got {ranked.shape}")
    nq, k = ranked.shape
    if len(query_images) != nq:
        raise ValueError(f"query_images: {len(query_images)} images but ranked_indices has {nq} rows")
    if ranked.size and (ranked.min() < 0 or ranked.max() >= len(gallery_images)):
        raise IndexError(f"ranked_indices: values must lie in [0, {len(gallery_images)}), "
                         f"got [{ranked.min()}, {ranked.max()}]")
    for name, arr in (("scores", scores), ("correct", correct)):
        if arr is not None and np.asarray(arr).shape != ranked.shape:
            raise ValueError(f"{name}: expected shape {ranked.shape}, got {np.asarray(arr).shape}")
    scores = None if scores is None else np.asarray(scores, dtype=np.float64)
    correct = None if correct is None else np.asarray(correct, dtype=bool)
    h, w = int(thumb_size[0]), int(thumb_size[1])
    if h <= 2 * _BORDER or w <= 2 * _BORDER:
        raise ValueError(f"thumb_size: expected (height, width) larger than {2 * _BORDER}, got {thumb_size}")

    row_h = h + (_LABEL_H if scores is not None else 0) + _GAP
    width = w + _SEPARATOR + k * (w + _GAP)
    canvas = Image.new("RGB", (max(width, 1), max(nq * row_h, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    # Gallery images are opened once each, however many rows show them.
    cache: dict[int, Any] = {}
    for i in range(nq):
        y = i * row_h
        canvas.paste(_thumb(_open(query_images[i], f"query_images[{i}]"), (h, w), None), (0, y))
        sx = w + _SEPARATOR // 2
        draw.line([(sx, y), (sx, y + h)], fill=(0, 0, 0), width=2)
        for j in range(k):
            gi = int(ranked[i, j])
            if gi not in cache:
                cache[gi] = _open(gallery_images[gi], f"gallery_images[{gi}]")
            border = None if correct is None else (_GREEN if correct[i, j] else _RED)
            x = w + _SEPARATOR + j * (w + _GAP)
            canvas.paste(_thumb(cache[gi], (h, w), border), (x, y))
            if scores is not None:
                draw.text((x + 2, y + h + 1), f"{scores[i, j]:.3f}", fill=(0, 0, 0))

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        canvas.save(tmp, format="PNG")
    return out_path
