"""rerank / rerank_features against a per-row loop of the reference k-reciprocal algorithm."""

from __future__ import annotations

import numpy as np
import pytest

from isr_reid.retrieval import pairwise_distance, rerank, rerank_features


def _reference_rerank(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. CVPR 2017 as in the authors' code, one row at a time (float32 like the reference)."""
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]])
    d = (d ** 2).astype(np.float32)
    t = (d / d.max(axis=0)).T
    n = t.shape[0]
    rank = np.argsort(t, axis=1, kind="stable")

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        return np.array([c for c in fwd if i in rank[c, : k + 1]], dtype=np.int64)

    v = np.zeros((n, n), np.float32)
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        r_i = reciprocal(i, k1)
        expanded = set(r_i.tolist())
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(set(r_c.tolist()) & set(r_i.tolist())) > 2.0 / 3 * len(r_c):
                expanded |= set(r_c.tolist())
        idx = np.array(sorted(expanded))
        w = np.exp(-t[i, idx])
        v[i, idx] = w / w.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)]).astype(np.float32)
    out = np.zeros((nq, n - nq), np.float32)
    for i in range(nq):
        for j in range(nq, n):
            s = np.minimum(v[i], v[j]).sum()
            out[i, j - nq] = 1 - s / (2 - s)
    return out * (1 - lam) + t[:nq, nq:] * lam


def _features(rng, nq, ng, dim=6):
    q = rng.standard_normal((nq, dim))
    g = rng.standard_normal((ng, dim))
    return q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)


def _euclid(a, b):
    return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))


@pytest.mark.parametrize(("k1", "k2", "lam"), [(20, 6, 0.3), (5, 1, 0.0), (7, 3, 1.0)])
def test_rerank_matches_reference(rng, k1, k2, lam):
    q, g = _features(rng, 9, 31)
    qg, qq, gg = _euclid(q, g), _euclid(q, q), _euclid(g, g)
    ref = _reference_rerank(qg, qq, gg, k1, k2, lam)
    out = rerank(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam, progress=False)
    assert out.shape == (9, 31) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_rerank_features_equals_dense(rng):
    q, g = _features(rng, 11, 40)
    dense = rerank(_euclid(q, g), _euclid(q, q), _euclid(g, g), progress=False)
    sparse = rerank_features(q.astype(np.float32), g.astype(np.float32), chunk_size=8, progress=False)
    np.testing.assert_allclose(sparse, dense, atol=1e-5)
    # Non-unit features too (the column maximum differs from row to row).
    q2, g2 = q * rng.uniform(0.5, 2, (11, 1)), g * rng.uniform(0.5, 2, (40, 1))
    ref = _reference_rerank(_euclid(q2, g2), _euclid(q2, q2), _euclid(g2, g2), 6, 3, 0.3)
    np.testing.assert_allclose(rerank_features(q2, g2, k1=6, k2=3, progress=False), ref, atol=1e-5)


def test_rerank_torch_distance_inputs(rng):
    q, g = _features(rng, 5, 12)
    qg = pairwise_distance(q, g, "euclidean")
    out = rerank(qg, pairwise_distance(q, q, "euclidean"), pairwise_distance(g, g, "euclidean"), k1=4, k2=2)
    ref = _reference_rerank(_euclid(q, g), _euclid(q, q), _euclid(g, g), 4, 2, 0.3)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_rerank_bad_inputs(rng):
    with pytest.raises(ValueError, match="g_g_dist"):
        rerank(np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="k1"):
        rerank(np.ones((2, 3)), np.ones((2, 2)), np.ones((3, 3)), k1=0)
    with pytest.raises(ValueError, match="dimension"):
        rerank_features(np.ones((2, 3)), np.ones((4, 5)))


def test_rerank_small_chunks_same_result(rng, monkeypatch):
    import isr_reid.retrieval.reranking as rr

    q, g = _features(rng, 10, 30)
    args = (_euclid(q, g), _euclid(q, q), _euclid(g, g))
    whole = rerank(*args, k1=6, k2=3, progress=False)
    monkeypatch.setattr(rr, "_ROWS", 3)
    monkeypatch.setattr(rr, "_PAIRS", 40)  # forces one query per Jaccard step, and a ragged split
    np.testing.assert_allclose(rerank(*args, k1=6, k2=3, progress=False), whole, atol=1e-6)
    ref = _reference_rerank(*args, 6, 3, 0.3)
    np.testing.assert_allclose(rerank_features(q, g, k1=6, k2=3, chunk_size=4, progress=False), ref, atol=1e-5)
