"""Every script in examples/ runs on tiny generated data, and its output is checked against references computed here."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import isr_reid
from isr_reid.data.synthetic import make_cameras, make_identities, render_crop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SIZE = (64, 32)  # (H, W): crops are drawn at the model's input size, so no resize happens anywhere

# The examples share one saved model; keep them on one xdist worker.
pytestmark = pytest.mark.xdist_group("examples")


def _run_subprocess(script: str, *args: object, timeout: int = 300) -> str:
    """Run an example as a user would, in a fresh interpreter."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _run(capsys: pytest.CaptureFixture[str], script: str, *args: object) -> str:
    """Run an example's ``main(argv)`` in this process (saves the ~5 s interpreter + torch start of a subprocess)."""
    spec = importlib.util.spec_from_file_location(f"_example_{Path(script).stem}", EXAMPLES / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    assert module.main([str(a) for a in args]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A small seeded model saved in hub layout; its config.json carries the 64x32 input size."""
    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    return model.save_pretrained(tmp_path_factory.mktemp("weights") / "model")


@pytest.fixture(scope="module")
def model(weights_dir) -> isr_reid.ReIDModel:
    return isr_reid.load_model("isr_resnet18", weights=weights_dir, device="cpu")


def _model_args(weights_dir: Path) -> list[str]:
    return ["--model", "isr_resnet18", "--weights", str(weights_dir), "--device", "cpu"]


def _reference_embeddings(model: isr_reid.ReIDModel, images: list) -> np.ndarray:
    """(x / 255 - mean) / std written out here and the eager forward: independent of the extraction pipeline."""
    arrays = [np.asarray(Image.open(p).convert("RGB") if isinstance(p, (str, Path)) else p, dtype=np.float64)
              for p in images]
    x = np.stack(arrays).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(model.cfg.mean)[None, :, None, None]
    std = np.asarray(model.cfg.std)[None, :, None, None]
    with torch.no_grad():
        return model(torch.from_numpy((x - mean) / std).float()).numpy()


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[Path]:
    """``<root>/<pid>/c<cam>_<k>.png``: 5 synthetic people x 2 cameras x 2 shots, lossless."""
    root = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    paths = []
    for ident in make_identities(5, seed=1):
        for cam in make_cameras(2, seed=2):
            for k in range(2):
                img = render_crop(ident, cam, phase=rng.uniform(0, 6.28), position=rng.uniform(), rng=rng, size=SIZE)
                path = root / f"{ident.pid:04d}" / f"c{cam.camid}_{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
                paths.append(path)
    return sorted(paths)


def test_extract_folder(weights_dir, model, crops, tmp_path):
    from isr_reid.data.features import load_features

    out = tmp_path / "features.npz"
    stdout = _run_subprocess("extract_folder.py", crops[0].parents[1], "-o", out, *_model_args(weights_dir))
    assert f"embedded {len(crops)} images" in stdout
    saved = load_features(out)
    assert [Path(p).resolve() for p in saved.paths] == [p.resolve() for p in crops]
    assert saved.model == "isr_resnet18" and saved.config["input_size"] == list(SIZE)
    np.testing.assert_allclose(saved.embeddings, _reference_embeddings(model, crops), atol=1e-5, rtol=0)


def test_search_gallery(weights_dir, model, crops, tmp_path, capsys):
    queries = tmp_path / "queries"
    queries.mkdir()
    picked = [crops[0], crops[5], crops[13]]  # three different people
    for i, src in enumerate(picked):
        shutil.copy(src, queries / f"q{i}.png")
    out, out_json = tmp_path / "ranked.png", tmp_path / "results.json"
    _run(capsys, "search_gallery.py", "--query", queries, "--gallery", crops[0].parents[1], "-k", 4, "-o", out,
         "--json", out_json, *_model_args(weights_dir))
    results = json.loads(out_json.read_text())
    gallery_ref = _reference_embeddings(model, crops)
    query_ref = _reference_embeddings(model, picked)
    assert len(results) == 3
    for q_ref, src, entry in zip(query_ref, picked, results):
        hits = entry["results"]
        assert len(hits) == 4
        # the query's own file is in the gallery: it must come first, with similarity 1
        assert Path(hits[0]["path"]).resolve() == src.resolve()
        expected = np.sort(gallery_ref @ q_ref)[::-1][:4]
        np.testing.assert_allclose([h["similarity"] for h in hits], expected, atol=1e-4)
    with Image.open(out) as picture:
        assert picture.height >= 3 * 64 and picture.width >= 5 * 32


def _market_name(pid: int, cam: int, k: int) -> str:
    return f"{pid:04d}_c{cam}s1_{k:06d}_01.jpg" if pid >= 0 else f"-1_c{cam}s1_{k:06d}_01.jpg"


def test_evaluate_market1501(weights_dir, tmp_path, capsys):
    """Built so that the metrics are known: each valid query's only cross-camera match is its own copy."""
    root = tmp_path / "Market-1501-v15.09.15"
    for d in ("bounding_box_train", "bounding_box_test", "query"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(3)
    people = make_identities(5, seed=4, first_pid=1)
    cams = make_cameras(3, seed=5)

    def draw(ident, cam) -> Image.Image:
        return Image.fromarray(render_crop(ident, cam, phase=rng.uniform(0, 6.28), position=rng.uniform(), rng=rng,
                                           size=SIZE))

    k = 0
    for ident in people[:4]:  # pids 1-4 are queries, seen by camera 1
        q = root / "query" / _market_name(ident.pid, 1, k)
        draw(ident, cams[0]).save(q, quality=95)
        draw(ident, cams[0]).save(root / "bounding_box_test" / _market_name(ident.pid, 1, k + 1))  # same camera: ignored
        if ident.pid != 4:  # pid 4 has no cross-camera match: the protocol skips it
            shutil.copy(q, root / "bounding_box_test" / _market_name(ident.pid, 2, k + 2))
        k += 3
    draw(people[4], cams[1]).save(root / "bounding_box_test" / _market_name(0, 3, k))  # a distractor (pid 0)
    # junk (pid -1) is left out by the reader, even when it is a copy of a query
    shutil.copy(root / "query" / _market_name(1, 1, 0), root / "bounding_box_test" / _market_name(-1, 3, k + 1))
    draw(people[4], cams[2]).save(root / "bounding_box_train" / _market_name(5, 3, k + 2))

    out_json = tmp_path / "metrics.json"
    stdout = _run(capsys, "evaluate_market1501.py", root, "--json", out_json, *_model_args(weights_dir))
    metrics = json.loads(out_json.read_text())
    assert metrics["num_valid_queries"] == 3
    assert metrics["rank1"] == pytest.approx(1.0)
    assert metrics["mAP"] == pytest.approx(1.0)
    assert "query" in stdout and "mAP" in stdout


def _write_mot_sequence(root: Path, people, seed: int, frames: int = 4, frame_hw: tuple[int, int] = (112, 200)):
    """A MOT-format sequence: people walking right, one 64x32 box each per frame; returns {(frame, person): box}."""
    rng = np.random.default_rng(seed)
    cam = make_cameras(1, seed=seed)[0]
    (root / "img1").mkdir(parents=True)
    (root / "det").mkdir()
    (root / "seqinfo.ini").write_text(
        f"[Sequence]\nname={root.name}\nimDir=img1\nframeRate=30\nseqLength={frames}\n"
        f"imWidth={frame_hw[1]}\nimHeight={frame_hw[0]}\nimExt=.jpg\n", encoding="utf-8")
    boxes, lines = {}, []
    for t in range(1, frames + 1):
        frame = np.full((*frame_hw, 3), 90, np.uint8) + rng.integers(0, 20, (*frame_hw, 3), dtype=np.uint8)
        for j, ident in enumerate(people):
            x, y = 4 + 44 * j + 3 * t, 10 + 12 * (j % 2)
            frame[y:y + SIZE[0], x:x + SIZE[1]] = render_crop(ident, cam, phase=0.9 * t, position=0.5, rng=rng,
                                                              size=SIZE)
            boxes[(t, j)] = (x, y, SIZE[1], SIZE[0])
            lines.append(f"{t},-1,{x + 1},{y + 1},{SIZE[1]},{SIZE[0]},0.9")  # MOT boxes are 1-based
        Image.fromarray(frame).save(root / "img1" / f"{t:06d}.jpg", quality=95)
    (root / "det" / "det.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return boxes


def test_train_isr_videos(weights_dir, model, tmp_path, capsys):
    videos = tmp_path / "videos"
    _write_mot_sequence(videos / "seq-a", make_identities(3, seed=6), seed=7)
    _write_mot_sequence(videos / "seq-b", make_identities(3, seed=8, first_pid=3), seed=9)
    out = tmp_path / "run"
    stdout = _run(capsys, "train_isr_videos.py", videos, "-o", out, "--steps", 2, "--batch-size", 8,
                  "--videos-per-batch", 2, *_model_args(weights_dir))
    loss = float(re.search(r"last loss (\S+),", stdout).group(1))
    assert math.isfinite(loss) and loss > 0
    trained = isr_reid.load_model("isr_resnet18", weights=out, device="cpu")
    assert trained.cfg.input_size == SIZE
    before, after = model.state_dict(), trained.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert changed, "two training steps left every weight as it was"


def test_tracker_gallery_matching(weights_dir, model, tmp_path, capsys):
    known, stranger = make_identities(3, seed=10), make_identities(1, seed=11, first_pid=9)
    seq = tmp_path / "seq"
    boxes = _write_mot_sequence(seq, [*known, stranger[0]], seed=12)
    frame = Image.open(seq / "img1" / "000001.jpg").convert("RGB")
    names = ["alice", "bob", "carol"]
    gallery = tmp_path / "gallery"
    for j, name in enumerate(names):  # each known person's gallery image is their crop from this frame
        x, y, w, h = boxes[(1, j)]
        (gallery / name).mkdir(parents=True)
        frame.crop((x, y, x + w, y + h)).save(gallery / name / "0.png")
    out_json, drawn = tmp_path / "assign.json", tmp_path / "frame.jpg"
    _run(capsys, "tracker_gallery_matching.py", seq, "--frame", 1, "--gallery", gallery, "--min-similarity", -1,
         "--json", out_json, "--draw", drawn, *_model_args(weights_dir))
    dets = json.loads(out_json.read_text())["detections"]
    assert len(dets) == 4
    by_box = {tuple(round(v) for v in d["box"]): d for d in dets}
    for j, name in enumerate(names):
        d = by_box[boxes[(1, j)]]
        assert d["identity"] == name and d["similarity"] == pytest.approx(1.0, abs=1e-4)
    # four detections, three identities: giving the stranger a name would cost a similarity-1 match
    assert by_box[boxes[(1, 3)]]["identity"] is None
    with Image.open(drawn) as img:
        assert img.size == frame.size


def _naive_map(q: np.ndarray, g: np.ndarray, qp, gp, qc, gc) -> tuple[float, float]:
    """Rank-1 and mAP by the Market-1501 protocol, one query at a time (same pid and camera ignored)."""
    r1, aps = [], []
    for i in range(len(q)):
        order = np.argsort(1.0 - g @ q[i], kind="stable")
        keep = [j for j in order if not (gp[j] == qp[i] and gc[j] == qc[i])]
        hits = [gp[j] == qp[i] for j in keep]
        if not any(hits):
            continue
        r1.append(float(hits[0]))
        found, precisions = 0, []
        for rank, hit in enumerate(hits, 1):
            if hit:
                found += 1
                precisions.append(found / rank)
        aps.append(float(np.mean(precisions)))
    return float(np.mean(r1)), float(np.mean(aps))


def test_finetune_folder(weights_dir, model, tmp_path, capsys):
    root = tmp_path / "people"
    rng = np.random.default_rng(20)
    cams = make_cameras(3, seed=21)
    layout = {"train": (make_identities(4, seed=22, first_pid=0), cams, 2),
              "query": (make_identities(3, seed=23, first_pid=10), cams[:1], 1),
              "gallery": (make_identities(3, seed=23, first_pid=10), cams[1:], 2)}
    for split, (people, split_cams, shots) in layout.items():
        for ident in people:
            for cam in split_cams:
                for k in range(shots):
                    img = render_crop(ident, cam, phase=rng.uniform(0, 6.28), position=rng.uniform(), rng=rng,
                                      size=SIZE)
                    path = root / split / f"{ident.pid:04d}" / f"c{cam.camid}_{k}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(img).save(path)
    out, out_json = tmp_path / "tuned", tmp_path / "metrics.json"
    _run(capsys, "finetune_folder.py", root, "-o", out, "--steps", 2, "--ids-per-batch", 2, "--instances", 2,
         "--json", out_json, *_model_args(weights_dir))
    metrics = json.loads(out_json.read_text())
    assert metrics["steps"] == 2

    def naive(m: isr_reid.ReIDModel) -> tuple[float, float]:
        q = sorted((root / "query").rglob("*.png"))
        g = sorted((root / "gallery").rglob("*.png"))
        # the person is the folder name, the camera the digit in c<cam>_<k>.png
        return _naive_map(_reference_embeddings(m, q), _reference_embeddings(m, g),
                          [int(p.parent.name) for p in q], [int(p.parent.name) for p in g],
                          [int(p.name[1]) for p in q], [int(p.name[1]) for p in g])

    tuned = isr_reid.load_model("isr_resnet18", weights=out, device="cpu")
    for when, m in (("before", model), ("after", tuned)):
        rank1, mean_ap = naive(m)
        assert metrics[when]["rank1"] == pytest.approx(rank1, abs=1e-6), when
        assert metrics[when]["mAP"] == pytest.approx(mean_ap, abs=1e-6), when
    changed = [k for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, tuned.state_dict()[k])]
    assert changed, "two fine-tuning steps left every weight as it was"


@pytest.mark.parametrize("tracker", ["deepsort", "boxmot"])
def test_track_with_isr_reid(weights_dir, tmp_path, capsys, tracker):
    """Four people walking right for four frames: each keeps one track, and no two share one."""
    pytest.importorskip({"deepsort": "deep_sort_realtime", "boxmot": "boxmot"}[tracker],
                        reason="the trackers extra is not installed (pip install -e '.[trackers]')")
    seq = tmp_path / "seq"
    boxes = _write_mot_sequence(seq, make_identities(4, seed=30), seed=31)
    out_json = tmp_path / "tracks.json"
    _run(capsys, "track_with_isr_reid.py", seq, "--tracker", tracker, "--json", out_json, *_model_args(weights_dir))
    tracks = json.loads(out_json.read_text())
    person_track: dict[int, str] = {}
    for t in range(1, 5):
        assert len(tracks[str(t)]) == 4, f"frame {t}: {tracks[str(t)]}"
        for track_id, (x, y, w, h) in tracks[str(t)]:
            # the person whose box this is (boxes are 44 px apart; the tracker's box is within a few px)
            (j,) = [j for j in range(4) if abs(boxes[(t, j)][0] - x) < 10 and abs(boxes[(t, j)][1] - y) < 10]
            assert abs(w - SIZE[1]) < 5 and abs(h - SIZE[0]) < 5
            assert person_track.setdefault(j, track_id) == track_id, f"frame {t}: person {j} changed track"
    assert len(set(person_track.values())) == 4
