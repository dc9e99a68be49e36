"""MOT parsing, crop folders and lists, and the frame-pair sampler (isr_reid.data.video)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isr_reid.data.video import (
    FramePairSampler,
    VideoSet,
    crop_image,
    find_mot_sequences,
    load_videos,
    read_mot_sequence,
)


def _naive_rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split(",")] for line in path.read_text().splitlines() if line.strip()]


def test_mot_det_matches_a_naive_parse(mot17_root: Path) -> None:
    root = mot17_root / "MOT17-05-FRCNN"
    seq = read_mot_sequence(root, "det", min_score=0.5, min_size=(50, 10))
    images = {int(p.stem) for p in (root / "img1").glob("*.jpg")}
    expected = sorted(
        (int(r[0]), r[2] - 1, r[3] - 1, r[4], r[5], r[6])
        for r in _naive_rows(root / "det" / "det.txt")
        if int(r[0]) in images and r[6] >= 0.5 and r[5] >= 50 and r[4] >= 10
    )
    got = sorted(zip(seq.frames.tolist(), *seq.boxes.T.tolist(), seq.scores.tolist()))
    assert got == expected
    assert len(expected) > 5
    assert (seq.track_ids == -1).all()
    assert seq.name == "MOT17-05-FRCNN" and seq.frame_rate == 14 and seq.image_size == (480, 640)
    assert seq.image_path(3) == root / "img1" / "000003.jpg" and seq.image_path(3).is_file()


def test_mot_gt_keeps_pedestrians_only(mot17_root: Path) -> None:
    root = mot17_root / "MOT17-04-FRCNN"
    seq = read_mot_sequence(root, "gt", min_visibility=0.3)
    rows = _naive_rows(root / "gt" / "gt.txt")
    expected = sorted((int(r[0]), int(r[1])) for r in rows if r[6] == 1 and r[7] == 1 and r[8] >= 0.3)
    assert sorted(zip(seq.frames.tolist(), seq.track_ids.tolist())) == expected
    assert (seq.visibility >= 0.3).all()
    # the gt of MOT17-04 also holds non-pedestrian classes, which must be gone
    assert len(expected) < len(rows)


def test_find_mot_sequences_descends_two_levels(mot17_root: Path) -> None:
    found = find_mot_sequences(mot17_root.parent)
    assert [p.name for p in found] == sorted(p.name for p in mot17_root.iterdir() if p.is_dir())


def test_bad_mot_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "img1").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img1" / "000001.jpg")
    (tmp_path / "det").mkdir()
    (tmp_path / "det" / "det.txt").write_text("1,-1,1,1,4,4,0.9\n1,-1,1,1\n")
    with pytest.raises(ValueError, match=r"det.txt:2"):
        read_mot_sequence(tmp_path, "det")


def _write_folder(root: Path, layout: dict[str, dict[str, int]]) -> None:
    for video, frames in layout.items():
        for frame, n in frames.items():
            d = root / video / frame
            d.mkdir(parents=True)
            for k in range(n):
                Image.new("RGB", (10 + k, 30)).save(d / f"c{k}.jpg")


def test_folder_layout_orders_frames_numerically_and_filters_size(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"v1": {"10": 2, "9": 1, "100": 3}, "v2": {"a": 1}})
    vs = VideoSet.from_folder(tmp_path)
    assert [v.name for v in vs.videos] == ["v1", "v2"]
    v1 = vs.videos[0]
    # frame keys are positions in numeric order: 9, 10, 100
    assert [len(v1.crops[f]) for f in v1.frames] == [1, 2, 3]
    filtered = load_videos(vs, min_size=(30, 11))  # widths 10, 11, 12 -> the first crop of each frame goes
    assert [len(filtered.videos[0].crops[f]) for f in filtered.videos[0].frames] == [1, 2]
    assert len(filtered) == 1


def test_csv_and_json_lists_agree(tmp_path: Path) -> None:
    rows = [
        {"video": "a", "frame": 2, "path": "f2.jpg", "x": 1, "y": 2, "w": 3, "h": 4, "score": 0.9},
        {"video": "a", "frame": 1, "path": "f1.jpg", "x": 0, "y": 0, "w": 5, "h": 6, "score": 0.2},
        {"video": "b", "frame": 1, "path": "g.jpg"},
    ]
    (tmp_path / "l.json").write_text(json.dumps({"crops": rows}))
    with open(tmp_path / "l.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video", "frame", "path", "x", "y", "w", "h", "score"])
        w.writeheader()
        w.writerows(rows)
    a, b = VideoSet.from_list(tmp_path / "l.json"), VideoSet.from_list(tmp_path / "l.csv")
    assert a == b
    assert a.videos[0].frames == [1, 2]
    assert a.videos[0].crops[2][0].box == (1.0, 2.0, 3.0, 4.0)
    assert a.videos[0].crops[2][0].path == str(tmp_path / "f2.jpg")
    assert load_videos(tmp_path / "l.json", min_score=0.5).num_crops() == 2


def test_list_error_names_the_row(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps([{"video": "a", "frame": "x", "path": "p.jpg"}]))
    with pytest.raises(ValueError, match="row 1: frame must be an integer"):
        VideoSet.from_list(tmp_path / "l.json")


def test_crop_image_clips_to_the_image() -> None:
    img = Image.fromarray(np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3) % 251)
    c = crop_image(img, (-3.0, 5.0, 10.0, 100.0))
    assert c.size == (7, 15)
    assert np.array_equal(np.asarray(c), np.asarray(img)[5:20, 0:7])


def test_sampler_pairs_respect_delta_and_videos_are_distinct(tmp_path: Path) -> None:
    _write_folder(tmp_path, {f"v{i}": {str(f): 3 for f in range(6)} for i in range(3)})
    vs = VideoSet.from_folder(tmp_path)
    s = FramePairSampler(vs, pairs_per_batch=2, max_crops_per_frame=2, delta=(2, 3), seed=1)
    seen = set()
    for _ in range(200):
        batch = s.sample()
        assert len(batch) == 2 and batch[0].video != batch[1].video
        for p in batch:
            assert 2 <= p.frame_b - p.frame_a <= 3
            assert len(p.crops_a) == 2 and len(set(p.crops_a)) == 2
            seen.add(p.frame_b - p.frame_a)
    assert seen == {2, 3}


def test_sampler_state_round_trip_and_rank_sharding(tmp_path: Path) -> None:
    _write_folder(tmp_path, {f"v{i}": {str(f): 2 for f in range(4)} for i in range(4)})
    vs = VideoSet.from_folder(tmp_path)
    s = FramePairSampler(vs, pairs_per_batch=1, seed=3)
    s.sample()
    state = s.state_dict()
    first = [s.sample() for _ in range(5)]
    s2 = FramePairSampler(vs, pairs_per_batch=1, seed=99)
    s2.load_state_dict(state)
    assert [s2.sample() for _ in range(5)] == first
    r1 = FramePairSampler(vs, pairs_per_batch=4, rank=1, world_size=2)
    assert {p.video for _ in range(20) for p in r1.sample()} == {1, 3}


def test_sampler_keeps_the_partners_of_a_crowded_frame() -> None:
    """30 persons walking a few pixels per frame, 6 kept per frame: frame b must keep a's persons."""
    from isr_reid.data.video import Crop, Video, VideoSet

    rng = np.random.default_rng(0)
    start = rng.uniform(0, 1800, (30, 2))
    crops = {
        f: [Crop(path=f"p{t}_f{f}.jpg", box=(*(start[t] + 4.0 * f), 40.0, 100.0), track=t)
            for t in rng.permutation(30)]
        for f in range(3)
    }
    vs = VideoSet([Video("v", [0, 1, 2], crops)])
    s = FramePairSampler(vs, pairs_per_batch=1, max_crops_per_frame=6, delta=(1, 2), seed=2)
    for _ in range(20):
        (pair,) = s.sample()
        tracks_a = {c.track for c in pair.crops_a}
        tracks_b = {c.track for c in pair.crops_b}
        assert len(tracks_a) == len(tracks_b) == 6
        assert tracks_a == tracks_b  # every kept person of frame a is still there in frame b
