"""A gallery index: embeddings + per-item metadata, searched top-k, saved as safetensors + JSON.

:meth:`GalleryIndex.load` also reads a features file (``.npz`` or ``.safetensors`` written by
``isr-reid extract`` / :func:`isr_reid.data.features.save_features`) as an index.

Two backends behind one interface: ``torch`` (exact, chunked, CPU or GPU; the default) and
``faiss`` (``pip install isr-reid[faiss]``): an exact flat index, or IVF-PQ for millions of items.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from .distance import METRICS, topk

__all__ = ["FAISS_TYPES", "GalleryIndex", "SearchResult", "is_features_file"]

FAISS_TYPES = ("flat", "ivfpq")
_FORMAT = "isr_reid.gallery_index"
_VERSION = 1
_INT_FIELDS = ("pids", "camids", "frames", "tracks")
_STR_FIELDS = ("paths", "videos")


@dataclass(frozen=True)
class SearchResult:
    """Top-k of each query: distances (Nq, k) ascending and gallery indices (Nq, k); -1 = no item."""

    distances: np.ndarray
    indices: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        """Similarities for display: 1 - distance (cosine similarity for the cosine metric)."""
        return 1.0 - self.distances


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("the faiss backend needs faiss: pip install 'isr-reid[faiss]'") from None
    return faiss


def _files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def is_features_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a features file rather than a saved index: a ``.npz`` file, or a
    ``.safetensors`` file with no index ``.json`` beside it and the features file's metadata."""
    p = Path(path)
    if p.suffix == ".npz":
        return True
    if p.suffix != ".safetensors" or not p.is_file() or _files(p)[1].is_file():
        return False
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        return False
    return "paths" in meta and "model" in meta


def _digest(emb: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(emb).view(np.uint8)).hexdigest()


