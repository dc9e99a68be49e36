"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) with the semantics of the authors' reference ``re_ranking`` code.

Both entry points share one sparse implementation: the k-reciprocal neighbourhood vectors V are
kept as sparse rows (at most (k1+1)(round(k1/2)+2) entries each) and the Jaccard distance is
accumulated from V's columns, so the (Nq+Ng)^2 matrices of the reference are never built by
:func:`rerank_features`; :func:`rerank` builds only the dense input distance it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .distance import as_tensor

__all__ = ["rerank", "rerank_features"]

_ROWS = 1024  # rows per chunk for the neighbourhood steps
_PAIRS = 1 << 24  # (query nonzero, gallery nonzero) pairs per Jaccard step


def _bar(total: int, desc: str, progress: bool | None) -> Any:
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, desc=desc, unit="row", disable=not show, leave=False)


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if not isinstance(k1, int) or k1 < 1:
        raise ValueError(f"k1: expected a positive integer, got {k1!r}")
    if not isinstance(k2, int) or k2 < 1:
        raise ValueError(f"k2: expected a positive integer, got {k2!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")


def _expand(ptr: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR pointers ``ptr`` and segment ids ``seg``: (which input each output came from, entry index)."""
    counts = ptr[seg + 1] - ptr[seg]
    src = torch.repeat_interleave(torch.arange(len(seg), device=seg.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    entry = ptr[seg][src] + torch.arange(len(src), device=seg.device) - starts[src]
    return src, entry


def _csr_ptr(rows: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([rows.new_zeros(1), torch.cumsum(torch.bincount(rows, minlength=n), 0)])


def _neighbourhoods(
    ranks: torch.Tensor,
    k1: int,
    t_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    progress: bool | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse V (CSR pointers, columns, float32 values): the weighted k-reciprocal expansion sets.

    ``ranks`` (N, >= k1+1) are each row's nearest items, nearest first (itself included);
    ``t_at(rows, cols)`` gives the normalised squared distances T[rows, cols].
    """
    n = ranks.shape[0]
    kf = min(k1 + 1, ranks.shape[1])
    kh = min(int(np.around(k1 / 2.0)) + 1, ranks.shape[1])
    fwd, half = ranks[:, :kf], ranks[:, :kh]
    rows_out, cols_out, vals_out = [], [], []
    with _bar(n, "re-rank: neighbourhoods", progress) as bar:
        for s in range(0, n, _ROWS):
            idx = torch.arange(s, min(s + _ROWS, n))
            f = fwd[idx]                                              # (B, kf)
            recip = (fwd[f] == idx[:, None, None]).any(-1)            # i among its neighbours' k1+1
            cand = half[f]                                            # (B, kf, kh): C(c) before filtering
            cand_ok = (half[cand] == f[:, :, None, None]).any(-1)     # c among the kh of each element
            # |C(c) ∩ R(i)|: elements of C(c) that are k-reciprocal neighbours of i.
            in_r = ((cand[..., None] == f[:, None, None, :]) & recip[:, None, None, :]).any(-1)
            n_c = cand_ok.sum(-1).double()
            n_in = (in_r & cand_ok).sum(-1).double()
            take = recip & (n_in > (2.0 / 3) * n_c)
            members = torch.cat([
                torch.where(recip, f, n),
                torch.where(take[..., None] & cand_ok, cand, n).flatten(1),
            ], 1)
            members, _ = torch.sort(members, 1)
            dup = torch.zeros_like(members, dtype=torch.bool)
            dup[:, 1:] = members[:, 1:] == members[:, :-1]
            ok = (members < n) & ~dup
            r_loc, pos = ok.nonzero(as_tuple=True)
            cols = members[r_loc, pos]
            rows = idx[r_loc]
            w = torch.exp(-t_at(rows, cols))
            norm = torch.zeros(len(idx), dtype=w.dtype).index_add_(0, r_loc, w)
            rows_out.append(rows)
            cols_out.append(cols)
            vals_out.append(w / norm[r_loc])
            bar.update(len(idx))
    rows = torch.cat(rows_out)
    return _csr_ptr(rows, n), torch.cat(cols_out), torch.cat(vals_out)


def _query_expansion(ptr: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, ranks: torch.Tensor,
                     k2: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """V_qe[i] = mean of V over i's k2 nearest rows (itself included), sparse in and out."""
    n = ranks.shape[0]
    k2 = min(k2, ranks.shape[1])
    rows_out, cols_out, vals_out = [], [], []
    for s in range(0, n, _ROWS):
        idx = torch.arange(s, min(s + _ROWS, n))
        nb = ranks[idx, :k2].reshape(-1)
        src, entry = _expand(ptr, nb)
        row = idx.repeat_interleave(k2)[src]
        key = row * n + cols[entry]
        uniq, inv = torch.unique(key, return_inverse=True)
        acc = torch.zeros(len(uniq), dtype=vals.dtype).index_add_(0, inv, vals[entry])
        rows_out.append(uniq // n)
        cols_out.append(uniq % n)
        vals_out.append(acc / k2)
    rows = torch.cat(rows_out)
    return _csr_ptr(rows, n), torch.cat(cols_out), torch.cat(vals_out)


def _jaccard_mix(
    ptr: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    nq: int,
    original: Callable[[int, int], torch.Tensor],
    lambda_value: float,
    progress: bool | None,
) -> np.ndarray:
    """(1 - lambda) * Jaccard(V_q, V_g) + lambda * original distance, for all query-gallery pairs."""
    n = len(ptr) - 1
    ng = n - nq
    # Gallery part of V by column, to sum min(V[i, k], V[j, k]) over the columns k shared with query i.
    g_rows = torch.repeat_interleave(torch.arange(n), ptr[1:] - ptr[:-1])
    in_g = g_rows >= nq
    gr, gc, gv = g_rows[in_g] - nq, cols[in_g], vals[in_g]
    order = torch.argsort(gc, stable=True)
    gr, gc, gv = gr[order], gc[order], gv[order]
    col_ptr = _csr_ptr(gc, n)
    col_count = col_ptr[1:] - col_ptr[:-1]
    pairs_per_query = torch.zeros(nq, dtype=torch.int64).index_add_(
        0, g_rows[:ptr[nq]], col_count[cols[:ptr[nq]]])
    out = np.empty((nq, ng), dtype=np.float32)
    s = 0
    with _bar(nq, "re-rank: jaccard", progress) as bar:
        while s < nq:
            # As many queries as fit in the pair budget (at least one).
            cum = torch.cumsum(pairs_per_query[s:], 0)
            e = s + max(1, int(torch.searchsorted(cum, _PAIRS, right=True)))
            e = min(e, s + _ROWS, nq)
            a0, a1 = int(ptr[s]), int(ptr[e])
            q_row = g_rows[a0:a1] - s
            src, entry = _expand(col_ptr, cols[a0:a1])
            mins = torch.minimum(vals[a0:a1][src], gv[entry])
            acc = torch.zeros((e - s) * ng, dtype=torch.float32)
            acc.index_add_(0, q_row[src] * ng + gr[entry], mins)
            acc = acc.view(e - s, ng)
            jaccard = 1.0 - acc / (2.0 - acc)
            out[s:e] = (jaccard * (1.0 - lambda_value) + original(s, e) * lambda_value).numpy()
            bar.update(e - s)
            s = e
    return out


def _sorted_neighbours(t_rows: torch.Tensor, k: int) -> torch.Tensor:
    return torch.argsort(t_rows, dim=1, stable=True)[:, :k]


def rerank(
    q_g_dist: Any,
    q_q_dist: Any,
    g_g_dist: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    progress: bool | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranked query-gallery distances (Nq, Ng) from Euclidean distance matrices.

    Reference semantics (Zhong et al., CVPR 2017): distances are squared, each column of the
    (Nq+Ng)^2 matrix is divided by its maximum, k-reciprocal sets of size k1 are expanded by the
    round(k1/2)-reciprocal sets of their members that share more than 2/3 of their items, weighted
    by exp(-distance), averaged over the k2 nearest rows, and the Jaccard distance (min-sum form)
    is mixed with the normalised squared distance: (1 - lambda) * Jaccard + lambda * original.
    Neighbour ties are ranked by index.
    """
    _check_params(k1, k2, lambda_value)
    qg = as_tensor(q_g_dist, "q_g_dist", ndim=2, device="cpu")
    qq = as_tensor(q_q_dist, "q_q_dist", ndim=2, device="cpu")
    gg = as_tensor(g_g_dist, "g_g_dist", ndim=2, device="cpu")
    nq, ng = qg.shape
    if qq.shape != (nq, nq):
        raise ValueError(f"q_q_dist: expected shape {(nq, nq)} to match q_g_dist, got {tuple(qq.shape)}")
    if gg.shape != (ng, ng):
        raise ValueError(f"g_g_dist: expected shape {(ng, ng)} to match q_g_dist, got {tuple(gg.shape)}")
    full = torch.cat([torch.cat([qq, qg], 1), torch.cat([qg.T, gg], 1)], 0)
    if not torch.is_floating_point(full):
        full = full.double()
    # Squared in the input's precision, then float32, as the reference does.
    d2 = (full * full).float()
    t = (d2 / d2.max(0).values).T.contiguous()
    del full, d2
    k = min(max(k1 + 1, k2), t.shape[0])
    ranks = torch.cat([_sorted_neighbours(t[s:s + _ROWS], k) for s in range(0, t.shape[0], _ROWS)])
    return _rerank_core(ranks, nq, k1, k2, lambda_value,
                        lambda r, c: t[r, c], lambda s, e: t[s:e, nq:], progress)


def _rerank_core(ranks: torch.Tensor, nq: int, k1: int, k2: int, lambda_value: float,
                 t_at: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 original: Callable[[int, int], torch.Tensor], progress: bool | None) -> np.ndarray:
    ptr, cols, vals = _neighbourhoods(ranks, k1, t_at, progress)
    if k2 != 1:
        ptr, cols, vals = _query_expansion(ptr, cols, vals, ranks, k2)
    return _jaccard_mix(ptr, cols, vals, nq, original, float(lambda_value), progress)


def rerank_features(
    q_feats: Any,
    g_feats: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    chunk_size: int = 1024,
    progress: bool | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranking from features, equal to ``rerank`` on their Euclidean distances.

    Never builds an (Nq+Ng)^2 matrix: one chunked pass finds each item's k1+1 nearest items and its
    largest distance (the column maximum of the reference), V stays sparse, and only the (Nq, Ng)
    result is dense. Features are compared in float32 on the CPU.
    """
    _check_params(k1, k2, lambda_value)
    q = as_tensor(q_feats, "q_feats", ndim=2, device="cpu", dtype=torch.float32)
    g = as_tensor(g_feats, "g_feats", ndim=2, device="cpu", dtype=torch.float32)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"q_feats and g_feats differ in dimension: {q.shape[1]} vs {g.shape[1]}")
    x = torch.cat([q, g], 0)
    nq, n = q.shape[0], x.shape[0]
    sq = (x * x).sum(1)

    def d2_block(rows: slice | torch.Tensor, cols: slice) -> torch.Tensor:
        return (sq[rows][:, None] + sq[cols][None, :] - 2.0 * (x[rows] @ x[cols].T)).clamp_min_(0)

    k = min(max(k1 + 1, k2), n)
    ranks = torch.empty(n, k, dtype=torch.int64)
    row_max = torch.empty(n, dtype=torch.float32)
    col_step = max(k, (1 << 24) // chunk_size)
    with _bar(n, "re-rank: nearest neighbours", progress) as bar:
        for s in range(0, n, chunk_size):
            rows = slice(s, min(s + chunk_size, n))
            best_d = best_i = None
            m = None
            for c in range(0, n, col_step):
                block = d2_block(rows, slice(c, min(c + col_step, n)))
                m = block.max(1).values if m is None else torch.maximum(m, block.max(1).values)
                d, i = torch.topk(block, min(k, block.shape[1]), dim=1, largest=False, sorted=False)
                i = i + c
                if best_d is not None:
                    d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
                    d, sel = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False, sorted=False)
                    i = i.gather(1, sel)
                best_d, best_i = d, i
            # Nearest first, ties by index (two stable sorts), as in rerank's dense ranking.
            o = torch.argsort(best_i, dim=1, stable=True)
            best_d, best_i = best_d.gather(1, o), best_i.gather(1, o)
            ranks[rows] = best_i.gather(1, torch.argsort(best_d, dim=1, stable=True))
            row_max[rows] = m
            bar.update(rows.stop - rows.start)

    def t_at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        diff = sq[r] + sq[c] - 2.0 * (x[r] * x[c]).sum(1)
        return diff.clamp_min_(0) / row_max[r]

    def original(s: int, e: int) -> torch.Tensor:
        return d2_block(slice(s, e), slice(nq, n)) / row_max[s:e, None]

    return _rerank_core(ranks, nq, k1, k2, lambda_value, t_at, original, progress)
