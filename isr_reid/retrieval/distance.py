"""Pairwise distances and top-k search between embedding sets, chunked so memory stays bounded."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["METRICS", "SCL_LAYOUT", "as_tensor", "pairwise_distance", "scl_parts", "topk"]

METRICS = ("cosine", "euclidean", "scl")
# scl_resnet50's embedding: [g / sqrt(2), s_1 / 4, ..., s_8 / 4] (global dim 2048, 8 stripes of 256).
SCL_LAYOUT = (2048, 8)
# Elements of one (queries x gallery) block: 2^24 float32 = 64 MiB, whatever the problem size.
_BLOCK_ELEMENTS = 1 << 24


def as_tensor(x: Any, name: str, *, ndim: int | None = None, device: str | torch.device | None = None,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` (numpy, torch or a sequence) as a torch tensor, with a clear error naming ``name``."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        try:
            t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}: cannot be read as an array ({e})") from None
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtype is not None or device is not None:
        t = t.to(device=device if device is not None else t.device, dtype=dtype or t.dtype)
    return t


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")


def _features(x: Any, name: str, device: str | torch.device | None) -> torch.Tensor:
    t = as_tensor(x, name, ndim=2, device=device)
    if not torch.is_floating_point(t):
        raise TypeError(f"{name}: expected floating point features, got dtype {t.dtype}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t


def scl_parts(x: torch.Tensor, layout: tuple[int, int] = SCL_LAYOUT) -> list[torch.Tensor]:
    """Split ``scl_resnet50`` embeddings ``[g/sqrt(2), s_1/sqrt(2n), ..., s_n/sqrt(2n)]`` back into g, s_1..s_n.

    ``layout`` is (global dim, number of stripes n); the stripe dim is the rest divided by n. The
    scales of :class:`isr_reid.models.resnet.ResNetSCL` are undone, so unit branches come back unit.
    """
    gdim, n = layout
    d = x.shape[1]
    if gdim <= 0 or n <= 0 or d <= gdim or (d - gdim) % n:
        raise ValueError(f"metric 'scl': {d}-d features do not split into a {gdim}-d global part and {n} equal "
                         f"stripes (scl_resnet50 makes 2048 + 8 x 256 = 4096-d embeddings)")
    sdim = (d - gdim) // n
    parts = [x[:, :gdim] * math.sqrt(2.0)]
    parts += [x[:, gdim + k * sdim: gdim + (k + 1) * sdim] * math.sqrt(2.0 * n) for k in range(n)]
    return parts


def _gallery_aux(g: torch.Tensor, metric: str, layout: tuple[int, int]) -> torch.Tensor | None:
    """What a block needs of the gallery beside its rows: squared norms (per part for ``scl``)."""
    if metric == "euclidean":
        return (g * g).sum(1)
    if metric == "scl":
        return torch.stack([(p * p).sum(1) for p in scl_parts(g, layout)], 1)
    return None


def _euclidean(q: torch.Tensor, g: torch.Tensor, g_sq: torch.Tensor) -> torch.Tensor:
    q_sq = (q * q).sum(1, keepdim=True)
    # The expansion ||q||^2 + ||g||^2 - 2 q.g can dip below zero by rounding; clamp before sqrt.
    return (q_sq + g_sq[None, :] - 2.0 * (q @ g.T)).clamp_min_(0).sqrt_()


def _block(q: torch.Tensor, g: torch.Tensor, metric: str, g_aux: torch.Tensor | None = None,
           layout: tuple[int, int] = SCL_LAYOUT) -> torch.Tensor:
    """Distances of a query block to a gallery block; cosine inputs must already be unit rows."""
    if metric == "cosine":
        return 1.0 - q @ g.T
    if g_aux is None:
        g_aux = _gallery_aux(g, metric, layout)
    if metric == "euclidean":
        return _euclidean(q, g, g_aux)
    # SCL (Pang et al., ACM TOMM 2022): 0.5 ||g - g'|| + 0.5 mean_k ||s_k - s_k'||, unsquared.
    qp, gp = scl_parts(q, layout), scl_parts(g, layout)
    n = len(qp) - 1
    out = _euclidean(qp[0], gp[0], g_aux[:, 0]).mul_(0.5)
    for k in range(1, n + 1):
        out.add_(_euclidean(qp[k], gp[k], g_aux[:, k]), alpha=0.5 / n)
    return out


def _prepare(q: torch.Tensor, g: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query and gallery features differ in dimension: {q.shape[1]} vs {g.shape[1]}")
    dtype = torch.promote_types(q.dtype, g.dtype)
    q, g = q.to(dtype), g.to(dtype=dtype, device=q.device)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    return q, g


def pairwise_distance(
    q: Any,
    g: Any,
    metric: str = "cosine",
    *,
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    scl_layout: tuple[int, int] = SCL_LAYOUT,
) -> Any:
    """Distance matrix (Nq, Ng) between query and gallery features, computed in query chunks.

    ``cosine`` is 1 - cos(q, g) (rows are L2-normalised first); ``euclidean`` is ||q - g||_2 (not
    squared); ``scl`` is SCL's ranking distance (Pang et al., ACM TOMM 2022) on ``scl_resnet50``
    embeddings: 0.5 ||g - g'|| + 0.5 mean_k ||s_k - s_k'||, unsquared, over the global and stripe
    parts that :func:`scl_parts` splits back out (``scl_layout`` = (global dim, stripes)).
    numpy inputs give a numpy array, torch inputs a tensor on their device.
    """
    _check_metric(metric)
    numpy_out = not isinstance(q, torch.Tensor)
    qt = _features(q, "q", device)
    gt = _features(g, "g", qt.device)
    qt, gt = _prepare(qt, gt, metric)
    out = torch.empty(qt.shape[0], gt.shape[0], dtype=qt.dtype, device=qt.device)
    step = chunk_size or max(1, _BLOCK_ELEMENTS // max(1, gt.shape[0]))
    g_aux = _gallery_aux(gt, metric, scl_layout)
    if metric == "scl":  # one (rows x Ng) buffer per part is alive at a time, plus the sum
        step = chunk_size or max(1, _BLOCK_ELEMENTS // (2 * max(1, gt.shape[0])))
    for s in range(0, qt.shape[0], step):
        out[s:s + step] = _block(qt[s:s + step], gt, metric, g_aux, scl_layout)
    return out.cpu().numpy() if numpy_out else out


def _sort_pairs(d: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by distance, ties by gallery index (two stable sorts)."""
    o = torch.argsort(idx, dim=1, stable=True)
    d, idx = d.gather(1, o), idx.gather(1, o)
    o = torch.argsort(d, dim=1, stable=True)
    return d.gather(1, o), idx.gather(1, o)


