"""Unlabeled video and tracks for ISR training: MOT-format sequences, crop folders and crop lists.

Three on-disk forms are read into one :class:`VideoSet` (videos -> frames -> crops):

(a) MOTChallenge sequences (:func:`read_mot_sequence`): ``seqinfo.ini``, ``img1/<frame:06d>.jpg``,
    ``det/det.txt`` (``frame,-1,x,y,w,h,score,...``) and ``gt/gt.txt``
    (``frame,track,x,y,w,h,flag,class,visibility``);
(b) a folder layout ``<root>/<video>/<frame>/<crop>.jpg`` (each file is one person crop);
(c) a CSV or JSON list of crops with the columns ``video, frame, path`` and optionally
    ``x, y, w, h`` (a box in the image at ``path``), ``score`` and ``track``.

Boxes are always ``(x, y, w, h)`` in 0-based pixel coordinates of the image file (MOT files are
1-based: their left/top are shifted by one on reading). The frame-pair sampler that training draws
batches with lives in :mod:`isr_reid.data.frame_pairs`; it is re-exported here, its former home.
"""

from __future__ import annotations

import configparser
import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .frame_pairs import FramePair, FramePairSampler  # re-exported: the import path before the split
from .images import IMAGE_EXTENSIONS

__all__ = [
    "Crop",
    "FramePair",
    "FramePairSampler",
    "MOTSequence",
    "Video",
    "VideoSet",
    "crop_image",
    "find_mot_sequences",
    "load_videos",
    "read_mot_sequence",
    "read_mot_sequences",
]

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------- MOT


@dataclass(frozen=True)
class MOTSequence:
    """One MOT-format sequence: per-detection arrays (all of length N) and where its frames are.

    ``track_ids`` is -1 for detections (``det``); ``visibility`` is NaN for detections; ``scores`` is
    the detector score for ``det`` and 1.0 for ``gt``. ``image_frames`` lists the frame numbers that
    have an image file (only detections on those frames are kept).
    """

    name: str
    root: Path
    image_dir: Path
    image_ext: str
    frame_rate: float | None
    image_size: tuple[int, int] | None  # (height, width) from seqinfo.ini
    source: str
    frames: np.ndarray  # (N,) int64
    track_ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float64, x, y, w, h, 0-based
    scores: np.ndarray  # (N,) float64
    visibility: np.ndarray  # (N,) float64
    image_frames: tuple[int, ...] = ()

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def image_path(self, frame: int) -> Path:
        """The image file of frame number ``frame`` (MOT names frames ``%06d`` from 1)."""
        return self.image_dir / f"{int(frame):06d}{self.image_ext}"

    def indices(self, frame: int) -> np.ndarray:
        """The row indices of the detections on frame ``frame``."""
        return np.flatnonzero(self.frames == int(frame))


def _read_seqinfo(root: Path) -> dict[str, str]:
    path = root / "seqinfo.ini"
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep MOT's camelCase keys
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as e:
        raise ValueError(f"{path}: not a valid seqinfo.ini ({e})") from e
    if "Sequence" not in parser:
        raise ValueError(f"{path}: no [Sequence] section")
    return dict(parser["Sequence"])


