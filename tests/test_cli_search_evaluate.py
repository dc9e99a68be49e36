"""isr-reid evaluate / search end to end on a generated folder dataset with a small random model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _market_reference import naive_market_metrics
from _people_folder import write_people_folder
from PIL import Image

from isr_reid.cli import main

N_IDS, N_CAMS, PER_CAM = 4, 2, 2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from isr_reid import load_model

    root = tmp_path_factory.mktemp("cli")
    write_people_folder(root / "data", N_IDS, N_CAMS, PER_CAM, ".jpg")
    model = load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32))
    model.save_pretrained(root / "model")
    return root, model


def test_evaluate_folder(setup, capsys):
    from isr_reid.data.features import load_features

    root, model = setup
    args = ["evaluate", "--model", "isr_resnet18", "--weights", str(root / "model"), "--dataset", "folder",
            "--root", str(root / "data"), "--json", str(root / "res.json"), "--save-features",
            str(root / "feats.npz"), "--no-progress", "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "R1" in out and "mAP" in out and "mINP" in out
    res = json.loads((root / "res.json").read_text())
    feats = load_features(root / "feats.npz")
    is_q = feats.extra["is_query"].astype(bool)
    assert is_q.sum() == N_IDS and (~is_q).sum() == N_IDS * (N_CAMS * PER_CAM - 1)
    # The saved features are the model's embeddings of those files.
    np.testing.assert_allclose(feats.embeddings, model.extract(feats.paths, progress=False), atol=1e-5)
    pids, cams = feats.extra["pids"], feats.extra["camids"]
    assert [int(Path(p).parent.name) for p in feats.paths] == pids.tolist()
    r1, m_ap, nv = naive_market_metrics(feats.embeddings[is_q], feats.embeddings[~is_q], pids[is_q], pids[~is_q],
                                  cams[is_q], cams[~is_q])
    assert res["num_valid"] == nv == N_IDS
    assert res["R1"] == pytest.approx(r1, abs=1e-6) and res["mAP"] == pytest.approx(m_ap, abs=1e-6)
    assert f"{100 * m_ap:7.2f}" in out
    # --rerank runs and reports its own numbers in [0, 1].
    assert main([*args[:-7], "--rerank", "--json", str(root / "rr.json"), "--no-progress"]) == 0
    rr = json.loads((root / "rr.json").read_text())
    assert rr["rerank"] is True and 0 <= rr["mAP"] <= 1 and len(rr["cmc"]) == 50


def test_evaluate_requires_weights_choice(setup, capsys):
    root, _ = setup
    code = main(["evaluate", "--model", "isr_resnet18", "--random-init", "--weights", str(root / "model"),
                 "--dataset", "folder", "--root", str(root / "data")])
    assert code == 1 and "--random-init" in capsys.readouterr().err


def test_search_folder_then_index(setup, capsys):
    root, model = setup
    data = root / "data"
    queries = sorted(str(p) for p in (data / "query").rglob("*.jpg"))
    common = ["--model", "isr_resnet18", "--weights", str(root / "model"), "--no-progress", "--device", "cpu"]
    assert main(["search", *common, "--gallery", str(data / "gallery"), "--query", *queries, "-k", "3",
                 "--save-index", str(root / "gal"), "--save-png", str(root / "hits.png"),
                 "--json", str(root / "s1.json")]) == 0
    s1 = json.loads((root / "s1.json").read_text())
    gallery = sorted((data / "gallery").rglob("*.jpg"))
    q = model.extract(queries, progress=False).astype(np.float64)
    g = model.extract([str(p) for p in gallery], progress=False).astype(np.float64)
    sim = q @ g.T
    for qi, entry in enumerate(s1["queries"]):
        ref = np.argsort(-sim[qi], kind="stable")[:3]
        assert [h["path"] for h in entry["results"]] == [str(gallery[j]) for j in ref]
        np.testing.assert_allclose([h["score"] for h in entry["results"]], sim[qi, ref], atol=1e-5)
        assert entry["pid"] == int(Path(entry["query"]).parent.name)
    png = Image.open(root / "hits.png")
    assert png.size[1] == len(queries) * (128 + 14 + 4)
    # The saved index gives the same answer without re-embedding the gallery.
    assert main(["search", *common, "--gallery", str(root / "gal.safetensors"), "--query", *queries, "-k", "3",
                 "--json", str(root / "s2.json")]) == 0
    assert json.loads((root / "s2.json").read_text())["queries"] == s1["queries"]
    capsys.readouterr()
    assert main(["search", "--model", "isr_resnet50", "--random-init", "--gallery", str(root / "gal"),
                 "--query", queries[0], "--device", "cpu"]) == 1
    assert "isr_resnet18" in capsys.readouterr().err
