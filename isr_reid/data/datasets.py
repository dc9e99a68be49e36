"""ReID dataset readers: Market-1501, MSMT17, DukeMTMC-reID, CUHK03-NP, a generic folder layout, MOT video.

Each reader returns a :class:`ReIDDataset` of :class:`ImageRecord` lists (train, query, gallery).
Camera ids are 0-based. Person ids are the dataset's own (not relabelled); junk images (pid -1)
are left out and distractors (pid 0) kept, as the evaluation protocols of these datasets do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import IMAGE_EXTENSIONS

__all__ = ["DATASETS", "MOT_MIN_FRAME_GAP", "ImageRecord", "ReIDDataset", "load_dataset", "record_images"]


@dataclass(frozen=True)
class ImageRecord:
    """One person image: its file, person id, camera id and, for crops from video, where it came from.

    ``box`` is (x, y, w, h) in pixels of the image at ``path`` when the person is a crop of a frame.
    """

    path: str
    pid: int
    camid: int
    video: str | None = None
    frame: int | None = None
    track: int | None = None
    box: tuple[float, float, float, float] | None = None


@dataclass
class ReIDDataset:
    """A ReID benchmark: training images and the query / gallery split of its test set."""

    name: str
    root: Path
    train: list[ImageRecord] = field(default_factory=list)
    query: list[ImageRecord] = field(default_factory=list)
    gallery: list[ImageRecord] = field(default_factory=list)

    def train_labels(self) -> dict[int, int]:
        """Person id -> contiguous class index 0..C-1 over ``train`` (sorted by pid), for classifiers."""
        return {pid: i for i, pid in enumerate(sorted({r.pid for r in self.train}))}

    def summary(self) -> str:
        """Counts of images, ids and cameras per split, one line each."""
        lines = []
        for split in ("train", "query", "gallery"):
            recs = getattr(self, split)
            lines.append(f"{split:8s} {len(recs):7d} images {len({r.pid for r in recs}):6d} ids "
                         f"{len({r.camid for r in recs}):4d} cameras")
        return "\n".join(lines)


# File name patterns: (pid, camera) groups. Cameras are 1-based in the names.
_MARKET = re.compile(r"^(-?\d+)_c(\d+)s\d+_\d+_\d+")
_DUKE = re.compile(r"^(-?\d+)_c(\d+)_f(\d+)")
_CUHK03 = re.compile(r"^(-?\d+)_c(\d+)_")
_MSMT = re.compile(r"^(\d+)_(\d+)_(\d+)_")
_PATTERN_TEXT = {
    "market1501": "<pid>_c<cam>s<seq>_<frame>_<box>.jpg, e.g. 0002_c1s1_000451_03.jpg",
    "dukemtmc": "<pid>_c<cam>_f<frame>.jpg, e.g. 0001_c2_f0046182.jpg",
    "cuhk03": "<pid>_c<cam>_<index>.png, e.g. 0001_c1_1.png",
    "msmt17": "<pid>_<index>_<cam>_<date>_<time>_<n>.jpg, e.g. 0000_000_01_0303morning_0015_0.jpg",
}


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _parse_folder(folder: Path, pattern: re.Pattern[str], kind: str, *, drop_junk: bool = True) -> list[ImageRecord]:
    out = []
    for p in _images(folder):
        m = pattern.match(p.name)
        if m is None:
            raise ValueError(f"{p}: file name does not match the {kind} pattern {_PATTERN_TEXT[kind]}")
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1 and drop_junk:
            continue
        frame = int(m.group(3)) if kind == "dukemtmc" else None
        out.append(ImageRecord(str(p), pid, cam - 1, frame=frame))
    return out


def _find_root(root: Path, required: tuple[str, ...], candidates: tuple[str, ...]) -> Path:
    """``root`` itself or the first of its ``candidates`` subfolders that holds every ``required`` entry."""
    for base in (root, *(root / c for c in candidates)):
        if all((base / r).exists() for r in required):
            return base
    raise FileNotFoundError(
        f"{root}: expected the folders {', '.join(required)} here or in one of {', '.join(candidates)}/")


def _market_like(name: str, kind: str, candidates: tuple[str, ...]) -> Callable[..., ReIDDataset]:
    def load(root: Path) -> ReIDDataset:
        base = _find_root(root, ("bounding_box_train", "bounding_box_test", "query"), candidates)
        return ReIDDataset(
            name=name,
            root=base,
            train=_parse_folder(base / "bounding_box_train", _pattern(kind), kind),
            query=_parse_folder(base / "query", _pattern(kind), kind),
            gallery=_parse_folder(base / "bounding_box_test", _pattern(kind), kind),
        )

    return load


def _pattern(kind: str) -> re.Pattern[str]:
    return {"market1501": _MARKET, "dukemtmc": _DUKE, "cuhk03": _CUHK03}[kind]


def _load_market1501(root: Path) -> ReIDDataset:
    """Market-1501 (Zheng et al., ICCV 2015): bounding_box_train, query, bounding_box_test."""
    return _market_like("market1501", "market1501", ("Market-1501-v15.09.15", "Market-1501", "market1501"))(root)


def _load_dukemtmc(root: Path) -> ReIDDataset:
    """DukeMTMC-reID (Zheng et al., ICCV 2017): the Market-1501 layout, names 0001_c2_f0046182.jpg."""
    return _market_like("dukemtmc", "dukemtmc", ("DukeMTMC-reID", "dukemtmc-reid", "dukemtmc"))(root)


def _load_cuhk03(root: Path, variant: str = "detected") -> ReIDDataset:
    """CUHK03-NP (Zhong et al., CVPR 2017 split): <root>/{labeled,detected}/ in the Market-1501 layout."""
    if variant not in ("detected", "labeled"):
        raise ValueError(f"variant: expected 'detected' or 'labeled', got {variant!r}")
    base = _find_root(root, (variant,), ("cuhk03-np", "cuhk03_np", "CUHK03-NP"))
    ds = _market_like("cuhk03", "cuhk03", ())(base / variant)
    ds.name = f"cuhk03-{variant}"
    return ds


def _msmt_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    if not list_file.is_file():
        raise FileNotFoundError(f"MSMT17 list file not found: {list_file}")
    out = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{lineno}: expected '<relative path> <pid>', got {line!r}")
        rel, pid = parts[0], int(parts[1])
        m = _MSMT.match(Path(rel).name)
        if m is None:
            raise ValueError(f"{list_file}:{lineno}: file name does not match the msmt17 pattern "
                             f"{_PATTERN_TEXT['msmt17']}: {rel}")
        out.append(ImageRecord(str(image_dir / rel), pid, int(m.group(3)) - 1))
    return out


def _load_msmt17(root: Path) -> ReIDDataset:
    """MSMT17 (Wei et al., CVPR 2018): V1 (train/, test/) or V2 (mask_train_v2/, mask_test_v2/) with list files.

    Training images are list_train.txt plus list_val.txt, as in the reference loaders.
    """
    for candidate in (root, root / "MSMT17_V1", root / "MSMT17_V2", root / "MSMT17", root / "msmt17"):
        if not candidate.is_dir():
            continue
        dirs = {p.name.lower(): p for p in candidate.iterdir() if p.is_dir()}
        for train_name, test_name in (("mask_train_v2", "mask_test_v2"), ("train", "test")):
            if train_name in dirs and test_name in dirs and (candidate / "list_query.txt").is_file():
                train_dir, test_dir = dirs[train_name], dirs[test_name]
                train = _msmt_list(candidate / "list_train.txt", train_dir)
                if (candidate / "list_val.txt").is_file():
                    train += _msmt_list(candidate / "list_val.txt", train_dir)
                return ReIDDataset(
                    name="msmt17", root=candidate, train=train,
                    query=_msmt_list(candidate / "list_query.txt", test_dir),
                    gallery=_msmt_list(candidate / "list_gallery.txt", test_dir),
                )
    raise FileNotFoundError(
        f"{root}: no MSMT17 layout found: expected train/ + test/ (V1) or mask_train_v2/ + mask_test_v2/ (V2) "
        "beside list_train.txt, list_query.txt and list_gallery.txt")


def _camera_ids(tokens: list[str]) -> dict[str, int]:
    """Camera names -> ids: their digits where every name has digits (c3 -> 3), else sorted order."""
    digits = {t: re.search(r"(\d+)$", t) for t in set(tokens)}
    if all(digits.values()):
        return {t: int(m.group(1)) for t, m in digits.items()}
    return {t: i for i, t in enumerate(sorted(set(tokens)))}


def _load_folder(root: Path, camera_pattern: str | None = None) -> ReIDDataset:
    """``<root>/{train,query,gallery}/<pid>/<file>``; the camera is the file name's part before its first underscore.

    ``camera_pattern`` is a regex whose first group is the camera in the file name instead.
    ``train/`` is optional.
    """
    pattern = re.compile(camera_pattern) if camera_pattern else re.compile(r"^([^_]+)_")
    expected = camera_pattern or "<camera>_<anything>.<ext>, e.g. c1_0001.jpg"
    raw: dict[str, list[tuple[Path, int, str]]] = {}
    for split in ("train", "query", "gallery"):
        folder = root / split
        if split == "train" and not folder.exists():
            raw[split] = []
            continue
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {folder} (expected {root}/{split}/<pid>/<file>)")
        items = []
        for pid_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not pid_dir.name.lstrip("-").isdigit():
                raise ValueError(f"{pid_dir}: person folder names must be integer ids, e.g. {folder}/0001/")
            for img in _images(pid_dir):
                m = pattern.search(img.name)
                if m is None or not m.groups():
                    raise ValueError(f"{img}: no camera id in the file name; expected {expected}")
                items.append((img, int(pid_dir.name), m.group(1)))
        loose = [p.name for p in _images(folder)]
        if loose:
            raise ValueError(f"{folder}: images must be inside <pid>/ folders, found {loose[0]}")
        raw[split] = items
    cams = _camera_ids([c for items in raw.values() for _, _, c in items])
    records = {s: [ImageRecord(str(p), pid, cams[c]) for p, pid, c in items] for s, items in raw.items()}
    if not records["query"] or not records["gallery"]:
        raise ValueError(f"{root}: query/ and gallery/ must each hold at least one image in a <pid>/ folder")
    return ReIDDataset("folder", root, records["train"], records["query"], records["gallery"])


MOT_MIN_FRAME_GAP = 30  # frames: 1 s of MOT17's 30 fps video


def _load_mot(root: Path, query_frame: str = "first", min_frame_gap: int = MOT_MIN_FRAME_GAP,
              **filters: Any) -> ReIDDataset:
    """Ground-truth pedestrian boxes of MOT sequences as crops (ids from gt tracks).

    pid = a global id per (sequence, track); camid = the frame number, so that the Market-1501
    protocol only ignores items of the same frame; train = every crop; query = each track's crop on
    its first (or middle, ``query_frame="middle"``) frame; gallery = every other crop.

    Crops of one track a few frames apart are near copies, so matching them measures nothing:
    a gallery crop of a track fewer than ``min_frame_gap`` frames from that track's query frame gets
    the query's camid, so the protocol ignores it for its own query (it stays a distractor for the
    others). ``min_frame_gap=0`` scores every other frame, adjacent ones included.
    """
    from dataclasses import replace

    from .video import read_mot_sequences

    if query_frame not in ("first", "middle"):
        raise ValueError(f"query_frame: expected 'first' or 'middle', got {query_frame!r}")
    if not isinstance(min_frame_gap, int) or min_frame_gap < 0:
        raise ValueError(f"min_frame_gap: expected a non-negative number of frames, got {min_frame_gap!r}")
    train: list[ImageRecord] = []
    for seq in read_mot_sequences(root, "gt", **filters):
        base = len({r.pid for r in train})
        ids = {t: base + i for i, t in enumerate(sorted(set(seq.track_ids.tolist())))}
        for f, t, box in zip(seq.frames.tolist(), seq.track_ids.tolist(), seq.boxes.tolist()):
            train.append(ImageRecord(str(seq.image_path(f)), ids[t], int(f), video=seq.name, frame=int(f),
                                     track=int(t), box=tuple(float(v) for v in box)))
    if not train:
        raise ValueError(f"{root}: the MOT ground truth holds no pedestrian box on a frame with an image")
    by_pid: dict[int, list[int]] = {}
    for i, r in enumerate(train):
        by_pid.setdefault(r.pid, []).append(i)
    chosen: dict[int, int] = {}  # record index -> pid
    for pid, idx in by_pid.items():
        idx = sorted(idx, key=lambda i: train[i].frame)
        chosen[idx[0] if query_frame == "first" else idx[len(idx) // 2]] = pid
    query = [r for i, r in enumerate(train) if i in chosen]
    query_frame_of = {train[i].pid: train[i].frame for i in chosen}
    gallery = []
    for i, r in enumerate(train):
        if i in chosen:
            continue
        qf = query_frame_of[r.pid]
        gallery.append(replace(r, camid=qf) if abs(r.frame - qf) < min_frame_gap else r)
    return ReIDDataset("mot", root, train, query, gallery)


DATASETS: dict[str, Callable[..., ReIDDataset]] = {
    "market1501": _load_market1501,
    "msmt17": _load_msmt17,
    "dukemtmc": _load_dukemtmc,
    "cuhk03": _load_cuhk03,
    "folder": _load_folder,
    "mot": _load_mot,
}


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> ReIDDataset:
    """Read dataset ``name`` (one of :data:`DATASETS`) at ``root``.

    Options: ``cuhk03``: ``variant="detected"|"labeled"``; ``folder``: ``camera_pattern`` (regex,
    group 1 = camera); ``mot``: ``query_frame``, ``min_frame_gap`` (default 30 frames) and the filters of :func:`isr_reid.data.video.read_mot_sequence`.
    """
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"market": "market1501", "duke": "dukemtmc", "dukemtmcreid": "dukemtmc", "cuhk03np": "cuhk03"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"dataset: unknown name {name!r}; expected one of {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    return DATASETS[key](root, **options)


def record_images(records: list[ImageRecord]) -> list[Any]:
    """What to embed for each record: its path, or the PIL crop of its box (each frame decoded once)."""
    from .images import load_image
    from .video import crop_image

    out: list[Any] = []
    frame_path, frame = None, None
    for r in records:
        if r.box is None:
            out.append(r.path)
            continue
        if r.path != frame_path:
            frame, frame_path = load_image(r.path), r.path
        out.append(crop_image(frame, r.box))
    return out