def _read_mot_txt(path: Path, min_columns: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"MOT annotation file not found: {path}")
    rows: list[list[float]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.replace(" ", "").split(",")
            if len(parts) < min_columns:
                raise ValueError(f"{path}:{lineno}: expected at least {min_columns} comma-separated columns, got {len(parts)}")
            try:
                rows.append([float(p) for p in parts[:9]] + [np.nan] * (9 - min(len(parts), 9)))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not a number in {line!r}") from e
    return np.asarray(rows, dtype=np.float64).reshape(-1, 9)


def _min_size_pair(min_size: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(min_size, (int, float)):
        return float(min_size), 0.0
    if len(min_size) != 2:
        raise ValueError(f"min_size must be a height or a (height, width) pair, got {min_size!r}")
    return float(min_size[0]), float(min_size[1])


def read_mot_sequence(
    root: str | os.PathLike[str],
    source: str = "det",
    *,
    min_score: float | None = None,
    min_size: float | Sequence[float] = 0.0,
    min_visibility: float = 0.0,
    classes: Sequence[int] | None = (1,),
    include_ignored: bool = False,
) -> MOTSequence:
    """Read one MOT sequence's detections (``source="det"``) or ground-truth boxes (``source="gt"``).

    Kept: rows on frames that have an image; ``score >= min_score`` (det); box height and width at
    least ``min_size`` (a height, or a (height, width) pair, in pixels); for gt, ``class in classes``
    (1 = pedestrian; None keeps all), flag 1 unless ``include_ignored``, ``visibility >= min_visibility``.
    """
    root = Path(root)
    if source not in ("det", "gt"):
        raise ValueError(f"source must be 'det' or 'gt', got {source!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"MOT sequence directory not found: {root}")
    info = _read_seqinfo(root)
    image_dir = root / info.get("imDir", "img1")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{root}: no image folder {image_dir.name}/ (a MOT sequence has img1/ with its frames)")
    image_ext = info.get("imExt", ".jpg")
    image_frames = sorted(
        int(p.stem) for p in image_dir.iterdir() if p.suffix.lower() == image_ext.lower() and p.stem.isdigit()
    )
    if not image_frames:
        raise FileNotFoundError(f"{image_dir}: no frame images named <number>{image_ext}")
    data = _read_mot_txt(root / source / f"{source}.txt", min_columns=6 if source == "det" else 7)
    keep = np.isin(data[:, 0].astype(np.int64), image_frames)
    min_h, min_w = _min_size_pair(min_size)
    keep &= (data[:, 5] >= min_h) & (data[:, 4] >= min_w) & (data[:, 4] > 0) & (data[:, 5] > 0)
    if source == "det":
        scores = np.where(np.isnan(data[:, 6]), 1.0, data[:, 6])
        if min_score is not None:
            keep &= scores >= min_score
        track_ids = np.full(len(data), -1, dtype=np.int64)
        visibility = np.full(len(data), np.nan)
    else:
        flags = data[:, 6]
        if not include_ignored:
            keep &= flags == 1
        if classes is not None:
            cls = data[:, 7]
            # MOT15-style gt files have no class column (NaN): treat every row as a pedestrian
            keep &= np.isnan(cls) | np.isin(cls, list(classes))
        visibility = np.where(np.isnan(data[:, 8]), 1.0, data[:, 8])
        keep &= visibility >= min_visibility
        scores = np.ones(len(data))
        track_ids = data[:, 1].astype(np.int64)
    boxes = data[:, 2:6].copy()
    boxes[:, :2] -= 1.0  # MOT's pixel grid starts at (1, 1)
    order = np.lexsort((track_ids[keep], data[keep, 0]))
    height, width = info.get("imHeight"), info.get("imWidth")
    frame_rate = info.get("frameRate")
    return MOTSequence(
        name=info.get("name", root.name),
        root=root,
        image_dir=image_dir,
        image_ext=image_ext,
        frame_rate=float(frame_rate) if frame_rate else None,
        image_size=(int(height), int(width)) if height and width else None,
        source=source,
        frames=data[keep, 0].astype(np.int64)[order],
        track_ids=track_ids[keep][order],
        boxes=boxes[keep][order],
        scores=scores[keep][order],
        visibility=visibility[keep][order],
        image_frames=tuple(image_frames),
    )


def _is_mot_sequence(path: Path) -> bool:
    return (path / "seqinfo.ini").is_file() or ((path / "img1").is_dir() and ((path / "det").is_dir() or (path / "gt").is_dir()))


def find_mot_sequences(root: str | os.PathLike[str]) -> list[Path]:
    """MOT sequence folders at ``root``: itself, its children, or its grandchildren (e.g. ``MOT17/train/*``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    if _is_mot_sequence(root):
        return [root]
    for depth in (1, 2):
        found = sorted(p for p in root.glob("/".join(["*"] * depth)) if p.is_dir() and _is_mot_sequence(p))
        if found:
            return found
    return []


def read_mot_sequences(root: str | os.PathLike[str], source: str = "det", **filters: Any) -> list[MOTSequence]:
    """Every MOT sequence under ``root`` (see :func:`find_mot_sequences`), read with :func:`read_mot_sequence`."""
    paths = find_mot_sequences(root)
    if not paths:
        raise FileNotFoundError(f"no MOT sequence under {root} (looked for folders with seqinfo.ini or img1/ + det/)")
    return [read_mot_sequence(p, source, **filters) for p in paths]


# ------------------------------------------------------------------------------------- video sets


@dataclass(frozen=True)
class Crop:
    """One person crop: an image file and, for crops inside a frame, a box (x, y, w, h; 0-based pixels)."""

    path: str
    box: Box | None = None
    score: float = 1.0
    track: int = -1


@dataclass
class Video:
    """One video: its frame keys in temporal order, and the crops of each frame."""

    name: str
    frames: list[int]
    crops: dict[int, list[Crop]]

    def num_crops(self) -> int:
        return sum(len(c) for c in self.crops.values())


@dataclass
class VideoSet:
    """A list of videos (the training data of ISR)."""

    videos: list[Video] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.videos)

    def num_crops(self) -> int:
        """The number of crops in all videos."""
        return sum(v.num_crops() for v in self.videos)

    @classmethod
    def from_mot(cls, root: str | os.PathLike[str], source: str = "det", **filters: Any) -> VideoSet:
        """Videos from MOT sequences (layout a); ``filters`` go to :func:`read_mot_sequence`."""
        return cls([_video_from_mot(s) for s in read_mot_sequences(root, source, **filters)])

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str]) -> VideoSet:
        """Videos from ``<root>/<video>/<frame>/<crop>.jpg`` (layout b); frames sort numerically when numeric."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"video folder not found: {root}")
        videos = []
        for vdir in sorted(p for p in root.iterdir() if p.is_dir()):
            frame_dirs = [p for p in vdir.iterdir() if p.is_dir()]
            frame_dirs.sort(key=lambda p: (0, int(p.name), "") if p.name.isdigit() else (1, 0, p.name))
            crops: dict[int, list[Crop]] = {}
            for i, fdir in enumerate(frame_dirs):
                files = sorted(f for f in fdir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
                if files:
                    crops[i] = [Crop(str(f)) for f in files]
            if crops:
                videos.append(Video(vdir.name, sorted(crops), crops))
        if not videos:
            raise FileNotFoundError(f"no crops under {root}: expected <root>/<video>/<frame>/<crop>.jpg")
        return cls(videos)

    @classmethod
    def from_list(cls, path: str | os.PathLike[str]) -> VideoSet:
        """Videos from a CSV or JSON crop list (layout c); relative paths are relative to the list's folder."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"crop list not found: {path}")
        if path.suffix.lower() == ".json":
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            rows = data["crops"] if isinstance(data, Mapping) and "crops" in data else data
            if not isinstance(rows, list):
                raise ValueError(f"{path}: expected a JSON list of crops or {{'crops': [...]}}")
        elif path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            raise ValueError(f"{path}: a crop list must be .csv or .json")
        return cls(_videos_from_rows(rows, path))


def _video_from_mot(seq: MOTSequence) -> Video:
    crops: dict[int, list[Crop]] = {}
    for i in range(len(seq)):
        frame = int(seq.frames[i])
        crops.setdefault(frame, []).append(
            Crop(str(seq.image_path(frame)), tuple(float(v) for v in seq.boxes[i]), float(seq.scores[i]), int(seq.track_ids[i]))
        )
    return Video(seq.name, sorted(crops), crops)


def _videos_from_rows(rows: Iterable[Mapping[str, Any]], list_path: Path) -> list[Video]:
    by_video: dict[str, dict[int, list[Crop]]] = {}
    for i, row in enumerate(rows):
        where = f"{list_path} row {i + 1}"
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected an object with video, frame, path")
        missing = [k for k in ("video", "frame", "path") if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        try:
            frame = int(row["frame"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: frame must be an integer, got {row['frame']!r}") from e
        p = Path(str(row["path"]))
        if not p.is_absolute():
            p = list_path.parent / p
        box_vals = [row.get(k) for k in ("x", "y", "w", "h")]
        box: Box | None = None
        if any(v not in (None, "") for v in box_vals):
            try:
                box = tuple(float(v) for v in box_vals)  # type: ignore[assignment]
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: a box needs numeric x, y, w, h, got {box_vals!r}") from e
            if box[2] <= 0 or box[3] <= 0:
                raise ValueError(f"{where}: box width and height must be positive, got {box!r}")
        score = float(row["score"]) if row.get("score") not in (None, "") else 1.0
        track = int(row["track"]) if row.get("track") not in (None, "") else -1
        by_video.setdefault(str(row["video"]), {}).setdefault(frame, []).append(Crop(str(p), box, score, track))
    if not by_video:
        raise ValueError(f"{list_path}: the crop list is empty")
    return [Video(name, sorted(fr), fr) for name, fr in sorted(by_video.items())]


def load_videos(
    source: str | os.PathLike[str] | VideoSet,
    *,
    min_score: float | None = None,
    min_size: float | Sequence[float] = 0.0,
    mot_source: str = "det",
) -> VideoSet:
    """A :class:`VideoSet` from a MOT folder, a crop folder, a CSV/JSON list, or an existing set (filtered).

    Crops with ``score < min_score`` or a box smaller than ``min_size`` (height, or (height, width))
    are dropped; for crop files without a box the size is the file's image size (header only).
    """
    if isinstance(source, VideoSet):
        vs = source
    else:
        path = Path(source)
        if path.is_file():
            vs = VideoSet.from_list(path)
        elif not path.is_dir():
            raise FileNotFoundError(f"videos not found: {path}")
        elif find_mot_sequences(path):
            vs = VideoSet.from_mot(path, mot_source)
        else:
            vs = VideoSet.from_folder(path)
    return _filter(vs, min_score, _min_size_pair(min_size))


def _crop_size(crop: Crop) -> tuple[float, float]:
    if crop.box is not None:
        return crop.box[3], crop.box[2]
    from PIL import Image

    with Image.open(crop.path) as img:  # reads the header only
        return float(img.height), float(img.width)


def _filter(vs: VideoSet, min_score: float | None, min_size: tuple[float, float]) -> VideoSet:
    if min_score is None and min_size == (0.0, 0.0):
        return vs
    videos = []
    for v in vs.videos:
        crops: dict[int, list[Crop]] = {}
        for frame in v.frames:
            kept = []
            for c in v.crops[frame]:
                if min_score is not None and c.score < min_score:
                    continue
                if min_size != (0.0, 0.0):
                    h, w = _crop_size(c)
                    if h < min_size[0] or w < min_size[1]:
                        continue
                kept.append(c)
            if kept:
                crops[frame] = kept
        if crops:
            videos.append(Video(v.name, sorted(crops), crops))
    return VideoSet(videos)


def crop_image(image: Any, box: Box | None) -> Any:
    """The PIL crop of ``box`` (x, y, w, h; 0-based) from a PIL image, clipped to the image; the image if None."""
    if box is None:
        return image
    x, y, w, h = box
    left, top = max(0, round(x)), max(0, round(y))
    right, bottom = min(image.width, round(x + w)), min(image.height, round(y + h))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box!r} lies outside the {image.width}x{image.height} image")
    return image.crop((left, top, right, bottom))
