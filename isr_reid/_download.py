"""Download one file over HTTP(S): resume with Range, a tqdm progress bar, size and sha256 checks.

The bytes go to ``<dest>.part`` and are renamed onto ``dest`` only once complete and verified, so
``dest`` is never a truncated or corrupt file; a truncated ``.part`` is kept so that the next call
resumes it. Callers serialise concurrent downloads of one file with :func:`isr_reid._cache.file_lock`.
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import __version__
from ._cache import sha256_file

__all__ = ["DownloadError", "IntegrityError", "download_url"]

_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed (HTTP error, connection error, truncated transfer)."""


class IntegrityError(ValueError):
    """A file's bytes are not the expected ones (sha256 or size mismatch)."""


def _user_agent() -> str:
    return f"isr-reid/{__version__}"


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    # "bytes START-END/TOTAL" (TOTAL may be "*")
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        return None
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
    max_attempts: int = 3,
) -> str:
    """Download ``url`` to ``dest`` (resuming a previous ``.part``) and return the file's sha256.

    ``sha256``: the expected hex digest; a mismatch removes the partial file and raises
    :class:`IntegrityError`. A transfer that ends early is resumed up to ``max_attempts`` times
    while it makes progress, then raises :class:`DownloadError` naming the bytes expected and received.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    show = progress if progress is not None else sys.stderr.isatty()
    total: int | None = None
    attempts = 0
    while True:
        attempts += 1
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": _user_agent(), "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:
                # The server cannot serve from our offset: the partial file is unusable; start over.
                part.unlink(missing_ok=True)
                if attempts < max_attempts:
                    continue
            raise DownloadError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(f"downloading {url} failed: {getattr(e, 'reason', e)}") from e
        with resp:
            span = _parse_content_range(resp.headers.get("Content-Range")) if resp.status == 206 else None
            if span is not None and span[0] == have:
                mode = "ab"
                total = span[1]
            else:
                # A 200 (the server ignored Range) or a range we did not ask for: start from zero.
                mode, have = "wb", 0
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            received = 0
            with (
                open(part, mode) as f,
                tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=dest.name,
                    disable=not show,
                    leave=False,
                ) as bar,
            ):
                try:
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException):
                    # A dropped connection; the size check below decides between resume and error.
                    pass
        size = part.stat().st_size
        if total is not None and size > total:
            part.unlink(missing_ok=True)
            raise IntegrityError(f"download of {url} is longer than announced: expected {total} bytes, found {size}")
        if total is not None and size < total:
            if received > 0 and attempts < max_attempts:
                continue  # resume from where the transfer stopped
            raise DownloadError(
                f"truncated download of {url}: expected {total} bytes, received {size}; "
                f"the partial file {part} is kept and the next attempt resumes it"
            )
        break
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise IntegrityError(
            f"sha256 mismatch for {url}: expected {sha256.lower()}, found {digest}; the downloaded file was removed"
        )
    os.replace(part, dest)
    return digest
