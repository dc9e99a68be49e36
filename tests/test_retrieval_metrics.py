"""evaluate_rank against a naive per-query loop (the torchreid / fast-reid eval_func semantics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_reid.retrieval import evaluate_rank, pairwise_distance, topk


def _reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, keys=None):
    """Per-query loop: Market-1501 protocol; with ``keys`` (repeats, Nq, Ng) the CUHK03 single-shot CMC."""
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        remove = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        keep = ~remove
        raw = (g_pids[order] == q_pids[i])[keep].astype(np.int64)
        if raw.sum() == 0:
            continue
        if keys is None:
            cmc = np.minimum(raw.cumsum(), 1).astype(np.float64)
        else:
            kept_pids = g_pids[order][keep]
            kept_keys = keys[:, i, order][:, keep]
            cmc = np.zeros(len(raw))
            for r in range(keys.shape[0]):
                mask = np.zeros(len(raw), bool)
                for pid in np.unique(kept_pids):
                    idx = np.flatnonzero(kept_pids == pid)
                    mask[idx[np.argmax(kept_keys[r, idx])]] = True
                c = np.minimum(raw[mask].cumsum(), 1).astype(np.float64)
                cmc[: len(c)] += c
                cmc[len(c):] += c[-1]
            cmc /= keys.shape[0]
        # Pad with the last value when fewer than max_rank items remain (the reference crashes there).
        cmc = np.concatenate([cmc, np.full(max(0, max_rank - len(cmc)), cmc[-1])])[:max_rank]
        all_cmc.append(cmc)
        precision = [raw[: j + 1].sum() / (j + 1) for j in range(len(raw)) if raw[j]]
        all_ap.append(np.mean(precision))
        last = np.flatnonzero(raw)[-1]
        all_inp.append(raw.sum() / (last + 1))
    return np.mean(all_cmc, 0), float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_ap)


def _random_problem(rng, nq=40, ng=120, n_ids=25, n_cams=4):
    q_pids = rng.integers(0, n_ids, nq)
    g_pids = rng.integers(-1, n_ids, ng)  # -1 and 0 are ordinary ids for the metric
    q_cam = rng.integers(0, n_cams, nq)
    g_cam = rng.integers(0, n_cams, ng)
    return rng.random((nq, ng)), q_pids, g_pids, q_cam, g_cam


@pytest.mark.parametrize("chunk", [None, 7])
def test_market_matches_reference(rng, chunk):
    d, qp, gp, qc, gc = _random_problem(rng)
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=50, chunk_size=chunk)
    cmc, m_ap, m_inp, nv = _reference(d, qp, gp, qc, gc, 50)
    assert res.num_valid == nv and nv < 40  # some queries have no match and are skipped
    np.testing.assert_allclose(res.cmc, cmc, atol=1e-6)
    assert abs(res.mAP - m_ap) < 1e-6 and abs(res.mINP - m_inp) < 1e-6
    assert res.cmc.shape == (50,)
    as_tensor = evaluate_rank(torch.from_numpy(d), torch.from_numpy(qp), gp, qc, gc, max_rank=50, chunk_size=chunk)
    np.testing.assert_allclose(as_tensor.cmc, cmc, atol=1e-6)
    assert abs(as_tensor.mAP - m_ap) < 1e-6


def test_ties_ranked_by_gallery_index(rng):
    d = rng.integers(0, 3, (30, 60)).astype(np.float32)  # many exact ties
    qp, gp = rng.integers(0, 6, 30), rng.integers(0, 6, 60)
    qc, gc = rng.integers(0, 2, 30), rng.integers(0, 2, 60)
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=10)
    cmc, m_ap, m_inp, _ = _reference(d, qp, gp, qc, gc, 10)
    np.testing.assert_allclose(res.cmc, cmc, atol=1e-6)
    assert abs(res.mAP - m_ap) < 1e-6 and abs(res.mINP - m_inp) < 1e-6


def test_hand_worked_example():
    # One query (pid 1, cam 0). Gallery ranked by distance: [pid1 cam0 (ignored), pid2, pid1 cam1, pid3, pid1 cam2]
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]])
    gp = np.array([1, 2, 1, 3, 1])
    gc = np.array([0, 1, 1, 1, 2])
    res = evaluate_rank(d, [1], gp, [0], gc, max_rank=6)
    # Filtered ranking: [miss, hit, miss, hit] -> AP = (1/2 + 2/4) / 2, INP = 2 / 4; CMC padded to 6.
    assert res.mAP == pytest.approx(0.5) and res.mINP == pytest.approx(0.5)
    np.testing.assert_array_equal(res.cmc, [0, 1, 1, 1, 1, 1])
    assert res.summary()["R1"] == 0.0 and res.summary()["R5"] == 1.0


def test_short_gallery_and_one_camera():
    # All gallery items share the query's camera: its same-pid items are ignored, so query 0 is skipped.
    d = np.array([[0.3, 0.1, 0.2], [0.2, 0.1, 0.3]])
    res = evaluate_rank(d, [5, 7], [5, 7, 9], [0, 1], [0, 0, 0], max_rank=50)
    assert res.num_valid == 1
    np.testing.assert_array_equal(res.cmc, np.ones(50))  # query 1 matches at rank 1, padded to 50
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(d, [5, 7], [5, 7, 9], [0, 0], [0, 0, 0])


def test_cuhk03_single_shot_matches_reference(rng):
    d, qp, gp, qc, gc = _random_problem(rng, nq=20, ng=60, n_ids=8)
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=20, protocol="cuhk03", num_repeats=3, seed=5)
    draws = np.random.default_rng(5)
    keys = np.stack([draws.random((20, 60)) for _ in range(3)])
    cmc, m_ap, m_inp, nv = _reference(d, qp, gp, qc, gc, 20, keys=keys)
    np.testing.assert_allclose(res.cmc, cmc, atol=1e-6)
    assert abs(res.mAP - m_ap) < 1e-6 and abs(res.mINP - m_inp) < 1e-6 and res.num_valid == nv


def test_cuhk03_equals_market_with_one_item_per_identity(rng):
    d = rng.random((15, 30))
    gp = np.arange(30)
    qp = rng.integers(0, 30, 15)
    a = evaluate_rank(d, qp, gp, np.zeros(15, int), np.ones(30, int), max_rank=10, protocol="cuhk03")
    b = evaluate_rank(d, qp, gp, np.zeros(15, int), np.ones(30, int), max_rank=10)
    np.testing.assert_allclose(a.cmc, b.cmc, atol=1e-12)


def test_bad_inputs(rng):
    d = rng.random((3, 4))
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(d, [0, 1, 2], [0, 1], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(TypeError, match="q_pids"):
        evaluate_rank(d, [0.5, 1, 2], [0, 1, 2, 3], [0, 0, 0], [1, 1, 1, 1])
    with pytest.raises(ValueError, match="protocol"):
        evaluate_rank(d, [0, 1, 2], [0, 1, 2, 3], [0, 0, 0], [1, 1, 1, 1], protocol="duke")


def test_pairwise_distance_and_topk_against_float64(rng):
    q = rng.standard_normal((13, 8)).astype(np.float32)
    g = rng.standard_normal((50, 8)).astype(np.float32)
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    eu = np.sqrt(((q64[:, None] - g64[None]) ** 2).sum(-1))
    qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
    gn = g64 / np.linalg.norm(g64, axis=1, keepdims=True)
    cos = 1 - qn @ gn.T
    np.testing.assert_allclose(pairwise_distance(q, g, "euclidean", chunk_size=4), eu, atol=1e-5)
    np.testing.assert_allclose(pairwise_distance(q, g, "cosine"), cos, atol=1e-5)
    t = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), "cosine")
    assert isinstance(t, torch.Tensor) and t.shape == (13, 50)
    for metric, ref in (("euclidean", eu), ("cosine", cos)):
        dist, idx = topk(q, g, 5, metric, query_chunk=4, gallery_chunk=7)
        np.testing.assert_array_equal(idx, np.argsort(ref, axis=1, kind="stable")[:, :5])
        np.testing.assert_allclose(dist, np.sort(ref, axis=1)[:, :5], atol=1e-5)
    # Exact ties (duplicated gallery rows): ordered by gallery index.
    gd = np.repeat(g[:4], 3, axis=0)
    _, idx = topk(q, gd, 12, "euclidean", gallery_chunk=5)
    ref = np.argsort(np.sqrt(((q64[:, None] - gd.astype(np.float64)[None]) ** 2).sum(-1)), axis=1, kind="stable")
    assert (np.sort(idx.reshape(13, 4, 3), axis=2) == idx.reshape(13, 4, 3)).all()
    np.testing.assert_array_equal(idx // 3, ref // 3)
    with pytest.raises(ValueError, match="metric"):
        topk(q, g, 3, "manhattan")
