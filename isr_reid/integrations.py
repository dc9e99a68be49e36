"""Appearance embeddings for multi-object trackers: boxmot and deep-sort-realtime, from any zoo model.

Trackers match detections across frames by motion and appearance; these adapters give them the
appearance part from an isr_reid model: cut each detection box out of its frame (clipped to the
frame), embed all crops of a call in one batched :meth:`~isr_reid.models.base.ReIDModel.extract`,
and hand back unit-length float32 vectors in the tracker's own format.

- :class:`BoxMOTEncoder` implements boxmot's ``AppearanceEncoder`` protocol (``embedding_dim``,
  ``requirements``, ``encode(frames, detections) -> list[Tensor]``). boxmot's ``Frame`` is RGB
  (uint8, 3 x H x W) by its own contract, so no channel order is asked for.
- :class:`DeepSortEmbedder` produces the ``embeds`` list of deep-sort-realtime's
  ``DeepSort.update_tracks(raw_detections, embeds=...)`` from a frame and its detections. Frames
  read with OpenCV are BGR: the channel order is a required argument, never guessed.

Neither tracker is a dependency of isr_reid: ``pip install 'isr-reid[trackers]'`` installs them.
boxmot is licensed AGPL-3.0; isr_reid (Apache-2.0) only calls it when you have installed it, and
contains none of its code. This module imports neither package except to build boxmot's
``EncoderRequirements`` value when a tracker asks for it.

Crop rule: a box covers the pixels it overlaps, columns ``floor(x1)`` to ``ceil(x2)`` and rows
``floor(y1)`` to ``ceil(y2)`` (exclusive ends), clipped to the frame. A box with no positive area,
a non-finite coordinate, or no overlap with the frame raises ``ValueError`` naming the detection:
a tracker expects exactly one embedding per detection, in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from .models.base import ReIDModel

__all__ = ["BoxMOTEncoder", "DeepSortEmbedder", "crop_boxes"]

BOX_FORMATS = ("xyxy", "ltwh")


def _frame_hwc(frame: Any, name: str) -> np.ndarray:
    """A uint8 frame as an (H, W, 3) numpy array (a view where possible): numpy HWC or torch CHW."""
    if isinstance(frame, torch.Tensor):
        if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"{name}: expected a uint8 tensor of shape (3, H, W), got {frame.dtype} "
                             f"{tuple(frame.shape)}")
        return frame.detach().cpu().permute(1, 2, 0).numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{name}: expected a numpy (H, W, 3) uint8 array, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{name}: expected a uint8 array of shape (H, W, 3), got {frame.dtype} {frame.shape}")
    return frame


def _pixel_bounds(boxes: Any, box_format: str, height: int, width: int, name: str) -> np.ndarray:
    """(N, 4) int64 [left, top, right, bottom) of the pixels each box overlaps, clipped to the frame."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format: expected one of {BOX_FORMATS}, got {box_format!r}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.empty((0, 4), dtype=np.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape (N, 4) ({box_format}), got shape {b.shape}")
    if box_format == "ltwh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    out = np.empty(b.shape, dtype=np.int64)
    given = np.asarray(boxes, dtype=np.float64)
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        shown = f"{given[i].tolist()} ({box_format})"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise ValueError(f"{name}[{i}]: non-finite box {shown}")
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"{name}[{i}]: box {shown} has no area")
        left, top = max(0, math.floor(x1)), max(0, math.floor(y1))
        right, bottom = min(width, math.ceil(x2)), min(height, math.ceil(y2))
        if right <= left or bottom <= top:
            raise ValueError(f"{name}[{i}]: box {shown} lies outside the {width}x{height} frame")
        out[i] = (left, top, right, bottom)
    return out


def crop_boxes(frame: Any, boxes: Any, *, box_format: str = "xyxy", name: str = "boxes") -> list[np.ndarray]:
    """The (h, w, 3) uint8 crops of ``boxes`` from ``frame`` (numpy HWC or torch uint8 CHW), clipped to it.

    ``box_format`` is ``"xyxy"`` (x1, y1, x2, y2) or ``"ltwh"`` (left, top, width, height), in
    pixels. Crops keep the frame's channel order; they are views of a numpy frame.
    """
    img = _frame_hwc(frame, "frame")
    bounds = _pixel_bounds(boxes, box_format, img.shape[0], img.shape[1], name)
    return [img[t:b, left:r] for left, t, r, b in bounds.tolist()]


def _embed_crops(model: ReIDModel, crops: list[np.ndarray], *, channel_order: str, batch_size: int,
                 flip: bool) -> np.ndarray:
    if not crops:
        return np.empty((0, model.cfg.embed_dim), dtype=np.float32)
    return model.extract(crops, batch_size=batch_size, flip=flip, progress=False, num_workers=0,
                         channel_order=channel_order)


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return batch_size


