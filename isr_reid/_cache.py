"""The isr_reid cache directory: where upstream downloads and their converted safetensors live.

Layout under :func:`cache_root` (``$ISR_REID_CACHE``, else ``$XDG_CACHE_HOME/isr_reid``, else
``~/.cache/isr_reid``)::

    downloads/<model name>/<upstream file name>    upstream checkpoints, as downloaded (or put there by hand)
    converted/<sha256 of the upstream file>.<architecture>.safetensors
    locks/<key>.lock                               inter-process locks

Environment variables are read on every call, so a change made after import takes effect.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cache_root", "converted_path", "download_path", "file_lock", "is_offline", "sha256_file"]

_TRUE = {"1", "on", "yes", "true"}


def cache_root() -> Path:
    """The isr_reid cache directory (``$ISR_REID_CACHE``, else ``~/.cache/isr_reid``); not created here."""
    env = os.environ.get("ISR_REID_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "isr_reid"


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``ISR_REID_OFFLINE`` is set to a true value: no network at all."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "ISR_REID_OFFLINE"))


def _safe_component(text: str) -> str:
    # A model or file name becomes one path component; nothing may climb out of the cache.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    if cleaned in ("", ".", ".."):
        raise ValueError(f"cannot use {text!r} as a cache path component")
    return cleaned


def download_path(model_name: str, filename: str) -> Path:
    """Where the upstream file ``filename`` of ``model_name`` is kept (downloaded, or placed by hand)."""
    return cache_root() / "downloads" / _safe_component(model_name) / _safe_component(filename)


def converted_path(source_sha256: str, architecture: str) -> Path:
    """Where the safetensors conversion of the upstream file with digest ``source_sha256`` is kept."""
    if not re.fullmatch(r"[0-9a-f]{64}", source_sha256):
        raise ValueError(f"not a sha256 hex digest: {source_sha256!r}")
    return cache_root() / "converted" / f"{source_sha256}.{_safe_component(architecture)}.safetensors"


@contextlib.contextmanager
def file_lock(key: str, timeout: float = -1) -> Iterator[None]:
    """Hold an inter-process lock named ``key`` (a file under ``locks/``) for the ``with`` block."""
    from filelock import FileLock

    path = cache_root() / "locks" / f"{_safe_component(key)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
