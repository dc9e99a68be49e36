"""Pair mining for ISR: maximum-weight bipartite matching between two frames, and each pair's reliability.

ISR (Dou et al., "Identity-Seeking Self-Supervised Representation Learning for Generalizable
Person Re-identification", ICCV 2023) associates the persons of frame t and frame t + delta by a
maximum-weight bipartite matching on their cosine similarities; matched pairs are positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["MinedPairs", "match_pairs", "mine_pairs", "pair_reliability"]


def _linear_sum_assignment() -> Any:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # scipy is the `train` extra
        raise ImportError("ISR pair mining needs scipy: pip install 'isr-reid[train]'") from e
    return linear_sum_assignment


def match_pairs(similarity: np.ndarray, *, min_similarity: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-weight bipartite matching of a (n_a, n_b) similarity matrix: (rows, cols) of the matched pairs.

    Every matching of size min(n_a, n_b) is considered and the one with the largest total similarity
    is returned (Hungarian method, scipy's ``linear_sum_assignment``); pairs whose similarity is below
    ``min_similarity`` are then dropped.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D matrix, got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity contains NaN or inf")
    if sim.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = _linear_sum_assignment()(sim, maximize=True)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    if min_similarity is not None:
        keep = sim[rows, cols] >= min_similarity
        rows, cols = rows[keep], cols[keep]
    return rows, cols


def pair_reliability(
    similarity: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    mode: str = "margin",
    margin_scale: float = 0.1,
) -> np.ndarray:
    """The reliability in [0, 1] of each matched pair (rows[k], cols[k]) of a similarity matrix S.

    ``mode="margin"`` (default): r = max(s, 0) * tanh(max(m, 0) / margin_scale), where s = S[i, j]
    and m = s - max(max_{j' != j} S[i, j'], max_{i' != i} S[i', j]) is the pair's margin over the best
    alternative in its row and column (0 when there is none). A pair that is not the mutual best
    (m <= 0) gets 0: the matching forced it, nothing in the similarities supports it. The margin, not
    the similarity alone, carries the signal because an untrained network gives every pair a high
    similarity; ``margin_scale`` = 0.1 saturates r for a margin of about 0.2 in cosine similarity.
    ``mode="uniform"``: r = 1 for every pair (the ablation).
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if mode == "uniform":
        return np.ones(len(rows))
    if mode != "margin":
        raise ValueError(f"reliability mode must be 'margin' or 'uniform', got {mode!r}")
    if margin_scale <= 0:
        raise ValueError(f"margin_scale must be > 0, got {margin_scale}")
    sim = np.asarray(similarity, dtype=np.float64)
    s = sim[rows, cols]
    row_alt = sim[rows].copy()
    row_alt[np.arange(len(rows)), cols] = -np.inf
    col_alt = sim[:, cols].T.copy()
    col_alt[np.arange(len(rows)), rows] = -np.inf
    alt = np.maximum(row_alt.max(axis=1, initial=-np.inf), col_alt.max(axis=1, initial=-np.inf))
    alt = np.where(np.isneginf(alt), 0.0, alt)
    margin = s - alt
    return np.maximum(s, 0.0) * np.tanh(np.maximum(margin, 0.0) / margin_scale)


@dataclass(frozen=True)
class MinedPairs:
    """Positive pairs over a batch of crops: global indices ``a``, ``b``, their ``similarity`` and ``reliability``."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    reliability: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def mine_pairs(
    embeddings: torch.Tensor,
    groups: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    reliability: str = "margin",
    margin_scale: float = 0.1,
    min_similarity: float | None = None,
) -> MinedPairs:
    """Match the crops of each frame pair in a batch: ``groups`` holds (indices in frame t, indices in frame t').

    ``embeddings`` (N, D) are unit rows (used without gradients); returns the matched pairs with
    indices into the batch, their cosine similarities and reliabilities (see :func:`pair_reliability`).
    """
    emb = embeddings.detach().float().cpu().numpy().astype(np.float64)
    a_all, b_all, s_all, r_all = [], [], [], []
    for ia, ib in groups:
        ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
        sim = emb[ia] @ emb[ib].T
        rows, cols = match_pairs(sim, min_similarity=min_similarity)
        a_all.append(ia[rows])
        b_all.append(ib[cols])
        s_all.append(sim[rows, cols])
        r_all.append(pair_reliability(sim, rows, cols, mode=reliability, margin_scale=margin_scale))
    return MinedPairs(_cat(a_all, np.int64), _cat(b_all, np.int64), _cat(s_all, np.float64), _cat(r_all, np.float64))


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
