"""Features files: embeddings with the inputs they came from and the model that made them.

Two formats, chosen by suffix: ``.npz`` (numpy) and ``.safetensors`` (tensors + string metadata).
Both hold ``embeddings`` (N, D) float32, the input ``paths`` (or descriptions) in row order, the
model name and config, and the inputs skipped with the reason. Files are written atomically.
``isr-reid extract`` writes them; ``isr-reid search --gallery`` and ``isr-reid evaluate --features`` read
them as they are (in Python: :func:`load_features`, or ``GalleryIndex.load`` to search one).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path

__all__ = ["FeaturesFile", "load_features", "save_features"]

SUFFIXES = (".npz", ".safetensors")


@dataclass
class FeaturesFile:
    """The content of a features file. ``extra`` holds named arrays (pids, camids, ...)."""

    embeddings: np.ndarray
    paths: list[str]
    model: str
    config: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _check_suffix(path: Path) -> str:
    if path.suffix not in SUFFIXES:
        raise ValueError(f"features file {path} must end in {' or '.join(SUFFIXES)}")
    return path.suffix


def save_features(
    path: str | Path,
    embeddings: np.ndarray,
    paths: Sequence[str],
    *,
    model: str,
    config: Mapping[str, Any],
    skipped: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Write a features file (``.npz`` or ``.safetensors``) atomically; returns its path."""
    path = Path(path)
    suffix = _check_suffix(path)
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if len(paths) != len(embeddings):
        raise ValueError(f"{len(paths)} paths for {len(embeddings)} embeddings")
    meta = {
        "paths": json.dumps(list(paths)),
        "model": model,
        "config": json.dumps(dict(config)),
        "skipped": json.dumps([dict(s) for s in skipped]),
    }
    arrays = {"embeddings": embeddings, **{k: np.ascontiguousarray(v) for k, v in (extra or {}).items()}}
    with atomic_path(path) as tmp:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{f"__{k}__": np.array(v) for k, v in meta.items()})
        else:
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp), metadata=meta)
    return path


def load_features(path: str | Path) -> FeaturesFile:
    """Read a file written by :func:`save_features`."""
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if not k.startswith("__")}
            meta = {k.strip("_"): str(z[k]) for k in z.files if k.startswith("__")}
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    embeddings = arrays.pop("embeddings")
    return FeaturesFile(
        embeddings=embeddings,
        paths=json.loads(meta["paths"]),
        model=meta["model"],
        config=json.loads(meta["config"]),
        skipped=json.loads(meta.get("skipped", "[]")),
        extra=arrays,
    )
