"""A procedurally drawn multi-camera pedestrian world, for the offline demo and for tests.

It mirrors the setting ISR trains in (Dou et al., ICCV 2023): unlabeled videos from static
cameras, several persons in each frame, detector boxes with jitter, misses and false boxes.

- **Identities** keep what survives a change of camera: clothing colours from a realistic,
  shared palette (so many people share a shirt or trouser colour), a torso pattern, sleeve
  length, trousers / shorts / skirt, hair colour and length, an optional hat and bag (backpack or
  shoulder bag), body height and build.
- **Cameras** own the nuisances that an ImageNet network is sensitive to: a cluttered static scene
  (buildings, windows, posters with stripes and checks in the clothing palette, trees, poles),
  a viewpoint (side view, or front and back views), a person scale, foreground occluders (a low
  wall, a car, a pole, a bush), a shadow band, a colour cast, gamma, blur and sensor noise.
- **Frames** hold several persons of one camera at different depths; they occlude one another and
  are occluded by the scene. Everyone in a frame shares its background and lighting, so the only
  thing that tells two crops of one frame apart is the person.

Training videos are written in the MOTChallenge layout (``img1/``, ``det/det.txt`` with detector
boxes and no identities, ``gt/gt.txt`` with the true boxes and identities, ``seqinfo.ini``); the
held-out retrieval set is written as crops ``query/<pid>/c<cam>_<k>.jpg`` and ``gallery/...``.
Everything is seeded: the same arguments give the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .video import Crop, Video, VideoSet

__all__ = [
    "Camera",
    "Identity",
    "SyntheticSet",
    "SyntheticVideos",
    "make_cameras",
    "make_identities",
    "render_crop",
    "render_frame",
    "write_reid_set",
    "write_videos",
]

FRAME = (192, 352)  # (height, width) of a written frame; drawn at twice this size, then downsampled
_SS = 2  # supersampling factor

# A realistic clothing palette: many people share a colour, so identity is in the combination.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (28, 28, 30), "charcoal": (64, 64, 70), "grey": (128, 128, 130), "white": (230, 230, 225),
    "navy": (30, 40, 90), "blue": (40, 90, 180), "sky": (120, 170, 220), "red": (180, 35, 40),
    "maroon": (110, 30, 45), "green": (40, 120, 60), "olive": (110, 110, 50), "beige": (200, 180, 140),
    "brown": (110, 70, 40), "yellow": (225, 190, 50), "orange": (225, 120, 40), "purple": (110, 60, 140),
    "pink": (230, 140, 170), "teal": (30, 130, 130),
}
_COLOURS = list(PALETTE.values())
PATTERNS = ("solid", "solid", "hstripes", "vstripes", "checks", "dots", "logo")
LOWER = ("trousers", "trousers", "trousers", "shorts", "skirt")
BAGS = (None, None, "backpack", "shoulder")
_SKINS = ((255, 220, 177), (229, 184, 143), (198, 134, 66), (141, 85, 36), (96, 60, 30))
_HAIRS = ((20, 15, 10), (60, 40, 20), (110, 75, 40), (190, 160, 90), (140, 140, 140))

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Identity:
    """A synthetic person's fixed appearance: what stays the same in every camera."""

    pid: int
    shirt: Colour
    pattern: str
    pattern_colour: Colour
    sleeves: str  # "long" or "short"
    lower: str  # "trousers", "shorts" or "skirt"
    lower_colour: Colour
    skin: Colour
    hair: Colour
    long_hair: bool
    shoes: Colour
    hat: Colour | None
    bag: str | None  # None, "backpack" or "shoulder"
    bag_colour: Colour
    height: float
    width: float

    @property
    def trousers(self) -> Colour:
        """The colour of the lower garment (kept for callers of the first version)."""
        return self.lower_colour


