"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) with the semantics of the authors' reference ``re_ranking`` code.

Both entry points share one sparse implementation: the k-reciprocal neighbourhood vectors V are
kept as sparse rows (at most (k1+1)(round(k1/2)+2) entries each) and the Jaccard distance is
accumulated from V's columns, so neither builds the (Nq+Ng)^2 matrices of the reference:
:func:`rerank` reads the blocks of the three distance matrices it is given, a chunk of rows at a
time, and :func:`rerank_features` computes the distances it needs from the features.
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
_BLOCK = 1 << 24  # float32 elements per (rows, Nq+Ng) block of rerank's ranking pass


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


def _check_finite(t: torch.Tensor, name: str, what: str = "entries") -> None:
    """Raise naming ``name`` and its first non-finite entries (one NaN would spread to the whole result)."""
    bad = []
    count = 0
    step = max(1, (1 << 22) // max(1, t.shape[1] if t.ndim == 2 else 1))
    for s in range(0, t.shape[0], step):
        mask = ~torch.isfinite(t[s:s + step])
        if mask.any():
            count += int(mask.sum())
            if len(bad) < 5:
                rows, cols = mask.nonzero(as_tuple=True)
                bad += [(s + int(r), int(c), float(t[s + int(r), int(c)])) for r, c in zip(rows[:5], cols[:5])]
    if count:
        shown = ", ".join(f"[{r}, {c}] = {v}" for r, c, v in bad[:5])
        more = f" and {count - 5} more" if count > 5 else ""
        raise ValueError(f"{name}: {count} non-finite {what}: {shown}{more}")


def _chunk_rows(n: int) -> int:
    """Rows per chunk of an (rows, n) float32 block: at most _ROWS, and about 2^24 elements."""
    return max(1, min(_ROWS, _BLOCK // max(1, n)))


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
    Neighbour ties are ranked by index. The (Nq+Ng)^2 matrix is never built: it is read block by
    block from the three inputs, so memory beyond the inputs and the (Nq, Ng) result stays small.
    A non-finite input entry raises ``ValueError`` naming the matrix and the entries.
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
    # The reference concatenates the blocks (one common dtype), squares in it, then casts to float32.
    dtype = torch.promote_types(torch.promote_types(qg.dtype, qq.dtype), gg.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    for t, name in ((qg, "q_g_dist"), (qq, "q_q_dist"), (gg, "g_g_dist")):
        if t.is_floating_point():
            _check_finite(t, name)
    n = nq + ng

    def squared(block: torch.Tensor) -> torch.Tensor:
        block = block.to(dtype)
        return (block * block).float()

    # Row i of T is column i of the full matrix [[qq, qg], [qg^T, gg]], squared, over its maximum.
    col_max = torch.empty(n, dtype=torch.float32)
    k = min(max(k1 + 1, k2), n)
    ranks = torch.empty(n, k, dtype=torch.int64)
    step = _chunk_rows(n)
    for s in range(0, n, step):
        e = min(s + step, n)
        if e <= nq:
            rows = torch.cat([squared(qq[:, s:e].T), squared(qg[s:e])], 1)
        elif s >= nq:
            rows = torch.cat([squared(qg[:, s - nq:e - nq].T), squared(gg[:, s - nq:e - nq].T)], 1)
        else:  # a chunk across the boundary: its query part, then its gallery part
            rows = torch.cat([torch.cat([squared(qq[:, s:nq].T), squared(qg[s:nq])], 1),
                              torch.cat([squared(qg[:, :e - nq].T), squared(gg[:, :e - nq].T)], 1)], 0)
        col_max[s:e] = rows.max(1).values
        rows /= col_max[s:e, None]
        ranks[s:e] = _sorted_neighbours(rows, k)
        del rows

    def t_at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """T[r, c] = full[c, r]^2 / col_max[r], gathered from the blocks."""
        out = torch.empty(len(r), dtype=torch.float32)
        rq, cq = r < nq, c < nq
        for mask, src, a, b in ((cq & rq, qq, c, r), (cq & ~rq, qg, c, r - nq),
                                (~cq & rq, qg, r, c - nq), (~cq & ~rq, gg, c - nq, r - nq)):
            if mask.any():
                out[mask] = squared(src[a[mask], b[mask]])
        return out / col_max[r]

    return _rerank_core(ranks, nq, k1, k2, lambda_value, t_at,
                        lambda s, e: squared(qg[s:e]) / col_max[s:e, None], progress)


def _sorted_neighbours(t_rows: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k smallest entries, nearest first, ties by index: a stable argsort's first k, without the sort."""
    n = t_rows.shape[1]
    if k >= n or torch.isnan(t_rows).any():
        return torch.argsort(t_rows, dim=1, stable=True)[:, :k]
    kth = torch.topk(t_rows, k, dim=1, largest=False, sorted=False).values.max(1, keepdim=True).values
    less = t_rows < kth
    tied = t_rows == kth
    # all entries below the k-th value, then the lowest-index entries equal to it, k per row
    take = less | (tied & (torch.cumsum(tied, 1, dtype=torch.int32) <= k - less.sum(1, keepdim=True)))
    cols = take.nonzero()[:, 1].view(-1, k)  # row-major: each row's columns in index order
    return cols.gather(1, torch.argsort(t_rows.gather(1, cols), dim=1, stable=True))


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
    """k-reciprocal re-ranking from features: ``rerank`` on their Euclidean distances, without (Nq+Ng)^2 matrices.

    Equal to ``rerank(d(q, g), d(q, q), d(g, g))`` with the distances computed in float64
    (``sqrt(sum((a - b)^2))``), not to ``rerank`` on float32 distances from the expansion
    ||a||^2 + ||b||^2 - 2ab, which cancels catastrophically between near-duplicate crops. One chunked
    pass (float32 matmuls for float32 features, else float64) keeps each item's 2(k1+1) candidate
    neighbours and its farthest item (the column maximum of the reference); every squared distance
    that decides a neighbour set or a weight is then recomputed from the features' float64
    differences and cast to float32 as ``rerank`` does. A row whose candidates cannot be proved to
    hold its true k1+1 nearest (by the search's rounding-error bound) is ranked from exact distances.
    The query-gallery term uses float64 distances. V stays sparse and only the (Nq, Ng) result is
    dense. Runs on the CPU. A non-finite feature raises ``ValueError`` naming it.
    """
    _check_params(k1, k2, lambda_value)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    q = as_tensor(q_feats, "q_feats", ndim=2, device="cpu")
    g = as_tensor(g_feats, "g_feats", ndim=2, device="cpu")
    # The neighbour search may run in float32 (4x faster matmuls) when the features are float32 and
    # float32 matmuls are exact-precision ones; its error bound below keeps the result exact.
    search_dtype = torch.float32 if (q.dtype == g.dtype == torch.float32
                                     and torch.get_float32_matmul_precision() == "highest") else torch.float64
    q, g = q.to(torch.float64), g.to(torch.float64)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"q_feats and g_feats differ in dimension: {q.shape[1]} vs {g.shape[1]}")
    _check_finite(q, "q_feats", "values")
    _check_finite(g, "g_feats", "values")
    x = torch.cat([q, g], 0)
    nq, n, dim = q.shape[0], x.shape[0], x.shape[1]
    sq = (x * x).sum(1)
    xs, sqs = x.to(search_dtype), sq.to(search_dtype)
    # |error| of sq_i + sq_j - 2 x_i.x_j with unit roundoff u is below (2 dim + 4) u (sq_i + sq_j)
    # (Higham, Accuracy and Stability of Numerical Algorithms, 2002, section 3.1); twice that, for margin
    err_scale = (dim + 8) * 4.0 * torch.finfo(search_dtype).eps
    piece = max(1, (1 << 18) // max(1, dim))  # pairs per exact-difference step (2 MiB of float64: stays in cache)

    def d2_est(rows: slice, cols: slice, a: torch.Tensor = xs, a_sq: torch.Tensor = sqs) -> torch.Tensor:
        return (a_sq[rows][:, None] + a_sq[cols][None, :] - 2.0 * (a[rows] @ a[cols].T)).clamp_min_(0)

    def d2_exact(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """sum((x[r] - x[c])^2) in float64, cast to float32 (rerank's squared distance)."""
        out = torch.empty(len(r), dtype=torch.float32)
        for s in range(0, len(r), piece):
            d = x.index_select(0, r[s:s + piece])
            d -= x.index_select(0, c[s:s + piece])
            out[s:s + piece] = d.mul_(d).sum(1)
        return out

    k = min(max(k1 + 1, k2), n)
    kc = min(2 * k, n)  # candidates kept by the float64 search, re-ranked by exact distances
    ranks = torch.empty(n, k, dtype=torch.int64)
    row_max = torch.empty(n, dtype=torch.float32)
    col_step = max(kc, (1 << 24) // chunk_size)
    with _bar(n, "re-rank: nearest neighbours", progress) as bar:
        for s in range(0, n, chunk_size):
            rows = slice(s, min(s + chunk_size, n))
            b = rows.stop - rows.start
            best_d = best_i = None
            max_d = max_i = None
            for c in range(0, n, col_step):
                block = d2_est(rows, slice(c, min(c + col_step, n)))
                m, mi = block.max(1)
                if max_d is None:
                    max_d, max_i = m, mi + c
                else:
                    better = m > max_d
                    max_d, max_i = torch.where(better, m, max_d), torch.where(better, mi + c, max_i)
                d, i = torch.topk(block, min(kc, block.shape[1]), dim=1, largest=False, sorted=False)
                i = i + c
                if best_d is not None:
                    d, i = torch.cat([best_d, d], 1), torch.cat([best_i, i], 1)
                    d, sel = torch.topk(d, min(kc, d.shape[1]), dim=1, largest=False, sorted=False)
                    i = i.gather(1, sel)
                best_d, best_i = d, i
            row_ids = torch.arange(rows.start, rows.stop)
            row_max[rows] = d2_exact(row_ids, max_i)
            t = d2_exact(row_ids.repeat_interleave(kc), best_i.reshape(-1)).view(b, kc) / row_max[rows, None]
            # Nearest first, ties by index (two stable sorts), as in rerank's dense ranking.
            o = torch.argsort(best_i, dim=1, stable=True)
            t, cand = t.gather(1, o), best_i.gather(1, o)
            o = torch.argsort(t, dim=1, stable=True)
            t, cand = t.gather(1, o), cand.gather(1, o)
            ranks[rows] = cand[:, :k]
            if kc < n:
                # Items left out of the search have an estimated distance >= the largest kept one: safe
                # when even its lower bound sorts after the k-th kept item; otherwise rank the row exactly.
                bound = err_scale * (sq[rows] + sq.max())
                low = (best_d.max(1).values.double() - bound).clamp_min(0).float() / row_max[rows]
                for j in torch.nonzero(low <= t[:, k - 1]).flatten().tolist():
                    i = rows.start + j
                    full = d2_exact(torch.full((n,), i), torch.arange(n)) / row_max[i]
                    ranks[i] = torch.argsort(full, stable=True)[:k]
            bar.update(b)

    def t_at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return d2_exact(r, c) / row_max[r]

    def original(s: int, e: int) -> torch.Tensor:
        out = torch.empty((e - s, n - nq), dtype=torch.float32)
        step = max(1, (1 << 23) // (e - s))
        for c in range(nq, n, step):
            out[:, c - nq:c - nq + step] = d2_est(slice(s, e), slice(c, min(c + step, n)), x, sq).float()
        return out / row_max[s:e, None]

    return _rerank_core(ranks, nq, k1, k2, lambda_value, t_at, original, progress)
