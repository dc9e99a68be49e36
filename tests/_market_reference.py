"""An independent reference for ranking metrics: the Market-1501 protocol, one query at a time."""

from __future__ import annotations

import numpy as np


def naive_market_metrics(q, g, qp, gp, qc, gc, dist=None) -> tuple[float, float, int]:
    """(rank-1, mAP, num_valid) on float64 cosine distances (or ``dist``), written without isr_reid.retrieval.

    Per query: gallery items with the same pid and camera are ignored; queries left with no true
    match are skipped and not counted in num_valid.
    """
    d = 1 - q.astype(np.float64) @ g.astype(np.float64).T if dist is None else dist
    r1, aps = [], []
    for i in range(len(q)):
        order = np.argsort(d[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        hits = (gp[order] == qp[i])[keep]
        if not hits.any():
            continue
        r1.append(float(hits[0]))
        pos = np.flatnonzero(hits)
        aps.append(np.mean((np.arange(len(pos)) + 1) / (pos + 1)))
    return float(np.mean(r1)), float(np.mean(aps)), len(aps)