def topk(
    q: Any,
    g: Any,
    k: int,
    metric: str = "cosine",
    *,
    device: str | torch.device | None = None,
    query_chunk: int | None = None,
    gallery_chunk: int | None = None,
    scl_layout: tuple[int, int] = SCL_LAYOUT,
) -> tuple[Any, Any]:
    """The ``k`` nearest gallery rows of each query: (distances, indices), each (Nq, k), nearest first.

    Blocks of at most ``query_chunk x gallery_chunk`` distances are held at once and reduced with
    ``torch.topk`` (no full sort). Rows are ordered by distance, equal distances by gallery index;
    which of several items tied at the k-th place is kept is unspecified. ``metric`` and
    ``scl_layout`` are as in :func:`pairwise_distance`.
    """
    _check_metric(metric)
    numpy_out = not isinstance(q, torch.Tensor)
    qt = _features(q, "q", device)
    gt = _features(g, "g", qt.device)
    qt, gt = _prepare(qt, gt, metric)
    ng = gt.shape[0]
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected a positive integer, got {k!r}")
    k = min(k, ng)
    gchunk = gallery_chunk or min(ng, 1 << 16)
    qchunk = query_chunk or max(1, _BLOCK_ELEMENTS // max(1, min(gchunk, ng)))
    g_aux = _gallery_aux(gt, metric, scl_layout)
    dists = torch.empty(qt.shape[0], k, dtype=qt.dtype, device=qt.device)
    index = torch.empty(qt.shape[0], k, dtype=torch.int64, device=qt.device)
    for s in range(0, qt.shape[0], qchunk):
        qb = qt[s:s + qchunk]
        best_d = best_i = None
        for gs in range(0, ng, gchunk):
            block = _block(qb, gt[gs:gs + gchunk], metric, None if g_aux is None else g_aux[gs:gs + gchunk],
                           scl_layout)
            kk = min(k, block.shape[1])
            d, i = torch.topk(block, kk, dim=1, largest=False, sorted=False)
            i = i + gs
            if best_d is not None:
                d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
                if d.shape[1] > k:
                    d, sel = torch.topk(d, k, dim=1, largest=False, sorted=False)
                    i = i.gather(1, sel)
            best_d, best_i = d, i
        dists[s:s + qchunk], index[s:s + qchunk] = _sort_pairs(best_d, best_i)
    if numpy_out:
        return dists.cpu().numpy(), index.cpu().numpy()
    return dists, index