class GalleryIndex:
    """Embeddings (N, D) with optional per-item paths, pids, camids, videos, frames and tracks."""

    def __init__(
        self,
        embeddings: Any,
        *,
        paths: Sequence[str] | None = None,
        pids: Sequence[int] | None = None,
        camids: Sequence[int] | None = None,
        videos: Sequence[str] | None = None,
        frames: Sequence[int] | None = None,
        tracks: Sequence[int] | None = None,
        metric: str = "cosine",
        backend: str = "torch",
        faiss_type: str = "flat",
        nlist: int | None = None,
        pq_m: int = 16,
        pq_bits: int = 8,
        nprobe: int = 16,
        device: str | torch.device | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Build the index; ``faiss_type="ivfpq"`` trains an IVF (``nlist`` lists) + PQ (``pq_m`` x ``pq_bits``) index.

        ``info`` is free JSON-serialisable data kept with the index (e.g. the model that made the embeddings).
        """
        emb = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
        if emb.ndim != 2 or not np.issubdtype(emb.dtype, np.floating):
            raise ValueError(f"embeddings: expected a float (N, D) array, got {emb.dtype} {emb.shape}")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if backend not in ("torch", "faiss"):
            raise ValueError(f"backend: expected 'torch' or 'faiss', got {backend!r}")
        if faiss_type not in FAISS_TYPES:
            raise ValueError(f"faiss_type: expected one of {FAISS_TYPES}, got {faiss_type!r}")
        if backend == "faiss" and metric == "scl":
            raise ValueError("metric 'scl' needs backend='torch' (faiss indexes only a dot product or L2)")
        self.embeddings = np.ascontiguousarray(emb, dtype=np.float32)
        if metric == "cosine":
            norms = np.linalg.norm(self.embeddings, axis=1, keepdims=True)
            self.embeddings /= np.maximum(norms, 1e-12)
        n = len(self.embeddings)
        self.metric, self.backend = metric, backend
        self.info = dict(info or {})
        self.meta: dict[str, list[Any] | None] = {}
        for name, values in (("paths", paths), ("videos", videos)):
            self.meta[name] = None if values is None else [None if v is None else str(v) for v in values]
        for name, values in (("pids", pids), ("camids", camids), ("frames", frames), ("tracks", tracks)):
            self.meta[name] = None if values is None else [int(v) for v in np.asarray(values).reshape(-1)]
        for name, values in self.meta.items():
            if values is not None and len(values) != n:
                raise ValueError(f"{name}: expected {n} entries (one per embedding), got {len(values)}")
        self.faiss_params = {"type": faiss_type, "nlist": nlist, "pq_m": pq_m, "pq_bits": pq_bits, "nprobe": nprobe}
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._faiss: Any = None
        self._gallery: torch.Tensor | None = None
        if backend == "faiss":
            self._faiss = self._build_faiss()

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.embeddings.shape[1]

    def _build_faiss(self) -> Any:
        faiss = _import_faiss()
        n, d = self.embeddings.shape
        fmetric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        p = self.faiss_params
        if p["type"] == "flat":
            index = faiss.IndexFlatIP(d) if self.metric == "cosine" else faiss.IndexFlatL2(d)
        else:
            nlist = p["nlist"] or max(1, min(4096, int(4 * np.sqrt(n))))
            p["nlist"] = nlist
            if d % p["pq_m"]:
                raise ValueError(f"pq_m: the embedding dimension {d} must be divisible by pq_m={p['pq_m']}")
            need = max(nlist, 1 << p["pq_bits"])
            if n < need:
                raise ValueError(f"embeddings: IVF-PQ with nlist={nlist}, pq_bits={p['pq_bits']} needs at least "
                                 f"{need} items to train, got {n}; use faiss_type='flat' for small galleries")
            index = faiss.index_factory(d, f"IVF{nlist},PQ{p['pq_m']}x{p['pq_bits']}", fmetric)
            # Polysemous codes only serve Hamming-filtered search, which is not used; their
            # training dominates build time.
            index.do_polysemous_training = False
            index.train(self.embeddings)
            index.nprobe = p["nprobe"]
        index.add(self.embeddings)
        return index

    def search(self, queries: Any, k: int = 10) -> SearchResult:
        """The ``k`` nearest gallery items of each query row (distances as in :func:`pairwise_distance`)."""
        q = queries.detach().cpu().numpy() if isinstance(queries, torch.Tensor) else np.asarray(queries)
        if q.ndim == 1:
            q = q[None]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries: expected shape (N, {self.dim}), got {q.shape}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive integer, got {k!r}")
        q = np.ascontiguousarray(q, dtype=np.float32)
        if self.metric == "cosine":
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        if len(self) == 0:
            return SearchResult(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64))
        k = min(k, len(self))
        if self.backend == "torch":
            if self._gallery is None:
                self._gallery = torch.from_numpy(self.embeddings).to(self.device)
            d, i = topk(torch.from_numpy(q).to(self.device), self._gallery, k, self.metric)
            return SearchResult(d.cpu().numpy(), i.cpu().numpy())
        d, i = self._faiss.search(q, k)
        d = 1.0 - d if self.metric == "cosine" else np.sqrt(np.maximum(d, 0))
        return SearchResult(np.where(i < 0, np.inf, d).astype(np.float32), i.astype(np.int64))

    def item(self, i: int) -> dict[str, Any]:
        """The metadata of gallery item ``i`` (fields that were given)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"i: gallery item {i} out of range for {len(self)} items")
        return {name: values[i] for name, values in self.meta.items() if values is not None}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<path>.safetensors`` (embeddings, integer metadata, faiss bytes) and ``<path>.json``, atomically."""
        from safetensors.numpy import save_file

        tensor_path, json_path = _files(path)
        tensors: dict[str, np.ndarray] = {"embeddings": self.embeddings}
        for name in _INT_FIELDS:
            if self.meta[name] is not None:
                tensors[name] = np.asarray(self.meta[name], dtype=np.int64)
        if self._faiss is not None:
            tensors["faiss_index"] = np.asarray(_import_faiss().serialize_index(self._faiss), dtype=np.uint8)
        header = {
            "format": _FORMAT, "version": _VERSION, "count": len(self), "dim": self.dim,
            "metric": self.metric, "backend": self.backend, "faiss": self.faiss_params,
            "embeddings_sha256": _digest(self.embeddings), "info": self.info,
            **{name: self.meta[name] for name in _STR_FIELDS},
        }
        with atomic_path(tensor_path) as tmp:
            save_file(tensors, str(tmp))
        # The JSON is written last and names the embeddings' digest, so a crash between the two
        # writes is caught on load instead of pairing new tensors with old metadata.
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(header))
        return tensor_path

    @classmethod
    def from_features(cls, path: str | os.PathLike[str], *, metric: str = "cosine", backend: str = "torch",
                      device: str | torch.device | None = None) -> GalleryIndex:
        """An index of a features file (``.npz`` / ``.safetensors`` from ``isr-reid extract`` or ``save_features``).

        Paths come from the file; pids, camids, frames and tracks from its arrays of those names when
        it has them (``isr-reid evaluate --save-features`` writes pids and camids). ``info`` holds the
        model name and config that made the embeddings.
        """
        from ..data.features import load_features

        f = load_features(path)
        fields = {name: f.extra[name] for name in _INT_FIELDS if name in f.extra}
        return cls(f.embeddings, paths=f.paths, metric=metric, backend=backend, device=device,
                   info={"model": f.model, "config": f.config, "features_file": str(path)}, **fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | torch.device | None = None) -> GalleryIndex:
        """Read an index written by :meth:`save` (``path`` with or without its suffix), or a features file.

        A ``.npz`` path, or a ``.safetensors`` file without the index's ``.json`` beside it, is read as a
        features file with :meth:`from_features`.
        """
        from safetensors.numpy import load_file

        if is_features_file(path):
            return cls.from_features(path, device=device)
        tensor_path, json_path = _files(path)
        for p in (tensor_path, json_path):
            if not p.is_file():
                raise FileNotFoundError(f"gallery index file not found: {p}")
        header = json.loads(json_path.read_text())
        if header.get("format") != _FORMAT:
            raise ValueError(f"{json_path}: not a gallery index (format={header.get('format')!r})")
        tensors = load_file(str(tensor_path))
        emb = tensors["embeddings"]
        if len(emb) != header["count"] or _digest(emb) != header["embeddings_sha256"]:
            raise ValueError(f"{tensor_path} does not match {json_path} (an interrupted save?); rebuild the index")
        self = cls.__new__(cls)
        self.embeddings, self.metric, self.backend = emb, header["metric"], header["backend"]
        self.meta = {name: header.get(name) for name in _STR_FIELDS}
        for name in _INT_FIELDS:
            self.meta[name] = tensors[name].tolist() if name in tensors else None
        self.faiss_params = header["faiss"]
        self.info = header.get("info", {})
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._gallery = None
        self._faiss = None
        if self.backend == "faiss":
            faiss = _import_faiss()
            self._faiss = faiss.deserialize_index(tensors["faiss_index"])
            if hasattr(self._faiss, "nprobe"):
                self._faiss.nprobe = self.faiss_params["nprobe"]
        return self
