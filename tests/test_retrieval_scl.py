"""SCL's ranking distance: pairwise_distance(metric="scl") and topk against a float64 loop over pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_reid.retrieval import GalleryIndex, pairwise_distance, topk


def _branches(rng, n, gdim=2048, stripes=8, sdim=256):
    """Unit global and stripe embeddings, and their scl_resnet50 concatenation [g/sqrt2, s_k/4]."""
    g = rng.normal(size=(n, gdim))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s = rng.normal(size=(n, stripes, sdim))
    s /= np.linalg.norm(s, axis=2, keepdims=True)
    emb = np.concatenate([g / np.sqrt(2)] + [s[:, k] / np.sqrt(2 * stripes) for k in range(stripes)], axis=1)
    return g, s, emb


def _loop(qg, qs, gg, gs):
    """0.5 ||g - g'|| + 0.5 mean_k ||s_k - s_k'||, one pair at a time in float64."""
    out = np.empty((len(qg), len(gg)))
    for i in range(len(qg)):
        for j in range(len(gg)):
            stripes = np.mean([np.linalg.norm(qs[i, k] - gs[j, k]) for k in range(qs.shape[1])])
            out[i, j] = 0.5 * np.linalg.norm(qg[i] - gg[j]) + 0.5 * stripes
    return out


def test_scl_distance_matches_a_loop_over_pairs():
    rng = np.random.default_rng(0)
    qg, qs, q = _branches(rng, 7)
    gg, gs, g = _branches(rng, 11)
    g[3] = q[2]  # an exact match: distance 0
    gg[3], gs[3] = qg[2], qs[2]
    ref = _loop(qg, qs, gg, gs)
    for chunk in (None, 2):
        got = pairwise_distance(q.astype(np.float32), g.astype(np.float32), "scl", chunk_size=chunk)
        assert got.dtype == np.float32 and got.shape == (7, 11)
        off = np.ones_like(ref, bool)
        off[2, 3] = False
        np.testing.assert_allclose(got[off], ref[off], atol=2e-5)
        # float32 rounding of 2 - 2<a, b> under the square root: ~sqrt(1e-7) at an exact match
        assert 0 <= got[2, 3] < 1e-3 and got[2, 3] < got[2][off[2]].min()
    # A float64 torch input stays float64 and agrees to rounding.
    t = pairwise_distance(torch.from_numpy(q), torch.from_numpy(g), "scl")
    assert t.dtype == torch.float64
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-7)


def _at_cosine(c, dim):
    """A unit vector at cosine c to e_0."""
    v = np.zeros(dim)
    v[0], v[1] = c, np.sqrt(1 - c * c)
    return v


def test_scl_ranks_differently_from_the_dot_product_of_the_concatenation():
    # Gallery A: same global (cos 1), stripes at cos 0.1; gallery B: global cos 0.3, stripes cos 0.85.
    # Dot product of the concatenations: A 0.55 < B 0.575 (B first). SCL: A 0.671 < B 0.865 (A first).
    e = _at_cosine(1.0, 256)
    q = np.concatenate([_at_cosine(1.0, 2048) / np.sqrt(2)] + [e / 4] * 8)
    a = np.concatenate([_at_cosine(1.0, 2048) / np.sqrt(2)] + [_at_cosine(0.1, 256) / 4] * 8)
    b = np.concatenate([_at_cosine(0.3, 2048) / np.sqrt(2)] + [_at_cosine(0.85, 256) / 4] * 8)
    d = pairwise_distance(q[None], np.stack([a, b]), "scl")[0]
    np.testing.assert_allclose(d, [0.5 * np.sqrt(1.8), 0.5 * np.sqrt(1.4) + 0.5 * np.sqrt(0.3)], atol=1e-12)
    cos = pairwise_distance(q[None], np.stack([a, b]), "cosine")[0]
    np.testing.assert_allclose(1 - cos, [0.55, 0.575], atol=1e-12)
    assert np.argmin(d) == 0 and np.argmin(cos) == 1


def test_scl_topk_and_index_rank_by_the_scl_distance():
    rng = np.random.default_rng(1)
    qg, qs, q = _branches(rng, 5)
    gg, gs, g = _branches(rng, 40)
    ref = _loop(qg, qs, gg, gs)
    d, i = topk(q, g, 6, "scl", gallery_chunk=7)
    np.testing.assert_array_equal(i, np.argsort(ref, 1, kind="stable")[:, :6])
    np.testing.assert_allclose(d, np.sort(ref, 1)[:, :6], atol=2e-5)
    res = GalleryIndex(g, metric="scl").search(q, k=6)
    np.testing.assert_array_equal(res.indices, i)


def test_scl_layout_errors_name_the_dimension():
    with pytest.raises(ValueError, match=r"512-d features .* 2048-d global part"):
        pairwise_distance(np.ones((2, 512), np.float32), np.ones((3, 512), np.float32), "scl")
    # Another layout splits as asked: global 4 + 2 stripes of 3.
    rng = np.random.default_rng(2)
    qg, qs, q = _branches(rng, 3, gdim=4, stripes=2, sdim=3)
    gg, gs, g = _branches(rng, 4, gdim=4, stripes=2, sdim=3)
    got = pairwise_distance(q, g, "scl", scl_layout=(4, 2))
    np.testing.assert_allclose(got, _loop(qg, qs, gg, gs), atol=1e-6)


def test_scl_parts_recover_the_model_branches():
    from isr_reid import load_model
    from isr_reid.retrieval.distance import scl_parts

    torch.manual_seed(0)
    model = load_model("scl_resnet50", pretrained=False, device="cpu")
    x = torch.randn(2, 3, *model.cfg.input_size)
    with torch.no_grad():
        emb = model(x)
        g, stripes = model.branch_embeddings(model.forward_features(x))
    parts = scl_parts(emb)
    assert len(parts) == 9
    torch.testing.assert_close(parts[0], g, atol=1e-6, rtol=0)
    for got, want in zip(parts[1:], stripes):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
