"""Local weights: hub layout (save_pretrained + model card), upstream .pth loading, error cases, and the
convert / push commands."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from _hub_server import LocalHub
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import isr_reid
from isr_reid import weights as W
from isr_reid.cli import main
from isr_reid.zoo import get_config


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ISR_REID_CACHE", str(tmp_path / "isr"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "ISR_REID_OFFLINE"):
        monkeypatch.delenv(key, raising=False)


def _metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def _embed(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    model = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu")
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.fixture(scope="module")
def vit_upstream(tmp_path_factory: pytest.TempPathFactory):
    """A random TransReID-SSL ViT-S/16 and the same weights written as the authors' DINO checkpoint."""
    torch.manual_seed(2)
    model = isr_reid.load_model("transreid_ssl_vit_small", pretrained=False, device="cpu")
    sd = model.state_dict()
    # Upstream key layout (TransReID-SSL's DINO teacher): module.backbone.<ViT key>, an unused
    # projection head and the pretraining classifier fc.*.
    teacher = {f"module.backbone.{k}": v.clone() for k, v in sd.items()}
    teacher["module.backbone.fc.weight"] = torch.zeros(1000, 384)
    teacher["module.backbone.fc.bias"] = torch.zeros(1000)
    teacher["module.head.last_layer.weight"] = torch.zeros(8, 256)
    path = tmp_path_factory.mktemp("vit") / "vit_small_cfs_lup.pth"
    torch.save({"teacher": teacher, "epoch": 100}, path)
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(3))
    return model, path, x


# -- hub layout ---------------------------------------------------------------------------------


def test_save_pretrained_roundtrip_and_model_card(r18, tmp_path):
    model, x = r18
    out = model.save_pretrained(tmp_path / "hub")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    saved = load_file(out / "model.safetensors")
    own = model.state_dict()
    assert saved.keys() == own.keys() and all(torch.equal(saved[k], own[k]) for k in own)
    assert json.loads((out / "config.json").read_text())["architecture"] == "resnet18_gem_bnneck"

    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "isr_reid"
    assert front["license"] == "unknown"
    assert "person-reid" in front["tags"]
    assert 'load_model("isr_resnet18"' in card and "## Published results" in card

    loaded = isr_reid.load_model("isr_resnet18", weights=out, device="cpu")
    assert loaded.cfg == model.cfg
    torch.testing.assert_close(_embed(loaded, x), _embed(model, x), rtol=0, atol=0)


def test_model_card_lists_published_results_and_license():
    from isr_reid._card import model_card
    from isr_reid.zoo import read_manifest

    entry = read_manifest()["models"]["transreid_ssl_vit_small_ics"]
    card = model_card(get_config("transreid_ssl_vit_small_ics"), entry, repo_id="me/vit")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["datasets"] == entry["training_data"]
    assert 'weights="hf-hub:me/vit"' in card
    table = [line for line in card.splitlines() if line.startswith("| Market-1501 | mAP | 91.3 |")]
    assert len(table) == 1
    assert "@article{luo2021self" in card


def test_safetensors_of_another_architecture_names_both(r18, tmp_path):
    model, _ = r18
    out = model.save_pretrained(tmp_path / "hub")
    with pytest.raises(ValueError, match=r"architecture 'resnet18_gem_bnneck'.*expected 'resnet50_gem_bnneck'"):
        W.resolve_state_dict(get_config("isr_resnet50"), out / "model.safetensors")


def test_state_dict_without_metadata_still_fails_strictly(r18, tmp_path):
    model, _ = r18
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state["extra.weight"] = torch.zeros(3)
    save_file(state, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match=r"missing: head\..*unexpected: extra\.weight"):
        isr_reid.load_model("isr_resnet18", weights=tmp_path / "w.safetensors", device="cpu", input_size=(64, 32))


# -- weights that describe themselves, or are refused (issue 11) ---------------------------------


