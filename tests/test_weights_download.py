"""isr_reid._download.download_url against a local HTTP server: bytes, digest, resume, truncation, mismatch."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from _hub_server import LocalHub

from isr_reid._download import DownloadError, IntegrityError, download_url


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    hub = LocalHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def payload(rng: np.random.Generator) -> bytes:
    # 300 KB: several of the server's 64 KB chunks and of the client's reads.
    return rng.integers(0, 256, size=300_000, dtype=np.uint8).tobytes()


def test_first_download_returns_bytes_and_digest(server, payload, tmp_path):
    server.files["w.pth"] = payload
    dest = tmp_path / "d" / "w.pth"
    digest = download_url(f"{server.url}/files/w.pth", dest, progress=False)
    assert dest.read_bytes() == payload
    assert digest == hashlib.sha256(payload).hexdigest()
    assert not dest.with_name("w.pth.part").exists()


def test_dropped_connection_is_resumed_with_range(server, payload, tmp_path):
    server.files["w.pth"] = payload
    server.truncate_once["/files/w.pth"] = 100_000
    dest = tmp_path / "w.pth"
    digest = download_url(f"{server.url}/files/w.pth", dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert digest == hashlib.sha256(payload).hexdigest()
    gets = [r for r in server.requests if r[0] == "GET"]
    assert [g[2] for g in gets] == [None, "bytes=100000-"]


def test_persistent_truncation_errors_keeps_no_file_and_resumes_later(server, payload, tmp_path):
    server.files["w.pth"] = payload
    server.truncate_at["/files/w.pth"] = 120_000
    dest = tmp_path / "w.pth"
    url = f"{server.url}/files/w.pth"
    with pytest.raises(DownloadError, match=r"expected 300000 bytes, received 120000"):
        download_url(url, dest, progress=False)
    assert not dest.exists()
    part = dest.with_name("w.pth.part")
    assert part.read_bytes() == payload[:120_000]
    # The host recovers: the next call asks only for the missing bytes.
    server.truncate_at.clear()
    server.requests.clear()
    download_url(url, dest, sha256=hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert [r[2] for r in server.requests if r[0] == "GET"] == ["bytes=120000-"]


def test_digest_mismatch_names_both_and_leaves_nothing(server, payload, tmp_path):
    server.files["w.pth"] = payload
    dest = tmp_path / "w.pth"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(IntegrityError) as info:
        download_url(f"{server.url}/files/w.pth", dest, sha256=wrong, progress=False)
    assert wrong in str(info.value)
    assert hashlib.sha256(payload).hexdigest() in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_url_and_status(server, tmp_path):
    url = f"{server.url}/files/missing.pth"
    with pytest.raises(DownloadError, match=r"missing\.pth failed: HTTP 404"):
        download_url(url, tmp_path / "x.pth", progress=False)
    assert list(tmp_path.iterdir()) == []