class BoxMOTEncoder:
    """boxmot ``AppearanceEncoder`` backed by an isr_reid model: one (N, D) float32 CPU tensor per frame.

    Usage::

        encoder = BoxMOTEncoder(load_model("isr_mobilenetv2"))
        pipeline = TrackingPipeline(detector=None, tracker=create_tracker(TrackerSpec("botsort")), reid=encoder)
        result = pipeline.step_detections(frame, detections)
    """

    def __init__(self, model: ReIDModel, *, batch_size: int = 64, flip: bool = False) -> None:
        self.model = model
        self.batch_size = _check_batch_size(batch_size)
        self.flip = bool(flip)

    @property
    def embedding_dim(self) -> int:
        """Width of every embedding (the model's ``cfg.embed_dim``)."""
        return int(self.model.cfg.embed_dim)

    @property
    def requirements(self) -> Any:
        """boxmot's ``EncoderRequirements``: boxes only, no masks."""
        from boxmot.reid.protocols import EncoderRequirements

        return EncoderRequirements(masks=False)

    def encode(self, frames: Sequence[Any], detections: Sequence[Any]) -> list[torch.Tensor]:
        """Embed every detection of every frame in one batched pass; one (N_i, D) tensor per frame.

        ``frames``: boxmot ``Frame`` objects (``image``: RGB uint8, 3 x H x W); ``detections``:
        boxmot ``Detections`` with axis-aligned ``Boxes`` (xyxy), aligned with ``frames``.
        """
        frames, detections = list(frames), list(detections)
        if len(frames) != len(detections):
            raise ValueError(f"frames and detections differ in length: {len(frames)} vs {len(detections)}")
        crops: list[np.ndarray] = []
        counts: list[int] = []
        for i, (frame, dets) in enumerate(zip(frames, detections)):
            image = getattr(frame, "image", None)
            if image is None:
                raise TypeError(f"frames[{i}]: expected a boxmot Frame, got {type(frame).__name__}")
            geometry = getattr(dets, "geometry", None)
            values = getattr(geometry, "values", None)
            if values is None:
                raise TypeError(f"detections[{i}]: expected boxmot Detections, got {type(dets).__name__}")
            if getattr(geometry, "is_obb", False) or values.shape[-1] != 4:
                raise ValueError(f"detections[{i}]: oriented boxes are not supported; pass axis-aligned Boxes")
            f_id, d_id = getattr(frame, "sample_id", None), getattr(dets, "sample_id", None)
            if f_id != d_id:
                raise ValueError(f"detections[{i}]: sample_id {d_id!r} does not match frames[{i}] ({f_id!r})")
            frame_crops = crop_boxes(image, values.detach().cpu().numpy(), box_format="xyxy",
                                     name=f"detections[{i}].geometry.values")
            crops.extend(frame_crops)
            counts.append(len(frame_crops))
        emb = torch.from_numpy(_embed_crops(self.model, crops, channel_order="rgb", batch_size=self.batch_size,
                                            flip=self.flip))
        return [part.contiguous() for part in torch.split(emb, counts)]


class DeepSortEmbedder:
    """The ``embeds`` of deep-sort-realtime's ``DeepSort.update_tracks`` from an isr_reid model.

    ``channel_order`` is that of the frames you pass (``"bgr"`` for OpenCV/``cv2.imread`` frames,
    the usual input of deep-sort-realtime; ``"rgb"`` for PIL or torchvision frames).

    Usage::

        embedder = DeepSortEmbedder(load_model("isr_mobilenetv2"), channel_order="bgr")
        tracks = tracker.update_tracks(detections, embeds=embedder(frame, detections))
    """

    def __init__(self, model: ReIDModel, *, channel_order: str, batch_size: int = 64, flip: bool = False) -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order: expected 'rgb' or 'bgr', got {channel_order!r}")
        self.model = model
        self.channel_order = channel_order
        self.batch_size = _check_batch_size(batch_size)
        self.flip = bool(flip)

    @staticmethod
    def _ltwh(detections: Any) -> np.ndarray:
        """deep-sort raw detections ``[([l, t, w, h], score, cls), ...]`` or an (N, 4) ltwh array -> (N, 4)."""
        if isinstance(detections, (np.ndarray, torch.Tensor)):
            return np.asarray(detections, dtype=np.float64)
        rows = []
        for i, det in enumerate(detections):
            box = det[0] if isinstance(det, (tuple, list)) and det and np.ndim(det[0]) == 1 else det
            box = np.asarray(box, dtype=np.float64)
            if box.shape != (4,):
                raise ValueError(f"detections[{i}]: expected ([left, top, w, h], confidence, class) or 4 numbers, "
                                 f"got {det!r}")
            rows.append(box)
        return np.stack(rows) if rows else np.empty((0, 4))

    def __call__(self, frame: np.ndarray, detections: Any) -> list[np.ndarray]:
        """One float32 (D,) unit vector per detection, in order. ``detections``: deep-sort raw detections
        (``([left, top, w, h], confidence, class)`` tuples) or an (N, 4) ltwh array, in pixels."""
        crops = crop_boxes(frame, self._ltwh(detections), box_format="ltwh", name="detections")
        return list(self.predict(crops))

    def predict(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Embed crops that are already cut (in this embedder's channel order): float32 (N, D), unit rows.

        This is the method deep-sort-realtime calls on its own embedders, so an instance can also be
        set as ``tracker.embedder`` and ``update_tracks(detections, frame=frame)`` called without ``embeds``.
        """
        return _embed_crops(self.model, list(crops), channel_order=self.channel_order, batch_size=self.batch_size,
                            flip=self.flip)
