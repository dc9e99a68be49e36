"""Ranked-result pictures: each query followed by its top-k gallery thumbnails, one row per query.

:func:`draw_ranked_results` draws one ranking; :func:`draw_ranked_comparison` draws the same queries
ranked by several models side by side (e.g. before and after training), under a title and a legend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path

__all__ = ["draw_ranked_comparison", "draw_ranked_results"]

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
        _paste_ranked_row(canvas, draw, cache, gallery_images, ranked[i],
                          None if correct is None else correct[i], None if scores is None else scores[i],
                          x0=w + _SEPARATOR, y=y, thumb_size=(h, w))

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        canvas.save(tmp, format="PNG")
    return out_path


def _font(size: int) -> Any:
    """PIL's bundled font at ``size`` px (Pillow >= 10.1 with FreeType), else its small bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError, ImportError):
        return ImageFont.load_default()


def _check_panel(name: str, ranked: Any, correct: Any, scores: Any, nq: int, ng: int) -> tuple[np.ndarray, Any, Any]:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != nq:
        raise ValueError(f"{name}: ranked indices must have shape ({nq}, k), got {ranked.shape}")
    if ranked.size and (ranked.min() < 0 or ranked.max() >= ng):
        raise IndexError(f"{name}: ranked indices must lie in [0, {ng}), got [{ranked.min()}, {ranked.max()}]")
    for what, arr in (("correct", correct), ("scores", scores)):
        if arr is not None and np.asarray(arr).shape != ranked.shape:
            raise ValueError(f"{name}: {what} must have shape {ranked.shape}, got {np.asarray(arr).shape}")
    return (ranked, None if correct is None else np.asarray(correct, dtype=bool),
            None if scores is None else np.asarray(scores, dtype=np.float64))


def _paste_ranked_row(canvas: Any, draw: Any, cache: dict[int, Any], gallery_images: Sequence[Any],
                      ranked_row: np.ndarray, correct_row: np.ndarray | None, scores_row: np.ndarray | None,
                      *, x0: int, y: int, thumb_size: tuple[int, int]) -> None:
    """Paste one query's ranked gallery thumbnails from ``x0`` rightwards (bordered, scored); ``cache``
    keeps each gallery image opened once however many rows show it."""
    h, w = thumb_size
    for j, gi in enumerate(int(v) for v in ranked_row):
        if gi not in cache:
            cache[gi] = _open(gallery_images[gi], f"gallery_images[{gi}]")
        border = None if correct_row is None else (_GREEN if correct_row[j] else _RED)
        x = x0 + j * (w + _GAP)
        canvas.paste(_thumb(cache[gi], (h, w), border), (x, y))
        if scores_row is not None:
            draw.text((x + 2, y + h + 1), f"{scores_row[j]:.3f}", fill=(0, 0, 0))


def _wrap(text: str, length: Callable[[str], float], max_width: float) -> list[str]:
    """``text`` split at spaces into lines no wider than ``max_width`` (a longer single word keeps its own line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and length(f"{lines[-1]} {word}") <= max_width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def draw_ranked_comparison(
    query_images: Sequence[Any],
    gallery_images: Sequence[Any],
    panels: Sequence[tuple[str, Any, Any, Any]],
    *,
    out_path: str | os.PathLike[str],
    title: str = "",
    subtitle: str = "",
    thumb_size: tuple[int, int] = (128, 64),
) -> Path:
    """One row per query: the query, then for each panel its top-k gallery thumbnails; under a title and a legend.

    ``panels`` is a list of ``(label, ranked_indices, correct, scores)``: ``ranked_indices`` (Nq, k)
    index ``gallery_images``; ``correct`` (Nq, k) bool gives green (same person) or red (another
    person) borders; ``scores`` (Nq, k) or None are printed under the thumbnails. Panels may have
    different k. The PNG is written atomically; returns its path.
    """
    from PIL import Image, ImageDraw

    nq, ng = len(query_images), len(gallery_images)
    if not panels:
        raise ValueError("panels: at least one (label, ranked_indices, correct, scores) is needed")
    checked = [(str(label), *_check_panel(f"panels[{i}] ({label})", r, c, s, nq, ng))
               for i, (label, r, c, s) in enumerate(panels)]
    h, w = int(thumb_size[0]), int(thumb_size[1])
    if h <= 2 * _BORDER or w <= 2 * _BORDER:
        raise ValueError(f"thumb_size: expected (height, width) larger than {2 * _BORDER}, got {thumb_size}")
    has_scores = any(s is not None for *_, s in checked)
    row_h = h + (_LABEL_H if has_scores else 0) + _GAP
    panel_gap = 3 * _SEPARATOR
    widths = [r.shape[1] * (w + _GAP) for _, r, _, _ in checked]
    width = w + _SEPARATOR + sum(widths) + panel_gap * (len(checked) - 1) + _GAP
    big, small = _font(18), _font(13)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    canvas_w = max(width, int(measure.textlength(title, font=big)) + 8, 560)
    # The subtitle wraps to the thumbnails' width rather than widening the picture.
    sub_lines = _wrap(subtitle, lambda t: measure.textlength(t, font=small), canvas_w - 8)
    title_h = 24 * bool(title) + 20 * len(sub_lines) + 26 + 20  # title lines, legend, panel labels
    canvas = Image.new("RGB", (canvas_w, title_h + 4 + max(nq, 1) * row_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 4
    for text, font, step in ((title, big, 24), *((line, small, 20) for line in sub_lines)):
        if text:
            draw.text((4, y), text, fill=(0, 0, 0), font=font)
            y += step
    # legend: a green and a red swatch with their meaning
    for k, (colour, text) in enumerate(((_GREEN, "green border: same person as the query"), (_RED, "red border: another person"))):
        x = 4 + k * 300
        draw.rectangle([x, y, x + 16, y + 16], outline=colour, width=_BORDER)
        draw.text((x + 22, y + 1), text, fill=(0, 0, 0), font=small)
    y += 26
    x0s = []
    x = w + _SEPARATOR
    draw.text((2, y), "query", fill=(0, 0, 0), font=small)
    for (label, *_), pw in zip(checked, widths):
        x0s.append(x)
        draw.text((x, y), label, fill=(0, 0, 0), font=small)
        x += pw + panel_gap
    y += 20
    cache: dict[int, Any] = {}
    for i in range(nq):
        ry = y + i * row_h
        canvas.paste(_thumb(_open(query_images[i], f"query_images[{i}]"), (h, w), None), (0, ry))
        sx = w + _SEPARATOR // 2
        draw.line([(sx, ry), (sx, ry + h)], fill=(0, 0, 0), width=2)
        for p, ((_, ranked, correct, scores), px) in enumerate(zip(checked, x0s)):
            if p:
                gx = px - panel_gap // 2
                draw.line([(gx, ry), (gx, ry + h)], fill=(120, 120, 120), width=1)
            _paste_ranked_row(canvas, draw, cache, gallery_images, ranked[i],
                              None if correct is None else correct[i], None if scores is None else scores[i],
                              x0=px, y=ry, thumb_size=(h, w))

    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        canvas.save(tmp, format="PNG")
    return out_path
