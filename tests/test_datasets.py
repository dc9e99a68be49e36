"""Dataset readers on small trees of real (tiny) image files, and MOT17 crops from the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from isr_reid.data.datasets import ImageRecord, load_dataset


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 4), (10, 20, 30)).save(path)


def _market_tree(root: Path, names: dict[str, list[str]]) -> None:
    for folder, files in names.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            _touch(root / folder / f)


def _triples(records):
    return sorted((Path(r.path).name, r.pid, r.camid) for r in records)


def test_market1501(tmp_path):
    root = tmp_path / "Market-1501-v15.09.15"
    _market_tree(root, {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg"],
        "query": ["0001_c1s1_001051_00.jpg"],
        "bounding_box_test": ["0001_c3s1_000151_01.jpg", "0000_c1s1_000151_01.jpg", "-1_c6s1_000401_03.jpg"],
    })
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"x")  # non-images are ignored
    ds = load_dataset("market1501", tmp_path)  # the release's subfolder is found
    assert _triples(ds.train) == [("0002_c1s1_000451_03.jpg", 2, 0), ("0002_c2s1_000551_01.jpg", 2, 1)]
    assert _triples(ds.query) == [("0001_c1s1_001051_00.jpg", 1, 0)]
    # pid -1 (junk) left out, pid 0 (distractor) kept
    assert _triples(ds.gallery) == [("0000_c1s1_000151_01.jpg", 0, 0), ("0001_c3s1_000151_01.jpg", 1, 2)]
    assert ds.train_labels() == {2: 0}
    _touch(root / "query" / "bad_name.jpg")
    with pytest.raises(ValueError, match=r"bad_name\.jpg.*0002_c1s1_000451_03"):
        load_dataset("market1501", root)


def test_missing_folder(tmp_path):
    _market_tree(tmp_path, {"bounding_box_train": [], "query": []})
    with pytest.raises(FileNotFoundError, match="bounding_box_test"):
        load_dataset("market1501", tmp_path)
    with pytest.raises(ValueError, match="unknown name"):
        load_dataset("viper", tmp_path)


def test_dukemtmc_and_cuhk03(tmp_path):
    duke = tmp_path / "DukeMTMC-reID"
    _market_tree(duke, {"bounding_box_train": ["0005_c2_f0046182.jpg"], "query": ["0007_c8_f0000001.jpg"],
                        "bounding_box_test": ["0007_c1_f0000100.jpg"]})
    ds = load_dataset("dukemtmc", tmp_path)
    assert _triples(ds.query) == [("0007_c8_f0000001.jpg", 7, 7)] and ds.gallery[0].frame == 100
    cuhk = tmp_path / "cuhk03-np"
    for variant in ("labeled", "detected"):
        _market_tree(cuhk / variant, {"bounding_box_train": [f"0001_c1_{variant[0]}1.png"],
                                      "query": ["0003_c2_1.png"], "bounding_box_test": ["0003_c1_2.png"]})
    ds = load_dataset("cuhk03", tmp_path, variant="labeled")
    assert ds.name == "cuhk03-labeled" and _triples(ds.train) == [("0001_c1_l1.png", 1, 0)]
    assert _triples(ds.gallery) == [("0003_c1_2.png", 3, 0)]
    assert load_dataset("cuhk03", cuhk).train[0].path.endswith("0001_c1_d1.png")


@pytest.mark.parametrize(("top", "train_dir", "test_dir"), [("MSMT17_V1", "train", "test"),
                                                             ("MSMT17_V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17(tmp_path, top, train_dir, test_dir):
    root = tmp_path / top
    files = {
        "list_train.txt": [(train_dir, "0000/0000_000_01_0303morning_0015_0.jpg", 0)],
        "list_val.txt": [(train_dir, "0001/0001_003_15_0303noon_0100_1.jpg", 1)],
        "list_query.txt": [(test_dir, "0002/0002_001_07_0303afternoon_0012_0.jpg", 2)],
        "list_gallery.txt": [(test_dir, "0002/0002_004_03_0303morning_0030_0.jpg", 2),
                             (test_dir, "0009/0009_000_12_0303noon_0002_0.jpg", 9)],
    }
    for list_name, rows in files.items():
        for folder, rel, _ in rows:
            _touch(root / folder / rel)
        (root / list_name).write_text("".join(f"{rel} {pid}\n" for _, rel, pid in rows))
    ds = load_dataset("msmt17", tmp_path)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (1, 14)]
    assert [(r.pid, r.camid) for r in ds.query] == [(2, 6)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(2, 2), (9, 11)]
    assert all(Path(r.path).is_file() for r in ds.train + ds.query + ds.gallery)
    (root / "list_query.txt").write_text("0002/bad.jpg 2\n")
    with pytest.raises(ValueError, match=r"list_query\.txt:1.*bad\.jpg"):
        load_dataset("msmt17", root)


def test_folder_layout(tmp_path):
    for split, pid, name in [("query", "0001", "c2_a.jpg"), ("gallery", "0001", "c1_b.jpg"),
                             ("gallery", "0004", "c2_c.png"), ("train", "0010", "c1_d.jpg")]:
        _touch(tmp_path / split / pid / name)
    ds = load_dataset("folder", tmp_path)
    assert _triples(ds.query) == [("c2_a.jpg", 1, 2)]
    assert _triples(ds.gallery) == [("c1_b.jpg", 1, 1), ("c2_c.png", 4, 2)]
    assert _triples(ds.train) == [("c1_d.jpg", 10, 1)]
    # Named cameras without digits get ids in sorted order; a custom pattern picks the camera.
    _touch(tmp_path / "gallery" / "0004" / "front_x.jpg")
    ds = load_dataset("folder", tmp_path)
    assert {Path(r.path).name: r.camid for r in ds.gallery}["front_x.jpg"] == 2  # c1, c2, front
    ds = load_dataset("folder", tmp_path, camera_pattern=r"_(\w)\.")
    # cameras a (query), b, c, x (gallery), d (train): ids in sorted order over every split
    assert {Path(r.path).name: r.camid for r in ds.gallery} == {"c1_b.jpg": 1, "c2_c.png": 2, "front_x.jpg": 4}
    _touch(tmp_path / "query" / "0001" / "nounderscore.jpg")
    with pytest.raises(ValueError, match=r"nounderscore\.jpg.*<camera>_"):
        load_dataset("folder", tmp_path)


def test_folder_missing_split(tmp_path):
    _touch(tmp_path / "query" / "0001" / "c1_a.jpg")
    with pytest.raises(FileNotFoundError, match="gallery"):
        load_dataset("folder", tmp_path)


def test_mot_crops_match_gt(mot17_root):
    seq = mot17_root / "MOT17-05-FRCNN"
    ds = load_dataset("mot", seq)
    frames = {int(p.stem) for p in (seq / "img1").glob("*.jpg")}
    expected = []
    for line in (seq / "gt" / "gt.txt").read_text().split():
        f, t, x, y, w, h, flag, cls, _vis = (float(v) for v in line.split(","))
        if int(f) in frames and flag == 1 and cls == 1:
            expected.append((int(f), int(t), (x - 1, y - 1, w, h)))
    got = sorted((r.frame, r.track, r.box) for r in ds.train)
    assert got == sorted(expected)
    r0 = ds.train[0]
    assert isinstance(r0, ImageRecord) and r0.video == "MOT17-05-FRCNN" and Path(r0.path).is_file()
    assert r0.camid == r0.frame
    n_tracks = len({t for _, t, _ in expected})
    assert len(ds.query) == n_tracks and len(ds.query) + len(ds.gallery) == len(ds.train)
    first = {}
    for f, t, _ in expected:
        first[t] = min(f, first.get(t, f))
    assert sorted((r.track, r.frame) for r in ds.query) == sorted(first.items())
    assert len({r.pid for r in ds.train}) == n_tracks


def test_mot_ids_unique_across_sequences(mot17_root):
    ds = load_dataset("mot", mot17_root)
    pairs = {(r.video, r.track) for r in ds.train}
    assert len({r.pid for r in ds.train}) == len(pairs) and len({r.video for r in ds.train}) == 7


def test_record_images_crops_boxes(mot17_root, tmp_path):
    from isr_reid.data.datasets import record_images

    ds = load_dataset("mot", mot17_root / "MOT17-09-FRCNN")
    recs = ds.query[:3]
    crops = record_images(recs)
    for r, crop in zip(recs, crops):
        x, y, w, h = r.box
        frame = Image.open(r.path).convert("RGB")
        left, top = max(0, round(x)), max(0, round(y))
        right, bottom = min(frame.width, round(x + w)), min(frame.height, round(y + h))
        assert crop.size == (right - left, bottom - top)
        assert crop.getpixel((0, 0)) == frame.getpixel((left, top))
    plain = tmp_path / "a.jpg"
    _touch(plain)
    assert record_images([ImageRecord(str(plain), 1, 0)]) == [str(plain)]