@dataclass(frozen=True)
class Camera:
    """A static camera: its scene, viewpoint, person scale, occluders and lighting."""

    camid: int
    scene: np.ndarray  # (2 * FRAME[0], 2 * FRAME[1], 3) uint8, the background drawn at supersampled size
    view: str  # "side" (people seen in profile) or "frontal" (front and back views)
    scale: float  # person height / frame height at the nearest depth
    occluders: tuple[tuple[Any, ...], ...]  # foreground objects drawn over the persons
    shadow: tuple[float, float, float]  # (x0, x1) as fractions of the width, and the brightness inside
    gain: tuple[float, float, float]
    gamma: float
    blur: float
    noise: float


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def make_identities(n: int, seed: int = 0, first_pid: int = 0) -> list[Identity]:
    """``n`` identities with random clothing from the shared palette (pids ``first_pid``...)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        shirt = _pick(rng, _COLOURS)
        pattern_colour = _pick(rng, [c for c in _COLOURS if c != shirt])
        out.append(Identity(
            pid=first_pid + k,
            shirt=shirt,
            pattern=_pick(rng, PATTERNS),
            pattern_colour=pattern_colour,
            sleeves="short" if rng.random() < 0.4 else "long",
            lower=_pick(rng, LOWER),
            lower_colour=_pick(rng, _COLOURS),
            skin=_pick(rng, _SKINS),
            hair=_pick(rng, _HAIRS),
            long_hair=bool(rng.random() < 0.35),
            shoes=_pick(rng, [*_COLOURS[:7], PALETTE["brown"]]),
            hat=_pick(rng, _COLOURS) if rng.random() < 0.2 else None,
            bag=_pick(rng, BAGS),
            bag_colour=_pick(rng, _COLOURS),
            height=float(rng.uniform(0.88, 1.0)),
            width=float(rng.uniform(0.8, 1.2)),
        ))
    return out


def _random_colour(rng: np.random.Generator, lo: int = 40, hi: int = 200) -> Colour:
    return tuple(int(c) for c in rng.integers(lo, hi, 3))  # type: ignore[return-value]


def _pattern(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], kind: str, base: Colour,
             colour: Colour, period: float) -> None:
    """Fill ``box`` with ``base`` and a ``kind`` pattern in ``colour`` with the given period (pixels)."""
    x0, y0, x1, y1 = box
    draw.rectangle(box, fill=base)
    p = max(period, 3.0)
    if kind == "hstripes":
        y = y0 + p / 2
        while y < y1:
            draw.rectangle([x0, y, x1, min(y + p / 2, y1)], fill=colour)
            y += p
    elif kind == "vstripes":
        x = x0 + p / 4
        while x < x1:
            draw.rectangle([x, y0, min(x + p / 2.4, x1), y1], fill=colour)
            x += p
    elif kind == "checks":
        row, y = 0, y0
        while y < y1:
            x = x0 + (p / 2 if row % 2 else 0)
            while x < x1:
                draw.rectangle([x, y, min(x + p / 2, x1), min(y + p / 2, y1)], fill=colour)
                x += p
            y += p / 2
            row += 1
    elif kind == "dots":
        r = p * 0.22
        y = y0 + p / 2
        while y < y1 - r:
            x = x0 + p / 2
            while x < x1 - r:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
                x += p
            y += p
    elif kind == "logo":
        cx, w = (x0 + x1) / 2, (x1 - x0)
        draw.rectangle([cx - w * 0.28, y0 + (y1 - y0) * 0.2, cx + w * 0.28, y0 + (y1 - y0) * 0.55], fill=colour)


def _muted(colour: Colour, saturation: float) -> Colour:
    """``colour`` mixed with its own grey: ``saturation`` 1 keeps it, 0 gives the grey."""
    grey = sum(colour) / 3
    return tuple(int(grey + saturation * (c - grey)) for c in colour)  # type: ignore[return-value]


def _scene(rng: np.random.Generator, clutter: float = 0.5) -> np.ndarray:
    """A street scene at supersampled size: wall, buildings with windows, posters, trees, poles, floor.

    ``clutter`` in [0, 1] sets the colour saturation of the scene, the contrast of its windows and
    how many patterned posters (in the clothing palette) hang on its walls.
    """
    H, W = FRAME[0] * _SS, FRAME[1] * _SS
    base = np.array(_muted(_random_colour(rng, 80, 190), clutter), dtype=np.float32)
    y = np.linspace(0.85, 1.15, H, dtype=np.float32)[:, None, None]
    img = Image.fromarray(np.clip(np.broadcast_to(base, (H, W, 3)) * y, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    ground = int(H * 0.72)
    x = -int(rng.integers(0, 60))
    while x < W:  # a row of buildings with windows and doors
        w = int(rng.integers(80, 220))
        top = int(rng.integers(0, H // 3))
        colour = _muted(_random_colour(rng, 60, 200), clutter)
        draw.rectangle([x, top, x + w, ground], fill=colour)
        win = tuple(int(c * (1 - 0.5 * clutter)) for c in colour)
        ww, wh = int(rng.integers(12, 26)), int(rng.integers(16, 30))
        for wy in range(top + 14, ground - wh - 10, wh + 18):
            for wx in range(x + 10, x + w - ww - 6, ww + 14):
                draw.rectangle([wx, wy, wx + ww, wy + wh], fill=win)
        x += w + int(rng.integers(0, 30))
    for _ in range(int(rng.integers(0, 2) + round(4 * clutter))):  # posters and signs in clothing colours and patterns
        pw, ph = int(rng.integers(30, 70)), int(rng.integers(40, 110))
        px, py = int(rng.integers(0, W - pw)), int(rng.integers(H // 5, ground - ph))
        _pattern(draw, (px, py, px + pw, py + ph), _pick(rng, PATTERNS[2:]), _muted(_pick(rng, _COLOURS), clutter),
                 _muted(_pick(rng, _COLOURS), clutter), float(rng.uniform(10, 24)))
    for _ in range(int(rng.integers(1, 4))):  # trees
        tx, r = int(rng.integers(0, W)), int(rng.integers(30, 60))
        draw.rectangle([tx - 6, ground - 3 * r, tx + 6, ground], fill=_muted((90, 60, 35), clutter))
        draw.ellipse([tx - r, ground - 4 * r, tx + r, ground - 2 * r], fill=_muted(_random_colour(rng, 30, 140), clutter))
    for _ in range(int(rng.integers(1, 4))):  # poles in the background
        px = int(rng.integers(0, W))
        draw.rectangle([px, int(H * 0.1), px + 6, ground], fill=_muted(_random_colour(rng, 40, 120), clutter))
    floor = _muted(_random_colour(rng, 70, 160), clutter)
    draw.rectangle([0, ground, W, H], fill=floor)
    line = tuple(int(c * 0.8) for c in floor)
    for k in range(0, W, int(rng.integers(40, 90))):
        draw.line([(k, ground), (k - 80, H)], fill=line, width=2)
    return np.asarray(img)


def _occluders(rng: np.random.Generator) -> tuple[tuple[Any, ...], ...]:
    """Foreground objects in frame fractions: (kind, x0, x1, top, colour)."""
    out = []
    for _ in range(int(rng.integers(1, 3))):
        kind = _pick(rng, ("wall", "car", "pole", "bush"))
        x0 = float(rng.uniform(-0.1, 0.8))
        width = {"wall": rng.uniform(0.25, 0.45), "car": rng.uniform(0.22, 0.3), "pole": 0.025, "bush": rng.uniform(0.1, 0.18)}[kind]
        top = {"wall": rng.uniform(0.72, 0.8), "car": rng.uniform(0.62, 0.7), "pole": 0.0, "bush": rng.uniform(0.68, 0.78)}[kind]
        out.append((kind, x0, x0 + float(width), float(top), _random_colour(rng, 40, 200)))
    return tuple(out)


def make_cameras(n: int, seed: int = 100, clutter: float = 0.5) -> list[Camera]:
    """``n`` cameras, each with its own scene, viewpoint (alternating side / frontal), scale, occluders and lighting.

    ``clutter`` in [0, 1]: how colourful and busy the scenes are (see :func:`_scene`).
    """
    if not 0.0 <= clutter <= 1.0:
        raise ValueError(f"clutter must be in [0, 1], got {clutter}")
    rng = np.random.default_rng(seed)
    cams = []
    for c in range(n):
        s0 = float(rng.uniform(0.0, 0.7))
        cams.append(Camera(
            camid=c,
            scene=_scene(rng, clutter),
            view="side" if c % 2 == 0 else "frontal",
            scale=float(rng.uniform(0.5, 0.75)),
            occluders=_occluders(rng),
            shadow=(s0, s0 + float(rng.uniform(0.15, 0.35)), float(rng.uniform(0.55, 0.8))),
            gain=tuple(float(g) for g in rng.uniform(0.85, 1.15, 3)),  # type: ignore[arg-type]
            gamma=float(rng.uniform(0.8, 1.25)),
            blur=float(rng.uniform(0.0, 1.0)),
            noise=float(rng.uniform(2, 8)),
        ))
    return cams


@dataclass(frozen=True)
class _Placed:
    """A person in a frame: where (foot centre x in [0, 1], depth in [0, 1]), pose and facing."""

    ident: Identity
    x: float
    depth: float
    phase: float
    facing: int  # +1: walking right (side view) or towards the camera (frontal view); -1 the other way
    turned: bool = False  # seen from the camera's other viewpoint (a person turning: side <-> front/back)


def _draw_person(draw: ImageDraw.ImageDraw, ident: Identity, view: str, facing: int, phase: float,
                 cx: float, foot: float, h: float, paint: Callable[[Colour], Any]) -> tuple[float, float, float, float]:
    """Draw one person (supersampled pixels); returns its box (x0, y0, x1, y1)."""
    side = view == "side"
    back = view == "frontal" and facing < 0
    top = foot - h
    head_r = 0.075 * h
    head_cy = top + head_r
    torso_top, torso_bot = top + 0.17 * h, top + 0.52 * h
    bw = (0.085 if side else 0.13) * h * ident.width
    leg_w = (0.09 if side else 0.085) * h * ident.width
    swing = math.sin(phase)
    skin = paint(ident.skin)
    lower = paint(ident.lower_colour)
    # legs
    leg_len = foot - torso_bot
    for k, s in ((-1, swing), (1, -swing)):
        hx = cx + (0 if side else k * bw * 0.45)
        if side:
            fx, fy = hx + math.sin(s * 0.5) * leg_len * facing, foot - 0.02 * h
        else:
            fx, fy = hx, foot - 0.02 * h - max(0.0, s) * 0.04 * h
        cover = {"trousers": 1.0, "shorts": 0.42, "skirt": 0.0}[ident.lower]
        draw.line([(hx, torso_bot), (fx, fy)], fill=skin, width=max(1, int(leg_w)))
        if cover > 0:
            kx, ky = hx + (fx - hx) * cover, torso_bot + (fy - torso_bot) * cover
            draw.line([(hx, torso_bot), (kx, ky)], fill=lower, width=max(1, int(leg_w)))
        draw.ellipse([fx - leg_w * 0.7, fy - leg_w * 0.45, fx + leg_w * 0.7, fy + leg_w * 0.45], fill=paint(ident.shoes))
    if ident.lower == "skirt":
        sb = torso_bot + 0.17 * h
        draw.polygon([(cx - bw, torso_bot), (cx + bw, torso_bot), (cx + bw * 1.25, sb), (cx - bw * 1.25, sb)], fill=lower)
    # backpack behind the body (side view) / on the back (back view)
    bag = paint(ident.bag_colour)
    if ident.bag == "backpack" and side:
        bx = cx - facing * (bw + 0.05 * h)
        draw.rectangle([bx - 0.06 * h, torso_top + 0.03 * h, bx + 0.06 * h, torso_top + 0.24 * h], fill=bag)
    # torso with its pattern; the pattern is drawn on a separate patch so masks stay solid
    box = (cx - bw, torso_top, cx + bw, torso_bot)
    if paint(ident.shirt) == ident.shirt:
        _pattern(draw, box, ident.pattern, ident.shirt, ident.pattern_colour, 0.055 * h)
    else:
        draw.rectangle(box, fill=paint(ident.shirt))
    if ident.bag == "backpack" and back:
        draw.rectangle([cx - bw * 0.75, torso_top + 0.03 * h, cx + bw * 0.75, torso_top + 0.27 * h], fill=bag)
    elif ident.bag == "backpack" and not side:
        for k in (-1, 1):
            draw.line([(cx + k * bw * 0.6, torso_top), (cx + k * bw * 0.6, torso_top + 0.2 * h)], fill=bag, width=max(1, int(0.02 * h)))
    elif ident.bag == "shoulder":
        k = 1 if ident.pid % 2 else -1
        draw.line([(cx - k * bw * 0.7, torso_top), (cx + k * bw, torso_top + 0.3 * h)], fill=bag, width=max(1, int(0.018 * h)))
        draw.rectangle([cx + k * bw - 0.05 * h, torso_top + 0.27 * h, cx + k * bw + 0.07 * h, torso_top + 0.4 * h], fill=bag)
    # arms: two at the sides (front/back), one swinging (side)
    arm_w = max(1, int(0.05 * h * ident.width))
    arm_len = 0.33 * h
    sleeve = paint(ident.shirt)
    arms = ((0, -swing),) if side else ((-1, swing), (1, -swing))
    for k, s in arms:
        sx, sy = cx + k * (bw + arm_w * 0.4), torso_top + 0.02 * h
        ex = sx + (math.sin(s * 0.6) * arm_len * facing if side else k * 0.02 * h + s * 0.015 * h)
        ey = sy + arm_len * (math.cos(s * 0.6) if side else 1.0)
        draw.line([(sx, sy), (ex, ey)], fill=skin, width=arm_w)
        f = 1.0 if ident.sleeves == "long" else 0.4
        draw.line([(sx, sy), (sx + (ex - sx) * f, sy + (ey - sy) * f)], fill=sleeve, width=arm_w)
        draw.ellipse([ex - arm_w * 0.6, ey - arm_w * 0.6, ex + arm_w * 0.6, ey + arm_w * 0.6], fill=skin)
    # head, hair, hat
    hair = paint(ident.hair)
    if ident.long_hair:
        draw.rectangle([cx - head_r * 1.05, head_cy, cx + head_r * 1.05, torso_top + 0.1 * h], fill=hair)
    draw.ellipse([cx - head_r, head_cy - head_r, cx + head_r, head_cy + head_r], fill=hair if back else skin)
    if not back:
        draw.chord([cx - head_r, head_cy - head_r - 1, cx + head_r, head_cy + head_r * 0.3], 180, 360, fill=hair)
    if ident.hat is not None:
        draw.chord([cx - head_r * 1.1, head_cy - head_r * 1.25, cx + head_r * 1.1, head_cy + head_r * 0.2], 180, 360,
                   fill=paint(ident.hat))
        if side:
            bx0, bx1 = sorted((cx, cx + facing * head_r * 1.6))
            draw.rectangle([bx0, head_cy - head_r * 0.5, bx1, head_cy - head_r * 0.3], fill=paint(ident.hat))
    half = max(bw * (1.3 if ident.lower == "skirt" else 1.0), 0.16 * h if side else bw) + arm_w
    return (cx - half, top - (0.02 * h if ident.hat else 0.0), cx + half, foot)


def _draw_occluders(draw: ImageDraw.ImageDraw, camera: Camera, paint: Callable[[Colour], Any]) -> None:
    H, W = FRAME[0] * _SS, FRAME[1] * _SS
    for kind, x0, x1, top, colour in camera.occluders:
        c = paint(colour)
        if kind == "wall":
            draw.rectangle([x0 * W, top * H, x1 * W, H], fill=c)
        elif kind == "car":
            draw.rounded_rectangle([x0 * W, top * H, x1 * W, H * 1.02], radius=int(0.04 * H), fill=c)
            if c == colour:
                draw.rectangle([x0 * W + 0.1 * (x1 - x0) * W, top * H + 0.03 * H, x1 * W - 0.1 * (x1 - x0) * W,
                                top * H + 0.1 * H], fill=(60, 80, 100))
        elif kind == "pole":
            draw.rectangle([x0 * W, 0, x1 * W, H], fill=c)
        else:
            draw.ellipse([x0 * W, top * H, x1 * W, H + 0.2 * H], fill=c)


def _geometry(camera: Camera, p: _Placed) -> tuple[float, float, float]:
    """(centre x, foot y, height) in supersampled pixels."""
    H, W = FRAME[0] * _SS, FRAME[1] * _SS
    h = H * camera.scale * (0.8 + 0.2 * p.depth) * p.ident.height
    return p.x * W, H * (0.8 + 0.17 * p.depth), h


def render_frame(camera: Camera, placed: list[_Placed], rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float, float, float]], list[float]]:
    """One frame (FRAME, uint8 RGB) with ``placed`` persons; their true boxes (x, y, w, h) and visible fractions."""
    H, W = FRAME[0] * _SS, FRAME[1] * _SS
    canvas = Image.fromarray(camera.scene.copy())
    draw = ImageDraw.Draw(canvas)
    labels = Image.new("L", (W, H), 0)
    ldraw = ImageDraw.Draw(labels)
    order = sorted(range(len(placed)), key=lambda i: placed[i].depth)
    boxes: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * len(placed)
    full_area = np.zeros(len(placed))
    for i in order:
        p = placed[i]
        view = camera.view if not p.turned else ("frontal" if camera.view == "side" else "side")
        cx, foot, h = _geometry(camera, p)
        boxes[i] = _draw_person(draw, p.ident, view, p.facing, p.phase, cx, foot, h, lambda c: c)
        alone = Image.new("L", (W, H), 0)
        _draw_person(ImageDraw.Draw(alone), p.ident, view, p.facing, p.phase, cx, foot, h, lambda c: 255)
        full_area[i] = np.count_nonzero(np.asarray(alone))
        _draw_person(ldraw, p.ident, view, p.facing, p.phase, cx, foot, h, lambda c, v=i + 1: v)
    _draw_occluders(draw, camera, lambda c: c)
    _draw_occluders(ldraw, camera, lambda c: 0)
    lab = np.asarray(labels)
    visible = [float(np.count_nonzero(lab == i + 1) / max(full_area[i], 1.0)) for i in range(len(placed))]
    img = canvas.reduce(_SS)
    if camera.blur > 0.3:
        img = img.filter(ImageFilter.GaussianBlur(camera.blur))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    shade = np.ones(FRAME[1], dtype=np.float32)
    xs = np.linspace(0, 1, FRAME[1], dtype=np.float32)
    s0, s1, level = camera.shadow
    inside = 1 / (1 + np.exp(-(xs - s0) * 80)) * (1 / (1 + np.exp((xs - s1) * 80)))
    shade = 1 - (1 - level) * inside
    arr = np.power(arr * shade[None, :, None] * np.array(camera.gain, dtype=np.float32), camera.gamma)
    arr = arr * 255.0 + rng.normal(0, camera.noise, arr.shape)
    frame = np.clip(arr, 0, 255).astype(np.uint8)
    out_boxes = []
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0.0, x0 / _SS), max(0.0, y0 / _SS)
        x1, y1 = min(float(FRAME[1]), x1 / _SS), min(float(FRAME[0]), y1 / _SS)
        out_boxes.append((x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)))
    return frame, out_boxes, visible


def _jitter(box: tuple[float, float, float, float], rng: np.random.Generator, amount: float = 0.06) -> tuple[float, float, float, float] | None:
    """A detector's box around ``box``: shifted and rescaled by a few percent, clipped to the frame; None if too small."""
    x, y, w, h = box
    nw, nh = w * rng.uniform(1 - amount, 1 + 1.5 * amount), h * rng.uniform(1 - amount, 1 + amount)
    nx = x + (w - nw) / 2 + rng.normal(0, amount * w)
    ny = y + (h - nh) / 2 + rng.normal(0, amount * h / 2)
    x0, y0 = max(0.0, nx), max(0.0, ny)
    x1, y1 = min(float(FRAME[1]), nx + nw), min(float(FRAME[0]), ny + nh)
    if x1 - x0 < 8 or y1 - y0 < 16:
        return None
    return (round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1))


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
    """One detection crop (H, W, 3) uint8 of ``ident`` alone in ``camera``'s scene at a walking ``phase``, ``position`` in [0, 1]."""
    placed = _Placed(ident, 0.1 + 0.8 * float(position), float(rng.uniform()), float(phase), 1 if rng.random() < 0.5 else -1)
    frame, boxes, _ = render_frame(camera, [placed], rng)
    box = _jitter(boxes[0], rng) or boxes[0]
    x, y, w, h = box
    img = Image.fromarray(frame).crop((round(x), round(y), round(x + w), round(y + h))).resize((size[1], size[0]), Image.BILINEAR)
    if mirror:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(img)


