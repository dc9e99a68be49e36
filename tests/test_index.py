"""GalleryIndex: exact search against a float64 brute force, save/load, faiss backends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from isr_reid.retrieval.index import GalleryIndex


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(q, g, metric, k):
    if metric == "cosine":
        d = 1 - _unit(q.astype(np.float64)) @ _unit(g.astype(np.float64)).T
    else:
        d = np.sqrt(((q[:, None].astype(np.float64) - g[None]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_search_save_load(rng, tmp_path, metric, backend):
    g = rng.standard_normal((60, 16)).astype(np.float32)
    q = rng.standard_normal((7, 16)).astype(np.float32)
    pids = rng.integers(0, 10, 60)
    index = GalleryIndex(g, paths=[f"img{i}.jpg" for i in range(60)], pids=pids, camids=np.zeros(60, int),
                         frames=np.arange(60), videos=["v1"] * 60, tracks=np.arange(60) % 7,
                         metric=metric, backend=backend)
    ref_d, ref_i = _brute(q, g, metric, 5)
    res = index.search(q, k=5)
    np.testing.assert_array_equal(res.indices, ref_i)
    np.testing.assert_allclose(res.distances, ref_d, atol=1e-4)
    out = index.save(tmp_path / "gal")
    assert out.name == "gal.safetensors" and (tmp_path / "gal.json").is_file()
    loaded = GalleryIndex.load(tmp_path / "gal.safetensors")
    assert loaded.backend == backend and len(loaded) == 60
    np.testing.assert_array_equal(loaded.search(q, k=5).indices, ref_i)
    assert loaded.item(3) == {"paths": "img3.jpg", "videos": "v1", "pids": int(pids[3]), "camids": 0, "frames": 3,
                              "tracks": 3}


def test_ivfpq_recall(rng, tmp_path):
    centers = rng.standard_normal((50, 32)) * 3
    g = (centers[rng.integers(0, 50, 2000)] + rng.standard_normal((2000, 32))).astype(np.float32)
    q = g[:40] + 0.05 * rng.standard_normal((40, 32)).astype(np.float32)
    index = GalleryIndex(g, metric="euclidean", backend="faiss", faiss_type="ivfpq", nlist=16, pq_m=8, pq_bits=4, nprobe=16)
    res = index.search(q, k=10)
    # Each query is a slightly moved copy of gallery row i: PQ must still find it near the top.
    assert np.mean([i in row for i, row in enumerate(res.indices)]) >= 0.9
    index.save(tmp_path / "ivf")
    again = GalleryIndex.load(tmp_path / "ivf")
    np.testing.assert_array_equal(again.search(q, k=10).indices, res.indices)
    with pytest.raises(ValueError, match="at least"):
        GalleryIndex(g[:10], backend="faiss", faiss_type="ivfpq", nlist=16, pq_m=8)


def test_mismatched_files_and_bad_input(rng, tmp_path):
    g = rng.standard_normal((10, 4)).astype(np.float32)
    GalleryIndex(g).save(tmp_path / "a")
    GalleryIndex(g * 2 + 1).save(tmp_path / "b")
    (tmp_path / "a.json").write_text((tmp_path / "b.json").read_text())
    with pytest.raises(ValueError, match="does not match"):
        GalleryIndex.load(tmp_path / "a")
    assert json.loads((tmp_path / "b.json").read_text())["count"] == 10
    with pytest.raises(ValueError, match="pids"):
        GalleryIndex(g, pids=[1, 2])
    with pytest.raises(ValueError, match="queries"):
        GalleryIndex(g).search(np.ones((2, 5)))
    with pytest.raises(FileNotFoundError, match="missing"):
        GalleryIndex.load(tmp_path / "missing")
