"""The offline demo: its metrics equal a naive recomputation, its picture has one row per query, its CLI runs."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

import isr_reid
from isr_reid.cli import main
from isr_reid.demo import run_demo


def naive_rank1_and_ap(q, g, q_pids, g_pids, q_cams, g_cams):
    """Market-1501 protocol, one query at a time, written independently of isr_reid.retrieval."""
    r1, aps = [], []
    for i in range(len(q)):
        sim = g @ q[i]
        keep = ~((g_pids == q_pids[i]) & (g_cams == q_cams[i]))
        order = np.argsort(-sim[keep], kind="stable")
        hits = (g_pids[keep] == q_pids[i])[order]
        if not hits.any():
            continue
        r1.append(float(hits[0]))
        ranks = np.flatnonzero(hits) + 1
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
    return np.mean(r1), np.mean(aps)


def test_demo_metrics_and_picture(tmp_path):
    out = tmp_path / "demo"
    res = run_demo(out, train_steps=0, num_train_ids=4, num_test_ids=6, num_cameras=2, input_size=(64, 32),
                   top_k=3, shown_queries=4, progress=False, log=lambda *a: None)
    assert res.after is None
    # The same seeded random init, rebuilt here, gives the demo's numbers through a naive loop.
    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32))
    qs = sorted((out / "data" / "reid" / "query").rglob("*.jpg"))
    gs = sorted((out / "data" / "reid" / "gallery").rglob("*.jpg"))
    pid = lambda p: int(p.parent.name)  # noqa: E731
    cam = lambda p: int(p.name[1])  # noqa: E731  (c<cam>_<k>.jpg)
    r1, mAP = naive_rank1_and_ap(model.extract(qs, progress=False), model.extract(gs, progress=False),
                                 np.array([pid(p) for p in qs]), np.array([pid(p) for p in gs]),
                                 np.array([cam(p) for p in qs]), np.array([cam(p) for p in gs]))
    assert abs(res.before["rank1"] - r1) < 1e-9 and abs(res.before["mAP"] - mAP) < 1e-6
    saved = json.loads(res.metrics_file.read_text())
    assert saved["before_training"] == res.before
    with Image.open(res.picture) as im:
        w, h = im.size
    assert h > 4 * 128 and w > 4 * 64  # 4 rows of query + 3 results, 128x64 thumbnails


def test_demo_command_trains_and_reports(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--train-steps", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "before training" in out and "after training" in out
    saved = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert len(saved["history"]) == 2 and all(np.isfinite(h["loss"]) for h in saved["history"])
    assert saved["after_training"] != saved["before_training"]  # two steps changed the weights
