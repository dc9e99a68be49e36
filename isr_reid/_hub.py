"""The Hugging Face hub side of the weights: download with a pinned revision, ``hf-hub:`` specs, upload.

``HF_ENDPOINT``, ``HF_HOME`` / ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read on every call and
passed to huggingface_hub explicitly: huggingface_hub reads them once, at import, so a value set
later (a test, a notebook cell) would otherwise be ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from . import __version__
from ._cache import is_offline

__all__ = ["HubError", "hub_cache_dir", "hub_download", "hub_endpoint", "hub_evict", "hub_upload", "parse_hub_spec"]

HUB_PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class HubError(FileNotFoundError):
    """A file could not be had from the hub (not found, no connection and not cached, offline)."""


def hub_endpoint() -> str | None:
    """``$HF_ENDPOINT`` without a trailing slash, or None for huggingface_hub's default."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def hub_cache_dir() -> Path | None:
    """The hub cache named by ``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` now, or None for the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return None


def parse_hub_spec(spec: str) -> tuple[str, str | None]:
    """``"hf-hub:owner/repo@rev"`` -> ``("owner/repo", "rev")`` (``rev`` None when absent)."""
    if not spec.startswith(HUB_PREFIX):
        raise ValueError(f"not a hub spec: {spec!r} (expected 'hf-hub:owner/repo[@revision]')")
    body = spec[len(HUB_PREFIX) :]
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.fullmatch(repo_id) or (_ and not revision):
        raise ValueError(f"malformed hub spec {spec!r}: expected 'hf-hub:owner/repo[@revision]'")
    return repo_id, revision or None


def _quiet_tqdm() -> type:
    from tqdm.auto import tqdm

    class _Quiet(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Quiet


def hub_download(repo_id: str, filename: str, revision: str | None = None, *, progress: bool | None = None) -> Path:
    """The local path of ``filename`` from hub repo ``repo_id`` at ``revision``, via huggingface_hub's cache.

    Offline (``HF_HUB_OFFLINE=1``) only the cache is used. Any failure raises :class:`HubError`
    saying what was asked for and from where.
    """
    from huggingface_hub import hf_hub_download

    offline = is_offline()
    cache_dir = hub_cache_dir()
    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=str(cache_dir) if cache_dir else None,
            endpoint=hub_endpoint(),
            local_files_only=offline,
            library_name="isr_reid",
            library_version=__version__,
            tqdm_class=_quiet_tqdm() if progress is False else None,
        )
    except Exception as e:
        # huggingface_hub raises its own errors (OSError subclasses), EntryNotFoundError, ValueError,
        # and its HTTP transport's errors (e.g. a connection dropped mid-file after its retries);
        # all of them mean "this source cannot be used now", and the message keeps the cause.
        where = hub_endpoint() or "https://huggingface.co"
        mode = " (offline: HF_HUB_OFFLINE is set, so only the local cache was searched)" if offline else ""
        raise HubError(
            f"could not get {filename!r} from hub repo {repo_id!r} at revision {revision or 'main'} "
            f"({where}){mode}: {type(e).__name__}: {e}"
        ) from e
    return Path(path)


def hub_evict(path: str | os.PathLike[str]) -> None:
    """Remove a file that :func:`hub_download` returned (its snapshot link and its blob) from the cache."""
    path = Path(path)
    blob = Path(os.path.realpath(path))
    for p in (path, blob):
        p.unlink(missing_ok=True)


def hub_upload(
    directory: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload isr_reid weights",
) -> str:
    """Create ``repo_id`` if needed and upload ``directory``'s files in one commit; returns the commit id."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(directory),
        repo_id=repo_id,
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
    )
    return str(getattr(info, "oid", info))
