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
    monkeypatch.setattr(rr, "_BLOCK", 7 * 40)  # ranking chunks of 7 rows: one spans queries and gallery
    np.testing.assert_allclose(rerank(*args, k1=6, k2=3, progress=False), whole, atol=1e-6)
    ref = _reference_rerank(*args, 6, 3, 0.3)
    np.testing.assert_allclose(rerank_features(q, g, k1=6, k2=3, chunk_size=4, progress=False), ref, atol=1e-5)


def test_rerank_reads_columns_of_asymmetric_inputs(rng):
    """The reference ranks row i of the transposed, column-normalised matrix: column i of the inputs."""
    q, g = _features(rng, 7, 25)
    qg, qq, gg = _euclid(q, g), _euclid(q, q), _euclid(g, g)
    qq = qq + rng.uniform(0, 0.3, qq.shape)
    gg = gg + rng.uniform(0, 0.3, gg.shape)
    ref = _reference_rerank(qg, qq, gg, 6, 3, 0.3)
    np.testing.assert_allclose(rerank(qg, qq, gg, k1=6, k2=3, progress=False), ref, atol=1e-5)


@pytest.mark.parametrize(("which", "entry", "value"), [(0, (0, 3), np.nan), (1, (4, 1), np.inf), (2, (2, 5), np.nan)])
def test_rerank_non_finite_input_names_matrix_and_entry(rng, which, entry, value):
    q, g = _features(rng, 5, 12)
    args = [_euclid(q, g), _euclid(q, q), _euclid(g, g)]
    args[which][entry] = value
    name = ("q_g_dist", "q_q_dist", "g_g_dist")[which]
    with pytest.raises(ValueError, match=rf"{name}: 1 non-finite entries: \[{entry[0]}, {entry[1]}\] = {value}"):
        rerank(*args, progress=False)
    args[which][entry[1], entry[0]] = value
    args[which][0, 0] = -np.inf
    with pytest.raises(ValueError, match=rf"{name}: 3 non-finite entries: \[0, 0\] = -inf"):
        rerank(*args, progress=False)


def test_rerank_features_non_finite_input(rng):
    q, g = _features(rng, 4, 9)
    g[6, 2] = np.nan
    with pytest.raises(ValueError, match=r"g_feats: 1 non-finite values: \[6, 2\] = nan"):
        rerank_features(q, g, progress=False)
    with pytest.raises(ValueError, match=r"q_feats: 1 non-finite values: \[1, 0\] = inf"):
        rerank_features(np.where(np.arange(4)[:, None] * 10 + np.arange(6) == 10, np.inf, q), g[:6], progress=False)


def _near_duplicates(rng, ids=6, tracklets=3, crops=24, eps=1e-3, dim=128):
    """Video-like embeddings: per identity, tracklets (one camera each) of near-identical crops."""
    def unit(v):
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    centres = rng.standard_normal((ids, dim))
    views = unit(np.repeat(centres, tracklets, 0) + 3.0 * rng.standard_normal((ids * tracklets, dim)))
    x = unit(np.repeat(views, crops, 0) + eps / np.sqrt(dim) * rng.standard_normal((len(views) * crops, dim)))
    pids = np.repeat(np.arange(ids), tracklets * crops)
    cams = np.repeat(rng.integers(0, 3, ids * tracklets), crops)
    qi = np.arange(0, len(x), crops)  # the first crop of each tracklet queries the rest
    gi = np.setdiff1d(np.arange(len(x)), qi)
    return x.astype(np.float32), pids, cams, qi, gi


def test_rerank_features_equals_rerank_on_float64_distances_for_near_duplicates(rng):
    """Crops 1e-3 apart: float32 ||a||^2 + ||b||^2 - 2ab loses their order; rerank_features must not."""
    from isr_reid.retrieval import evaluate_rank

    x, pids, cams, qi, gi = _near_duplicates(rng)
    q, g = x[qi], x[gi]

    def exact(a, b):  # float64 differences, no expansion
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    reference = rerank(exact(q, g), exact(q, q), exact(g, g), progress=False)
    out = rerank_features(q, g, progress=False)
    np.testing.assert_allclose(out, reference, atol=1e-6, rtol=0)

    def m_ap(d):
        return evaluate_rank(d, pids[qi], pids[gi], cams[qi], cams[gi]).mAP

    assert abs(m_ap(out) - m_ap(reference)) < 1e-6
    # the case is one where the precision matters: float32 distances by the expansion change the result
    f32 = [pairwise_distance(a.astype(np.float32), b.astype(np.float32), "euclidean") for a, b in ((q, g), (q, q), (g, g))]
    assert np.abs(rerank(*f32, progress=False) - reference).max() > 1e-2


def test_rerank_features_clusters_beyond_the_search_precision(rng):
    """50 crops 1e-6 apart (below float32 resolution of ||a||^2 + ||b||^2 - 2ab) and 30 exact copies:
    more near-ties than the search keeps, so rows are ranked again from exact distances."""
    base = rng.standard_normal((4, 16))
    scale = np.repeat([1e-6, 1e-7, 0.0, 1e-3], [50, 10, 30, 20])[:, None]
    x = np.repeat(base, [50, 10, 30, 20], 0) + scale * rng.standard_normal((110, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)[rng.permutation(110)]
    q, g = x[:15], x[15:]

    def exact(a, b):
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    reference = rerank(exact(q, g), exact(q, q), exact(g, g), progress=False)
    np.testing.assert_allclose(rerank_features(q, g, progress=False), reference, atol=1e-6, rtol=0)
