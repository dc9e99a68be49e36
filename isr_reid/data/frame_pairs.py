"""The frame-pair sampler of ISR training: pairs of frames (t, t + delta) of one video, with their crops.

Split from :mod:`isr_reid.data.video` (which reads videos and tracks and still re-exports these
names): it is what training draws its batches with, not a reader. It needs nothing of the package
at run time; the video types are named for type checkers only, so the readers can re-export it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .video import Crop, VideoSet

__all__ = ["FramePair", "FramePairSampler"]


@dataclass(frozen=True)
class FramePair:
    """Two frames of one video, ``delta`` frame steps apart, with the crops drawn from each."""

    video: int
    frame_a: int
    frame_b: int
    crops_a: list[Crop]
    crops_b: list[Crop]


class FramePairSampler:
    """Draws batches of frame pairs (t, t + delta): several distinct videos per batch, one pair each.

    ``delta`` is a (min, max) range counted in frame steps of a video's sorted frame list (so a video
    stored at every 10th frame with delta 2 pairs frames 20 apart); each pair's delta is uniform over
    the valid pairs of its video. Frames keep at most ``max_crops_per_frame`` crops: a random subset of
    the first frame, and in the second the crops nearest to those (see :meth:`_subsets`).
    With ``world_size > 1`` each rank samples only its own videos (``videos[rank::world_size]``).
    The random state is a numpy PCG64 generator whose state is saved by :meth:`state_dict`.
    """

    def __init__(
        self,
        videos: VideoSet,
        *,
        pairs_per_batch: int = 4,
        max_crops_per_frame: int = 8,
        delta: tuple[int, int] = (1, 4),
        min_crops: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if pairs_per_batch < 1:
            raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
        if max_crops_per_frame < 1:
            raise ValueError(f"max_crops_per_frame must be >= 1, got {max_crops_per_frame}")
        dmin, dmax = int(delta[0]), int(delta[1])
        if not 1 <= dmin <= dmax:
            raise ValueError(f"delta must be a range (min, max) with 1 <= min <= max, got {delta!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.videos = videos
        self.pairs_per_batch = pairs_per_batch
        self.max_crops_per_frame = max_crops_per_frame
        self.delta = (dmin, dmax)
        self.rank, self.world_size = rank, world_size
        self._pairs: dict[int, np.ndarray] = {}
        for vi in range(rank, len(videos.videos), world_size):
            v = videos.videos[vi]
            ok = [len(v.crops.get(f, ())) >= min_crops for f in v.frames]
            pairs = [
                (i, j)
                for i in range(len(v.frames))
                for j in range(i + dmin, min(i + dmax, len(v.frames) - 1) + 1)
                if ok[i] and ok[j]
            ]
            if pairs:
                self._pairs[vi] = np.asarray(pairs, dtype=np.int64)
        if not self._pairs:
            raise ValueError(
                f"no video of rank {rank}/{world_size} has two frames {dmin} to {dmax} steps apart with "
                f">= {min_crops} crops each ({len(videos)} videos in all)"
            )
        self._eligible = np.asarray(sorted(self._pairs), dtype=np.int64)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    @property
    def num_videos(self) -> int:
        """How many of this rank's videos can give a frame pair."""
        return len(self._eligible)

    def sample(self) -> list[FramePair]:
        """One batch: ``min(pairs_per_batch, num_videos)`` frame pairs from distinct videos."""
        n = min(self.pairs_per_batch, len(self._eligible))
        chosen = self.rng.choice(self._eligible, size=n, replace=False)
        out = []
        for vi in chosen:
            v = self.videos.videos[int(vi)]
            pairs = self._pairs[int(vi)]
            i, j = pairs[self.rng.integers(len(pairs))]
            fa, fb = v.frames[int(i)], v.frames[int(j)]
            out.append(FramePair(int(vi), fa, fb, *self._subsets(v.crops[fa], v.crops[fb])))
        return out

    def _subsets(self, crops_a: list[Crop], crops_b: list[Crop]) -> tuple[list[Crop], list[Crop]]:
        """Frame a: a random subset. Frame b: the crops most likely to show the same persons.

        The one-to-one matching pairs every kept crop of frame a with a crop of frame b, so a person
        whose crop in b was dropped is forced onto a stranger. Independent random subsets of two
        crowded frames (30 persons, 8 kept) would therefore make most mined pairs wrong. Where boxes
        are known, frame b keeps, for each kept crop of a, the nearest unused box centre (people move
        little between nearby frames), then the next nearest; without boxes it keeps a random subset.
        """
        a = self._subset(crops_a)
        k = self.max_crops_per_frame
        if len(crops_b) <= k:
            return a, list(crops_b)
        if any(c.box is None for c in a) or any(c.box is None for c in crops_b):
            return a, self._subset(crops_b)
        centre_a = np.array([[c.box[0] + c.box[2] / 2, c.box[1] + c.box[3] / 2] for c in a])  # type: ignore[index]
        centre_b = np.array([[c.box[0] + c.box[2] / 2, c.box[1] + c.box[3] / 2] for c in crops_b])  # type: ignore[index]
        dist = np.linalg.norm(centre_b[:, None, :] - centre_a[None, :, :], axis=2)  # (len(b), len(a))
        chosen: list[int] = []
        for col in self.rng.permutation(len(a)):
            free = [r for r in np.argsort(dist[:, col], kind="stable") if r not in chosen]
            chosen.append(int(free[0]))
        rest = [int(r) for r in np.argsort(dist.min(axis=1), kind="stable") if r not in chosen]
        keep = sorted((chosen + rest)[:k])
        return a, [crops_b[r] for r in keep]

    def _subset(self, crops: list[Crop]) -> list[Crop]:
        if len(crops) <= self.max_crops_per_frame:
            return list(crops)
        idx = np.sort(self.rng.choice(len(crops), size=self.max_crops_per_frame, replace=False))
        return [crops[int(k)] for k in idx]

    def state_dict(self) -> dict[str, Any]:
        """The generator state (for resuming)."""
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rng.bit_generator.state = state["bit_generator"]
