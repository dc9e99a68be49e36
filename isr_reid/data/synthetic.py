"""A procedurally drawn multi-camera pedestrian set, for the offline demo and for tests.

Each identity has fixed clothing (shirt and trouser colours, a pattern: solid, horizontal or
vertical stripes, checks or dots; hair, skin, shoes, an optional bag, body height and width). A
person walks across a camera's scene: the legs and arms swing with the walking phase, the
background behind the person shifts with position, and the detection box jitters. Each camera has
its own scene and lighting (per-channel gain, gamma, noise), so matching across cameras needs
clothing, not colour cast. Everything is seeded: the same arguments give the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["Camera", "Identity", "SyntheticSet", "make_cameras", "make_identities", "render_crop", "write_reid_set", "write_videos"]

PATTERNS = ("solid", "hstripes", "vstripes", "checks", "dots")
CANVAS = (256, 128)  # drawn at twice the crop size, then downsampled (antialiasing)


@dataclass(frozen=True)
class Identity:
    """A synthetic person's fixed appearance."""

    pid: int
    shirt: tuple[int, int, int]
    pattern: str
    pattern_colour: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shoes: tuple[int, int, int]
    bag: tuple[int, int, int] | None
    height: float
    width: float


@dataclass(frozen=True)
class Camera:
    """A camera: its scene texture and its lighting."""

    camid: int
    scene: np.ndarray  # (H, W_scene, 3) uint8, wider than a crop; the crop window slides over it
    gain: tuple[float, float, float]
    gamma: float
    noise: float


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    # Saturated, well-separated colours: pick a hue, then a saturation/value.
    h = rng.uniform(0, 1)
    s = rng.uniform(0.45, 1.0)
    v = rng.uniform(0.35, 1.0)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def make_identities(n: int, seed: int = 0, first_pid: int = 0) -> list[Identity]:
    """``n`` identities with distinct random clothing."""
    rng = np.random.default_rng(seed)
    skins = [(255, 220, 177), (229, 184, 143), (198, 134, 66), (141, 85, 36), (96, 60, 30)]
    out = []
    for k in range(n):
        out.append(Identity(
            pid=first_pid + k,
            shirt=_colour(rng),
            pattern=PATTERNS[int(rng.integers(len(PATTERNS)))],
            pattern_colour=_colour(rng),
            trousers=_colour(rng),
            skin=skins[int(rng.integers(len(skins)))],
            hair=tuple(int(c) for c in rng.integers(10, 120, 3)),
            shoes=tuple(int(c) for c in rng.integers(0, 90, 3)),
            bag=_colour(rng) if rng.random() < 0.4 else None,
            height=float(rng.uniform(0.86, 1.0)),
            width=float(rng.uniform(0.85, 1.15)),
        ))
    return out


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = np.array(_colour(rng), dtype=np.float32) * 0.5 + 60
    y = np.linspace(0.8, 1.2, height, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(base, (height, width, 3)) * y
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for _ in range(width // 40):  # buildings, windows, poles
        x0 = int(rng.integers(0, width))
        w = int(rng.integers(10, 60))
        top = int(rng.integers(0, height // 2))
        shade = tuple(int(c * rng.uniform(0.5, 1.1)) for c in _colour(rng))
        draw.rectangle([x0, top, x0 + w, height], fill=shade)
    floor = tuple(int(c) for c in rng.integers(70, 160, 3))
    draw.rectangle([0, int(height * 0.82), width, height], fill=floor)
    return np.asarray(canvas)


def make_cameras(n: int, seed: int = 100) -> list[Camera]:
    """``n`` cameras, each with its own scene and lighting."""
    rng = np.random.default_rng(seed)
    cams = []
    for c in range(n):
        gain = tuple(float(g) for g in rng.uniform(0.75, 1.2, 3))
        cams.append(Camera(c, _scene(rng, CANVAS[0], CANVAS[1] * 8), gain, float(rng.uniform(0.8, 1.25)), float(rng.uniform(3, 9))))
    return cams


def _patterned_rect(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], ident: Identity) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=ident.shirt)
    pc = ident.pattern_colour
    if ident.pattern == "hstripes":
        for y in range(y0, y1, 12):
            draw.rectangle([x0, y, x1, min(y + 5, y1)], fill=pc)
    elif ident.pattern == "vstripes":
        for x in range(x0, x1, 10):
            draw.rectangle([x, y0, min(x + 4, x1), y1], fill=pc)
    elif ident.pattern == "checks":
        for y in range(y0, y1, 12):
            for x in range(x0 + (6 if ((y - y0) // 12) % 2 else 0), x1, 12):
                draw.rectangle([x, y, min(x + 6, x1), min(y + 6, y1)], fill=pc)
    elif ident.pattern == "dots":
        for y in range(y0 + 6, y1 - 3, 14):
            for x in range(x0 + 6, x1 - 3, 14):
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=pc)


def render_crop(
    ident: Identity,
    camera: Camera,
    *,
    phase: float,
    position: float,
    rng: np.random.Generator,
    size: tuple[int, int] = (128, 64),
    mirror: bool = False,
) -> np.ndarray:
    """One detection crop (H, W, 3) uint8 of ``ident`` seen by ``camera`` at a walking ``phase`` and scene ``position`` in [0, 1]."""
    H, W = CANVAS
    scene_w = camera.scene.shape[1]
    x_off = int(position * (scene_w - W))
    canvas = Image.fromarray(camera.scene[:, x_off:x_off + W].copy())
    draw = ImageDraw.Draw(canvas)

    h = ident.height * H * 0.92
    top = H - h - 4
    cx = W / 2 + rng.normal(0, 3)
    bw = 34 * ident.width  # half torso width
    head_r = h * 0.075
    head_cy = top + head_r
    torso_top, torso_bot = top + h * 0.17, top + h * 0.52
    hip_y, foot_y = torso_bot, top + h
    swing = math.sin(phase) * 0.45

    # legs (trousers) swing around the hip
    for side, s in ((-1, swing), (1, -swing)):
        hx = cx + side * bw * 0.45
        fx = hx + math.sin(s) * (foot_y - hip_y)
        draw.line([(hx, hip_y), (fx, foot_y - 6)], fill=ident.trousers, width=int(bw * 0.55))
        draw.ellipse([fx - 9, foot_y - 12, fx + 9, foot_y], fill=ident.shoes)
    # arms swing opposite to the legs
    for side, s in ((-1, -swing), (1, swing)):
        sx = cx + side * bw * 1.05
        ex = sx + math.sin(s) * h * 0.3
        draw.line([(sx, torso_top + 6), (ex, torso_top + h * 0.32)], fill=ident.shirt, width=int(bw * 0.3))
        draw.ellipse([ex - 5, torso_top + h * 0.32 - 5, ex + 5, torso_top + h * 0.32 + 5], fill=ident.skin)
    _patterned_rect(draw, (int(cx - bw), int(torso_top), int(cx + bw), int(torso_bot)), ident)
    if ident.bag is not None:
        draw.rectangle([cx + bw - 4, torso_top + h * 0.15, cx + bw + 16, torso_top + h * 0.33], fill=ident.bag)
        draw.line([(cx - bw * 0.6, torso_top), (cx + bw + 6, torso_top + h * 0.15)], fill=ident.bag, width=4)
    draw.ellipse([cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r], fill=ident.skin)
    draw.chord([cx - head_r, head_cy - head_r - 2, cx + head_r, head_cy + head_r * 0.4], 180, 360, fill=ident.hair)

    # detection jitter: a box a little smaller than the canvas, shifted, kept inside it
    scale = rng.uniform(0.88, 1.0)
    bw_, bh_ = W * scale, H * scale
    x0 = float(np.clip((W - bw_) / 2 + rng.normal(0, 4), 0, W - bw_))
    y0 = float(np.clip(H - bh_ + rng.normal(0, 4), 0, H - bh_))
    box = (x0, y0, x0 + bw_, y0 + bh_)
    img = canvas.crop(tuple(round(v) for v in box)).resize((size[1], size[0]), Image.BILINEAR)
    if mirror:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)

    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = np.power(arr * np.array(camera.gain, dtype=np.float32), camera.gamma)
    arr = arr * 255.0 + rng.normal(0, camera.noise, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


@dataclass
class SyntheticSet:
    """Paths and labels of a written set: query and gallery crops with pids and camera ids."""

    root: Path
    query: list[tuple[str, int, int]]
    gallery: list[tuple[str, int, int]]


def write_reid_set(
    root: str | Path,
    identities: list[Identity],
    cameras: list[Camera],
    *,
    shots_per_camera: int = 4,
    seed: int = 7,
    size: tuple[int, int] = (128, 64),
) -> SyntheticSet:
    """Write ``<root>/query/<pid>/c<cam>_<k>.jpg`` (camera 0, one shot) and ``<root>/gallery/<pid>/...`` (other cameras).

    This is the generic folder layout that ``isr-reid evaluate --dataset folder`` reads.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    query, gallery = [], []
    for ident in identities:
        for cam in cameras:
            shots = 1 if cam.camid == 0 else shots_per_camera
            split = "query" if cam.camid == 0 else "gallery"
            for k in range(shots):
                crop = render_crop(ident, cam, phase=rng.uniform(0, 2 * math.pi), position=rng.uniform(0, 1),
                                   rng=rng, size=size, mirror=bool(rng.random() < 0.5))
                path = root / split / f"{ident.pid:04d}" / f"c{cam.camid}_{k:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(crop).save(path, quality=92)
                (query if split == "query" else gallery).append((str(path), ident.pid, cam.camid))
    return SyntheticSet(root, query, gallery)


def write_videos(
    root: str | Path,
    identities: list[Identity],
    cameras: list[Camera],
    *,
    clips_per_camera: int = 2,
    persons_per_clip: int = 6,
    frames: int = 8,
    seed: int = 11,
    size: tuple[int, int] = (128, 64),
) -> list[Path]:
    """Write unlabeled videos as crops: ``<root>/<video>/<frame>/<crop>.jpg``, persons walking across each clip.

    Crop names are shuffled per frame so that nothing but appearance links a person across frames.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    videos = []
    for cam in cameras:
        for clip in range(clips_per_camera):
            video = root / f"cam{cam.camid}_clip{clip}"
            people = rng.choice(len(identities), size=min(persons_per_clip, len(identities)), replace=False)
            start = rng.uniform(0, 0.6, len(people))
            speed = rng.uniform(0.05, 0.1, len(people))  # fast enough that the background changes between frames
            phase0 = rng.uniform(0, 2 * math.pi, len(people))
            for t in range(frames):
                frame_dir = video / f"{t:06d}"
                frame_dir.mkdir(parents=True, exist_ok=True)
                order = rng.permutation(len(people))
                for slot, j in enumerate(order):
                    crop = render_crop(identities[int(people[j])], cam, phase=phase0[j] + 0.9 * t,
                                       position=float(np.clip(start[j] + speed[j] * t, 0, 1)), rng=rng, size=size)
                    Image.fromarray(crop).save(frame_dir / f"{slot:03d}.jpg", quality=92)
            videos.append(video)
    return videos
