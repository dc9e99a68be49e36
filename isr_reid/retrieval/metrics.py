"""Ranking metrics for ReID: CMC, mAP and mINP under the Market-1501 and CUHK03 single-shot protocols.

The numbers are those of the reference ``eval_func`` of torchreid / fast-reid (Zheng et al.,
"Scalable Person Re-identification: A Benchmark", ICCV 2015 for the protocol; Ye et al., "Deep
Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021 for mINP), computed for
a chunk of queries at a time with tensor ops instead of a per-query loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .distance import as_tensor

__all__ = ["PROTOCOLS", "RankResult", "evaluate_rank"]

PROTOCOLS = ("market1501", "cuhk03")
# Query rows per chunk are chosen so that one chunk holds about this many (query, gallery) cells;
# each cell costs ~40 bytes of temporaries (id masks, int64 binary-search positions; a sort order for cuhk03).
_CELLS_PER_CHUNK = 1 << 22


@dataclass(frozen=True)
class RankResult:
    """CMC curve (length max_rank, cmc[r] = fraction of valid queries matched within rank r+1), mAP, mINP."""

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int

    def summary(self) -> dict[str, float]:
        """R1, R5, R10 (where the curve is long enough), mAP and mINP as plain floats."""
        out = {f"R{r}": float(self.cmc[r - 1]) for r in (1, 5, 10) if r <= len(self.cmc)}
        out.update(mAP=self.mAP, mINP=self.mINP)
        return out


def _ids(x: Any, name: str, n: int, device: torch.device) -> torch.Tensor:
    t = as_tensor(x, name, ndim=1, device=device)
    if torch.is_floating_point(t) or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer ids, got dtype {t.dtype}")
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected {n} entries to match distmat, got {t.shape[0]}")
    return t.long()


def _positive_ranks(d: torch.Tensor, gp: torch.Tensor, gc: torch.Tensor, qp: torch.Tensor,
                    qc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered-ranking positions of each query's true matches without sorting the gallery.

    The few true matches of a row are sorted by (distance, gallery index); every other kept item is
    placed among them by binary search, and the count of those before the k-th match gives its rank.
    """
    rows, dev = d.shape[0], d.device
    match = gp[None, :] == qp[:, None]
    hits = match & (gc[None, :] != qc[:, None])
    negatives = ~match
    n_rel = hits.sum(1)
    p = max(1, int(n_rel.max()))
    r, c = hits.nonzero(as_tuple=True)  # row-major: gallery index ascending within a row
    slot = torch.arange(len(r), device=dev) - (torch.cumsum(n_rel, 0) - n_rel)[r]
    pos_d = torch.full((rows, p), float("inf"), dtype=d.dtype, device=dev)
    pos_i = torch.full((rows, p), d.shape[1], dtype=torch.int64, device=dev)
    pos_d[r, slot] = d[r, c]
    pos_i[r, slot] = c
    order = torch.argsort(pos_d, dim=1, stable=True)  # ties keep gallery index order
    pos_d, pos_i = pos_d.gather(1, order), pos_i.gather(1, order)
    # before[b, j]: how many true matches precede gallery item j (distance, then index).
    before = torch.searchsorted(pos_d, d.contiguous(), right=False)
    # An item whose distance equals a true match's comes after it only if its index is larger.
    tied = negatives & (before < p) & (pos_d.gather(1, before.clamp(max=p - 1)) == d)
    tb, tj = tied.nonzero(as_tuple=True)
    if len(tb):
        k = torch.arange(p, device=dev)
        step = max(1, (1 << 22) // p)
        for s in range(0, len(tb), step):
            b, j = tb[s:s + step], tj[s:s + step]
            same = (k[None] >= before[b, j][:, None]) & (pos_d[b] == d[b, j][:, None]) & (pos_i[b] < j[:, None])
            before[b, j] += same.sum(1)
    counts = torch.zeros(rows, p + 2, dtype=torch.int64, device=dev)
    counts.scatter_add_(1, torch.where(negatives, before, p + 1), torch.ones_like(before))
    negatives_before = torch.cumsum(counts[:, :p], 1)
    ranks = torch.arange(p, device=dev)[None, :] + negatives_before
    return ranks, n_rel


def _single_shot_counts(d: torch.Tensor, gp: torch.Tensor, gc: torch.Tensor, qp: torch.Tensor, qc: torch.Tensor,
                        valid: torch.Tensor, g_group: torch.Tensor, n_groups: int, rng: np.random.Generator | None,
                        num_repeats: int, max_rank: int) -> torch.Tensor:
    """Sum over valid queries of the CUHK03 single-shot CMC, averaged over ``num_repeats`` draws."""
    dev, (rows, ng) = d.device, d.shape
    order = torch.argsort(d, dim=1, stable=True)
    match = gp[order] == qp[:, None]
    keep = ~(match & (gc[order] == qc[:, None]))
    hits = match & keep
    groups = g_group[order]
    assert rng is not None
    single = torch.zeros(max_rank + 1, dtype=torch.float64, device=dev)
    for _ in range(num_repeats):
        keys = torch.from_numpy(rng.random((rows, ng))).to(dev).gather(1, order)
        keys = torch.where(keep, keys, -1.0)
        best = torch.full((rows, n_groups), -2.0, dtype=keys.dtype, device=dev)
        best.scatter_reduce_(1, groups, keys, reduce="amax")
        chosen = keep & (keys == best.gather(1, groups))
        rank = torch.where(chosen & hits, chosen.cumsum(1) - 1, ng).min(1).values[valid]
        single += torch.bincount(rank.clamp(max=max_rank), minlength=max_rank + 1).double()
    return single[:max_rank] / num_repeats


def _raise_nan_rows(dist: torch.Tensor, start: int, step: int, shown: int = 10) -> None:
    """Name every query row (from ``start`` on, scanned ``step`` rows at a time) that holds a NaN, with its count."""
    counts = torch.cat([torch.isnan(dist[s:s + step]).sum(1) for s in range(start, dist.shape[0], step)])
    rows = counts.nonzero()[:, 0]
    parts = [f"{start + int(r)} ({int(counts[r])} of {dist.shape[1]} columns)" for r in rows[:shown]]
    more = f" and {len(rows) - shown} more rows" if len(rows) > shown else ""
    noun = "row" if len(rows) == 1 else "rows"
    raise ValueError(f"distmat: NaN distances in query {noun} {', '.join(parts)}{more}")


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    protocol: str = "market1501",
    num_repeats: int = 10,
    seed: int = 0,
    chunk_size: int | None = None,
) -> RankResult:
    """CMC, mAP and mINP of a (Nq, Ng) distance matrix (smaller = more similar).

    Market-1501 protocol: for each query, gallery items with the query's pid AND camid are
    ignored, and a query with no remaining true match is skipped (not counted in ``num_valid``).
    AP is the mean of the precision at each true match; INP = matches / (rank of the last match).
    The CMC of a query is padded with its last value when fewer than ``max_rank`` items remain.
    Ties in distance are ranked by gallery index (a stable sort).

    ``protocol="cuhk03"``: the single-shot CMC of the CUHK03 reference: in each of ``num_repeats``
    draws one remaining gallery item per identity is kept at random and the CMC is averaged over
    draws (AP and INP use every item, as the reference does). The draw for repeat ``r`` keeps, per
    (query, identity), the item with the largest key of ``rng.random((rows, Ng))`` taken from
    ``numpy.random.default_rng(seed)``, drawn for each query chunk, then each repeat, in order.
    A distance matrix on a GPU is evaluated there.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(max_rank, int) or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    dist = as_tensor(distmat, "distmat", ndim=2)
    nq, ng = dist.shape
    if ng == 0:
        raise ValueError("distmat: the gallery is empty (shape has 0 columns)")
    dev = dist.device
    qp, gp = _ids(q_pids, "q_pids", nq, dev), _ids(g_pids, "g_pids", ng, dev)
    qc, gc = _ids(q_camids, "q_camids", nq, dev), _ids(g_camids, "g_camids", ng, dev)
    g_group, n_groups, rng = gp, 0, None
    if protocol == "cuhk03":
        if num_repeats < 1:
            raise ValueError(f"num_repeats: expected >= 1, got {num_repeats}")
        _, g_group = torch.unique(gp, return_inverse=True)
        n_groups = int(g_group.max()) + 1
        rng = np.random.default_rng(seed)
    step = chunk_size or max(1, _CELLS_PER_CHUNK // ng)

    cmc_counts = torch.zeros(max_rank, dtype=torch.float64, device=dev)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for s in range(0, nq, step):
        d = dist[s:s + step]
        if not torch.is_floating_point(d):
            d = d.double()
        if bool(torch.isnan(d).any()):
            _raise_nan_rows(dist, s, step)
        ranks, n_rel = _positive_ranks(d, gp, gc, qp[s:s + step], qc[s:s + step])
        valid = n_rel > 0
        if not bool(valid.any()):
            continue
        ranks, n_rel = ranks[valid], n_rel[valid]
        # ranks: (V, P) 0-based positions of each query's true matches in its filtered ranking,
        # ascending, padded past n_rel.
        k = torch.arange(ranks.shape[1], device=dev)
        real = k[None, :] < n_rel[:, None]
        precision = torch.where(real, (k[None, :] + 1).double() / (ranks + 1).double(), 0.0)
        ap_sum += float((precision.sum(1) / n_rel.double()).sum())
        last = ranks.gather(1, (n_rel - 1)[:, None])[:, 0]
        inp_sum += float((n_rel.double() / (last + 1).double()).sum())
        num_valid += int(valid.sum())

        if protocol == "market1501":
            first = ranks[:, 0]
            cmc_counts += torch.bincount(first.clamp(max=max_rank), minlength=max_rank + 1)[:max_rank].double()
        else:
            cmc_counts += _single_shot_counts(d, gp, gc, qp[s:s + step], qc[s:s + step], valid, g_group,
                                              n_groups, rng, num_repeats, max_rank)

    if num_valid == 0:
        raise ValueError("no query has a true match left in the gallery (check q_pids/g_pids and the camera ids)")
    cmc = (cmc_counts.cumsum(0) / num_valid).cpu().numpy()
    return RankResult(cmc=cmc, mAP=ap_sum / num_valid, mINP=inp_sum / num_valid, num_valid=num_valid)