def _bystanders(identities: list[Identity], target: int, rng: np.random.Generator, k: int) -> list[int]:
    others = [i for i in range(len(identities)) if i != target]
    return [int(i) for i in rng.choice(others, size=min(k, len(others)), replace=False)] if others else []


@dataclass
class SyntheticSet:
    """Paths and labels of a written retrieval set: query and gallery crops as (path, pid, camid)."""

    root: Path
    query: list[tuple[str, int, int]]
    gallery: list[tuple[str, int, int]]


def write_reid_set(
    root: str | Path,
    identities: list[Identity],
    cameras: list[Camera],
    *,
    shots_per_camera: int = 3,
    queries_per_camera: int = 1,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> SyntheticSet:
    """Write ``<root>/query/<pid>/c<cam>_<k>.jpg`` and ``<root>/gallery/<pid>/c<cam>_<k>.jpg``.

    Every identity is shot ``shots_per_camera`` times by every camera, each time at a random place,
    depth and pose with one or two bystanders from the same set (who may occlude it); the crop is
    a jittered detector box. The first ``queries_per_camera`` shots of each camera are queries, the
    rest gallery (retrieval is cross-camera: the Market-1501 protocol ignores same-camera matches).
    This is the folder layout that ``isr-reid evaluate --dataset folder`` reads.
    ``progress(n)`` is called after each identity with the number of crops written for it.
    """
    if shots_per_camera <= queries_per_camera:
        raise ValueError(f"shots_per_camera ({shots_per_camera}) must exceed queries_per_camera ({queries_per_camera})")
    rng = np.random.default_rng(seed)
    root = Path(root)
    query, gallery = [], []
    for t, ident in enumerate(identities):
        for cam in cameras:
            for k in range(shots_per_camera):
                for _attempt in range(8):  # redraw a shot whose person is mostly hidden
                    target = _Placed(ident, float(rng.uniform(0.12, 0.88)), float(rng.uniform()), float(rng.uniform(0, 2 * math.pi)),
                                     1 if rng.random() < 0.5 else -1)
                    others = [_Placed(identities[j], float(np.clip(target.x + rng.choice([-1, 1]) * rng.uniform(0.12, 0.4), 0.05, 0.95)),
                                      float(rng.uniform()), float(rng.uniform(0, 2 * math.pi)), 1 if rng.random() < 0.5 else -1)
                              for j in _bystanders(identities, t, rng, int(rng.integers(1, 3)))]
                    frame, boxes, visible = render_frame(cam, [target, *others], rng)
                    box = _jitter(boxes[0], rng)
                    if visible[0] >= 0.55 and box is not None:
                        break
                x, y, w, h = box or boxes[0]
                split = "query" if k < queries_per_camera else "gallery"
                path = root / split / f"{ident.pid:04d}" / f"c{cam.camid}_{k:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(frame).crop((round(x), round(y), round(x + w), round(y + h))).save(path, quality=92)
                (query if split == "query" else gallery).append((str(path), ident.pid, cam.camid))
        if progress is not None:
            progress(len(cameras) * shots_per_camera)
    return SyntheticSet(root, query, gallery)


@dataclass
class SyntheticVideos:
    """Written MOT-format training videos, and the same detections with their true identities.

    ``labelled`` holds every detection as a :class:`~isr_reid.data.video.Crop` whose ``track`` is
    the generator's person id (-1 for a false box): for measuring pair mining only, never for training.
    """

    root: Path
    videos: list[Path]
    labelled: VideoSet = field(default_factory=VideoSet)
    num_detections: int = 0
    num_false: int = 0


def write_videos(
    root: str | Path,
    identities: list[Identity],
    cameras: list[Camera],
    *,
    clips_per_camera: int = 3,
    persons_per_clip: int = 5,
    frames: int = 16,
    miss_rate: float = 0.05,
    false_rate: float = 0.4,
    turn_rate: float = 1.0,
    seed: int = 11,
    progress: Callable[[int], None] | None = None,
) -> SyntheticVideos:
    """Write unlabeled videos in the MOTChallenge layout: ``<root>/cam<c>_clip<k>/{img1,det,gt,seqinfo.ini}``.

    In each clip ``persons_per_clip`` identities walk through one camera's scene at their own depth,
    speed and direction. ``det/det.txt`` has a jittered box for each person at least 30% visible
    (missed with probability ``miss_rate``) and a false box on the background in a ``false_rate``
    share of frames, with detector-like scores; ``gt/gt.txt`` has the true boxes and identities. A
    ``turn_rate`` share of the people turn once in the clip (and half of them turn back later), so
    the camera sees them from its other viewpoint for a while.
    ``progress(1)`` is called after each frame.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    paths: list[Path] = []
    labelled: list[Video] = []
    n_det = n_false = 0
    for cam in cameras:
        for clip in range(clips_per_camera):
            name = f"cam{cam.camid}_clip{clip}"
            seq = root / name
            (seq / "img1").mkdir(parents=True, exist_ok=True)
            (seq / "det").mkdir(exist_ok=True)
            (seq / "gt").mkdir(exist_ok=True)
            people = rng.choice(len(identities), size=min(persons_per_clip, len(identities)), replace=False)
            n = len(people)
            # mostly a flow in one direction; each person's path is centred on their own lane, so people
            # pass behind one another now and then but do not walk inside one another's box all clip long
            facing = np.full(n, rng.choice([-1, 1])) if rng.random() < 0.7 else rng.choice([-1, 1], size=n)
            speed = rng.uniform(0.015, 0.03, n)  # frame widths per frame: the background behind a person changes
            lane = 0.1 + 0.8 * (rng.permutation(n) + rng.uniform(0.3, 0.7, n)) / n
            start = lane - facing * speed * (frames - 1) / 2
            depth = rng.uniform(0, 1, n)
            ddepth = rng.uniform(-0.05, 0.05, n)  # walking towards or away from the camera: the scale changes
            phase0 = rng.uniform(0, 2 * math.pi, n)
            # people turn (side view <-> front/back view) at a random frame, and some turn back later
            turn = np.where(rng.random(n) < turn_rate, rng.integers(2, max(3, frames - 1), n), frames + 1)
            turn_back = np.where(rng.random(n) < 0.5, turn + rng.integers(4, 10, n), frames + 1)
            det_lines, gt_lines = [], []
            crops: dict[int, list[Crop]] = {}
            for t in range(frames):
                placed = [_Placed(identities[int(people[j])], float(start[j] + facing[j] * speed[j] * t),
                                  float(np.clip(depth[j] + ddepth[j] * t, 0, 1)), float(phase0[j] + 0.8 * t), int(facing[j]),
                                  bool(turn[j] <= t < turn_back[j]))
                          for j in range(n)]
                frame, boxes, visible = render_frame(cam, placed, rng)
                img_path = seq / "img1" / f"{t + 1:06d}.jpg"
                Image.fromarray(frame).save(img_path, quality=92)
                frame_crops = []
                for j in range(n):
                    x, y, w, h = boxes[j]
                    if w < 4 or h < 8:
                        continue
                    pid = placed[j].ident.pid
                    gt_lines.append(f"{t + 1},{pid},{x + 1:.1f},{y + 1:.1f},{w:.1f},{h:.1f},1,1,{visible[j]:.3f}")
                    if visible[j] < 0.3 or rng.random() < miss_rate:
                        continue
                    box = _jitter(boxes[j], rng)
                    if box is None:
                        continue
                    score = float(rng.uniform(0.55, 1.0))
                    det_lines.append((t + 1, box, score))
                    frame_crops.append(Crop(str(img_path), box, score, pid))
                if rng.random() < false_rate:  # a false box on the background (or on a part of a person)
                    h = FRAME[0] * cam.scale * rng.uniform(0.6, 1.0)
                    w = h * rng.uniform(0.3, 0.5)
                    x = rng.uniform(0, FRAME[1] - w)
                    y = rng.uniform(0, FRAME[0] - h)
                    box = (round(x, 1), round(y, 1), round(w, 1), round(h, 1))
                    score = float(rng.uniform(0.3, 0.7))
                    det_lines.append((t + 1, box, score))
                    frame_crops.append(Crop(str(img_path), box, score, -1))
                    n_false += 1
                n_det += len(frame_crops)
                if frame_crops:
                    crops[t + 1] = frame_crops
                if progress is not None:
                    progress(1)
            (seq / "det" / "det.txt").write_text("".join(
                f"{f},-1,{b[0] + 1:.1f},{b[1] + 1:.1f},{b[2]:.1f},{b[3]:.1f},{s:.3f},-1,-1,-1\n" for f, b, s in det_lines))
            (seq / "gt" / "gt.txt").write_text("".join(line + "\n" for line in gt_lines))
            (seq / "seqinfo.ini").write_text(
                f"[Sequence]\nname={name}\nimDir=img1\nframeRate=10\nseqLength={frames}\n"
                f"imWidth={FRAME[1]}\nimHeight={FRAME[0]}\nimExt=.jpg\n")
            paths.append(seq)
            labelled.append(Video(name, sorted(crops), crops))
    return SyntheticVideos(root, paths, VideoSet(labelled), n_det, n_false)