def test_lone_safetensors_carries_its_input_size(tmp_path):
    """A folder holding only model.safetensors of a 128x64 model loads at 128x64, not the zoo's 256x128."""
    torch.manual_seed(5)
    small = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(128, 64),
                                mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    folder = small.save_pretrained(tmp_path / "hub")
    (folder / "config.json").unlink()
    (folder / "README.md").unlink()
    meta = json.loads(_metadata(folder / "model.safetensors")["config"])
    assert meta["input_size"] == [128, 64] and meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.25] * 3
    for weights in (folder, folder / "model.safetensors"):
        back = isr_reid.load_model("isr_resnet18", weights=weights, device="cpu")
        assert back.cfg.input_size == (128, 64) and back.cfg.mean == (0.5, 0.5, 0.5)
        x = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(_embed(back, x), _embed(small, x), rtol=0, atol=0)


def test_weights_without_a_config_are_refused_unless_the_size_is_given(r18, tmp_path):
    model, x = r18
    folder = tmp_path / "old"
    folder.mkdir()
    # what an older save_pretrained wrote, with its config.json lost
    save_file(model.state_dict(), folder / "model.safetensors", metadata={"format": "pt", "model": "isr_resnet18"})
    with pytest.raises(ValueError, match=r"old carries no model config .*input size .* unknown.*input_size=\(H, W\)"):
        isr_reid.load_model("isr_resnet18", weights=folder, device="cpu")
    back = isr_reid.load_model("isr_resnet18", weights=folder, device="cpu", input_size=(64, 32))
    assert back.cfg.input_size == (64, 32)
    torch.testing.assert_close(_embed(back, x), _embed(model, x), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(r18, tmp_path, bad):
    model, _ = r18
    folder = model.save_pretrained(tmp_path / "hub")
    state = load_file(folder / "model.safetensors")
    state["backbone.4.0.conv1.weight"] = torch.full_like(state["backbone.4.0.conv1.weight"], bad)
    state["head.bn.running_var"][3] = bad
    meta = _metadata(folder / "model.safetensors")
    save_file(state, folder / "model.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in backbone\.4\.0\.conv1\.weight, head\.bn\.running_var"):
        isr_reid.load_model("isr_resnet18", weights=folder, device="cpu")


def test_extra_options_merge_into_the_config():
    m = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", extra={"gem_p": 5.0})
    assert m.cfg.extra["gem_p"] == 5.0 and float(m.head.p.detach()) == 5.0
    with pytest.raises(TypeError, match="extra must be a mapping"):
        get_config("isr_resnet18").replace(extra=[("gem_p", 5.0)])


def test_truncated_safetensors_is_a_clear_error(r18, tmp_path):
    model, _ = r18
    out = model.save_pretrained(tmp_path / "hub")
    data = (out / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.safetensors is not a readable safetensors file"):
        W.resolve_state_dict(get_config("isr_resnet18"), tmp_path / "cut.safetensors")


def test_bad_paths_name_the_problem(tmp_path):
    cfg = get_config("isr_resnet18")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "weights.bin.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"not in hub layout.*found: weights\.bin\.txt"):
        W.resolve_state_dict(cfg, tmp_path / "folder")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"unrecognised weights file .*w\.onnx"):
        W.resolve_state_dict(cfg, tmp_path / "w.onnx")
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        W.resolve_state_dict(cfg, tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match=r"malformed hub spec"):
        W.resolve_state_dict(cfg, "hf-hub:not-a-repo-id")


# -- upstream checkpoints -----------------------------------------------------------------------


def test_upstream_pth_is_converted_on_load(vit_upstream):
    model, path, x = vit_upstream
    loaded = isr_reid.load_model("transreid_ssl_vit_small", weights=path, device="cpu")
    torch.testing.assert_close(_embed(loaded, x), _embed(model, x), rtol=0, atol=0)


def test_upstream_pth_of_the_wrong_architecture_names_expected_and_found(vit_upstream):
    _, path, _ = vit_upstream
    with pytest.raises(ValueError, match=r"vit_small_ics.*ICS stem.*16x16 patch projection"):
        W.resolve_state_dict(get_config("transreid_ssl_vit_small_ics"), path)


def test_pickle_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(ValueError, match=r"weights_only=True"):
        W.resolve_state_dict(get_config("transreid_ssl_vit_small"), path)


def test_url_source_of_upstream_pth_is_converted_once_into_the_digest_cache(vit_upstream, tmp_path):
    model, path, x = vit_upstream
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    server = LocalHub().start()
    try:
        server.files["vit_small_cfs_lup.pth"] = data
        source = {"type": "url", "url": f"{server.url}/files/vit_small_cfs_lup.pth", "filename": path.name,
                  "format": "transreid_ssl_dino", "sha256": digest}
        got = W.fetch_weights("transreid_ssl_vit_small", sources=[source], progress=False)
    finally:
        server.stop()
    assert got == tmp_path / "isr" / "converted" / f"{digest}.vit_small_patch16.safetensors"
    assert (tmp_path / "isr" / "downloads" / "transreid_ssl_vit_small" / path.name).read_bytes() == data
    # With the server gone and the download deleted, the conversion alone serves the next load.
    (tmp_path / "isr" / "downloads" / "transreid_ssl_vit_small" / path.name).unlink()
    assert W.fetch_weights("transreid_ssl_vit_small", sources=[source], progress=False) == got
    loaded = isr_reid.load_model("transreid_ssl_vit_small", weights=got, device="cpu")
    torch.testing.assert_close(_embed(loaded, x), _embed(model, x), rtol=0, atol=0)


def test_url_source_of_the_wrong_architecture_leaves_nothing_in_the_cache(vit_upstream, tmp_path):
    _, path, _ = vit_upstream
    server = LocalHub().start()
    try:
        server.files["w.pth"] = path.read_bytes()
        source = {"type": "url", "url": f"{server.url}/files/w.pth", "filename": "w.pth", "format": "transreid_ssl",
                  "sha256": None}
        with pytest.warns(UserWarning, match="no sha256 pinned"), pytest.raises(
            ValueError, match=r"vit_small_ics.*ICS stem.*the downloaded file was removed"
        ):
            W.fetch_weights("transreid_ssl_vit_small_ics", sources=[source], progress=False)
    finally:
        server.stop()
    assert [p for p in (tmp_path / "isr").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


# -- commands -----------------------------------------------------------------------------------


def test_convert_command_writes_hub_layout_that_loads_back(vit_upstream, tmp_path, capsys):
    model, path, x = vit_upstream
    out = tmp_path / "hub"
    assert main(["convert", str(path), "--model", "transreid_ssl_vit_small", "-o", str(out), "--repo-id", "me/v"]) == 0
    printed = capsys.readouterr().out
    assert hashlib.sha256(path.read_bytes()).hexdigest() in printed
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() in printed
    card = (out / "README.md").read_text()
    assert 'weights="hf-hub:me/v"' in card and hashlib.sha256(path.read_bytes()).hexdigest() in card
    loaded = isr_reid.load_model("transreid_ssl_vit_small", weights=out, device="cpu")
    torch.testing.assert_close(_embed(loaded, x), _embed(model, x), rtol=0, atol=0)


def test_convert_command_refuses_the_wrong_model(vit_upstream, tmp_path, capsys):
    _, path, _ = vit_upstream
    code = main(["convert", str(path), "--model", "transreid_ssl_vit_base_ics", "-o", str(tmp_path / "o")])
    assert code == 1
    assert "768-d ViT" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_push_dry_run_checks_the_folder_and_prints_the_source_to_pin(r18, tmp_path, capsys):
    model, _ = r18
    out = model.save_pretrained(tmp_path / "hub")
    assert main(["push", str(out), "me/r18", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    source = json.loads(printed[printed.index("{") :])
    assert source == {
        "type": "hub",
        "repo_id": "me/r18",
        "filename": "model.safetensors",
        "revision": None,
        "sha256": hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
    }
    (out / "README.md").unlink()
    assert main(["push", str(out), "me/r18", "--dry-run"]) == 1
    assert "missing README.md" in capsys.readouterr().err
