"""Weight resolution against a local hub + file server: hub download, cache reuse, offline mode,
pinned revisions, digests, truncation, upstream URLs, manual sources, concurrent processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _hub_server import LocalHub

import isr_reid
from isr_reid import weights as W
from isr_reid.zoo import read_manifest

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ISR_REID_CACHE", str(tmp_path / "isr"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "ISR_REID_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    server = LocalHub().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory):
    """A randomly initialised isr_resnet18 (eval mode), its hub-layout folder, and a test input."""
    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu")
    with torch.no_grad():  # non-trivial BN statistics, so that a wrong load shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    folder = model.save_pretrained(tmp_path_factory.mktemp("r18") / "hub")
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    return model, folder, x, ref


def _embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hub_source(repo_id: str, revision: str, sha256: str | None, filename: str = "model.safetensors") -> dict:
    return {"type": "hub", "repo_id": repo_id, "filename": filename, "revision": revision, "sha256": sha256}


def _files_with_bytes(root: Path, data: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.stat().st_size == len(data) and p.read_bytes() == data]


# -- hub ---------------------------------------------------------------------------------------


def test_manifest_hub_source_downloads_then_loads_from_cache_with_server_stopped(hub, r18, monkeypatch, tmp_path):
    _, folder, x, ref = r18
    weights = (folder / "model.safetensors").read_bytes()
    commit = hub.repo("acme/isr-r18").add_commit(
        {"model.safetensors": weights, "config.json": (folder / "config.json").read_bytes()}
    )
    entry = read_manifest()["models"]["isr_resnet18"]
    monkeypatch.setitem(entry, "sources", [_hub_source("acme/isr-r18", commit, _sha(weights))])

    loaded = isr_reid.load_model("isr_resnet18", device="cpu")
    torch.testing.assert_close(_embed(loaded, x), ref, rtol=0, atol=0)
    assert hub.count("GET", "/acme/isr-r18/resolve/") == 1
    assert _files_with_bytes(tmp_path / "hf", weights), "the file is in the huggingface_hub cache"

    hub.stop()
    again = isr_reid.load_model("isr_resnet18", device="cpu")
    torch.testing.assert_close(_embed(again, x), ref, rtol=0, atol=0)


def test_hf_hub_spec_reads_config_and_weights_at_revision(hub, r18):
    _, folder, x, ref = r18
    files = {n: (folder / n).read_bytes() for n in ("model.safetensors", "config.json", "README.md")}
    commit = hub.repo("acme/isr-r18").add_commit(files)
    # A later commit on main with other weights must not leak into a pinned load.
    torch.manual_seed(5)
    other = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu")
    other_dir = other.save_pretrained(folder.parent / "other")
    hub.repo("acme/isr-r18").add_commit({n: (other_dir / n).read_bytes() for n in files})

    pinned = isr_reid.load_model("isr_resnet18", weights=f"hf-hub:acme/isr-r18@{commit}", device="cpu")
    torch.testing.assert_close(_embed(pinned, x), ref, rtol=0, atol=0)
    latest = isr_reid.load_model("isr_resnet18", weights="hf-hub:acme/isr-r18", device="cpu")
    torch.testing.assert_close(_embed(latest, x), _embed(other.eval(), x), rtol=0, atol=0)
    assert not torch.allclose(_embed(latest, x), ref)


def test_pinned_revision_wins_over_main(hub, rng):
    a, b = (rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes() for _ in range(2))
    repo = hub.repo("acme/w")
    commit_a = repo.add_commit({"model.safetensors": a})
    repo.add_commit({"model.safetensors": b})  # main -> b
    got_a = W.fetch_weights("isr_resnet18", sources=[_hub_source("acme/w", commit_a, _sha(a))], progress=False)
    assert got_a.read_bytes() == a
    with pytest.warns(UserWarning, match=_sha(b)):  # unpinned digest: the loader says what it saw
        got_main = W.fetch_weights("isr_resnet18", sources=[_hub_source("acme/w", "main", None)], progress=False)
    assert got_main.read_bytes() == b


def test_offline_mode_uses_cache_and_never_touches_the_network(hub, rng, monkeypatch):
    data = rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    commit = hub.repo("acme/w").add_commit({"model.safetensors": data})
    source = _hub_source("acme/w", commit, _sha(data))
    W.fetch_weights("isr_resnet18", sources=[source], progress=False)
    before = len(hub.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert W.fetch_weights("isr_resnet18", sources=[source], progress=False).read_bytes() == data
    other = hub.repo("acme/other")
    other_commit = other.add_commit({"model.safetensors": data})
    with pytest.raises(W.WeightsNotFoundError, match=r"(?s)acme/other.*offline"):
        W.fetch_weights("isr_resnet18", sources=[_hub_source("acme/other", other_commit, None)], progress=False)
    assert len(hub.requests) == before


def test_hub_digest_mismatch_names_both_and_evicts_the_file(hub, rng, tmp_path):
    data = rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    commit = hub.repo("acme/w").add_commit({"model.safetensors": data})
    expected = _sha(b"the weights the manifest was pinned to")
    with pytest.raises(W.IntegrityError) as info:
        W.fetch_weights("isr_resnet18", sources=[_hub_source("acme/w", commit, expected)], progress=False)
    assert expected in str(info.value) and _sha(data) in str(info.value)
    assert _files_with_bytes(tmp_path / "hf", data) == []
    snapshots = list((tmp_path / "hf").rglob("snapshots/*/model.safetensors"))
    assert snapshots == []


def test_hub_truncated_download_errors_with_sizes_and_caches_nothing(hub, rng, tmp_path):
    data = rng.integers(0, 256, 60_000, dtype=np.uint8).tobytes()
    commit = hub.repo("acme/w").add_commit({"model.safetensors": data})
    hub.truncate_at[f"/acme/w/resolve/{commit}/model.safetensors"] = 20_000
    with pytest.raises(W.WeightsNotFoundError, match=r"received 20000 bytes, expected 60000"):
        W.fetch_weights("isr_resnet18", sources=[_hub_source("acme/w", commit, _sha(data))], progress=False)
    blobs = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert blobs == []


# -- upstream URL and manual sources -----------------------------------------------------------


def _url_source(url: str, filename: str, sha256: str | None) -> dict:
    return {"type": "url", "url": url, "filename": filename, "format": "isr_reid", "sha256": sha256}


def test_url_source_downloads_once_and_reuses_the_digest_keyed_cache(hub, r18, tmp_path):
    _, folder, x, ref = r18
    data = (folder / "model.safetensors").read_bytes()
    hub.files["r18.safetensors"] = data
    source = _url_source(f"{hub.url}/files/r18.safetensors?dl=1", "r18.safetensors", _sha(data))
    path = W.fetch_weights("isr_resnet18", sources=[source], progress=False)
    assert path == tmp_path / "isr" / "converted" / f"{_sha(data)}.resnet18_gem_bnneck.safetensors"
    assert path.read_bytes() == data
    hub.stop()
    assert W.fetch_weights("isr_resnet18", sources=[source], progress=False) == path
    loaded = isr_reid.load_model("isr_resnet18", weights=path, device="cpu")
    torch.testing.assert_close(_embed(loaded, x), ref, rtol=0, atol=0)


def test_url_digest_mismatch_leaves_no_file_in_the_cache(hub, rng, tmp_path):
    data = rng.integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    hub.files["w.pth"] = data
    pinned = _sha(b"not these bytes")
    with pytest.raises(W.IntegrityError, match=rf"expected {pinned}, found {_sha(data)}"):
        W.fetch_weights("isr_resnet18", sources=[_url_source(f"{hub.url}/files/w.pth", "w.pth", pinned)])
    assert [p for p in (tmp_path / "isr").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_unreachable_sources_end_in_instructions(hub, tmp_path):
    manual = {
        "type": "manual",
        "url": "https://drive.example/file/d/abc/view",
        "filename": "vit.pth",
        "format": "transreid_ssl",
        "sha256": None,
        "instructions": "needs a browser",
    }
    sources = [_hub_source("acme/missing", "0" * 40, None), _url_source(f"{hub.url}/files/nope.pth", "nope.pth", None), manual]
    with pytest.raises(W.WeightsNotFoundError) as info:
        W.fetch_weights("isr_resnet18", sources=sources, progress=False)
    text = str(info.value)
    expected_place = tmp_path / "isr" / "downloads" / "isr_resnet18" / "vit.pth"
    assert "https://drive.example/file/d/abc/view" in text and str(expected_place) in text
    assert "acme/missing" in text and "HTTP 404" in text


def test_manual_file_placed_in_the_cache_is_used(r18, tmp_path):
    _, folder, x, ref = r18
    data = (folder / "model.safetensors").read_bytes()
    place = tmp_path / "isr" / "downloads" / "isr_resnet18" / "r18.safetensors"
    place.parent.mkdir(parents=True)
    place.write_bytes(data)
    manual = {"type": "manual", "url": "https://x.invalid/r18", "filename": "r18.safetensors", "sha256": _sha(data)}
    path = W.fetch_weights("isr_resnet18", sources=[manual], progress=False)
    assert path.read_bytes() == data
    loaded = isr_reid.load_model("isr_resnet18", weights=path, device="cpu")
    torch.testing.assert_close(_embed(loaded, x), ref, rtol=0, atol=0)


_WORKER = """
import json, sys
from isr_reid.weights import fetch_weights
out = []
for sources in json.loads(sys.argv[1]):
    path = fetch_weights("isr_resnet18", sources=sources, progress=False)
    out.append({"path": str(path), "size": path.stat().st_size})
print(json.dumps(out))
"""


def test_two_processes_loading_at_once_both_succeed_and_download_once(hub, rng):
    data = rng.integers(0, 256, 400_000, dtype=np.uint8).tobytes()
    hub.files["w.safetensors"] = data
    hub.chunk_delay = 0.05  # ~0.3 s per transfer, so that the two processes overlap
    commit = hub.repo("acme/w").add_commit({"model.safetensors": data})
    url_sources = [_url_source(f"{hub.url}/files/w.safetensors", "w.safetensors", _sha(data))]
    hub_sources = [_hub_source("acme/w", commit, _sha(data))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps([url_sources, hub_sources])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert [r["path"] for r in first] == [r["path"] for r in second]
    for r in first:
        assert Path(r["path"]).read_bytes() == data
    # our lock serialises the upstream download; huggingface_hub's lock the hub one
    assert hub.count("GET", "/files/w.safetensors") == 1
    assert hub.count("GET", f"/acme/w/resolve/{commit}/") == 1
