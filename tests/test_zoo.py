"""The zoo: names, configs from the manifest, overrides, and load_model's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import isr_reid
from isr_reid.zoo import ModelConfig, get_config, list_architectures, read_manifest


def test_every_model_builds_its_manifest_config():
    manifest = read_manifest()["models"]
    assert isr_reid.list_models() == sorted(manifest)
    for name in isr_reid.list_models():
        cfg = get_config(name)
        assert cfg.architecture in list_architectures(), name
        assert list(cfg.input_size) == manifest[name]["input_size"] and cfg.embed_dim == manifest[name]["embed_dim"]
    swin = get_config("isr_swin_base")
    assert (swin.input_size, swin.embed_dim, swin.mean) == ((224, 224), 512, (0.485, 0.456, 0.406))
    assert get_config("transreid_ssl_vit_base_ics").input_size == (384, 128)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(KeyError, match=r"unknown model 'isr_swin_bse'.*Did you mean isr_swin_base"):
        get_config("isr_swin_bse")


def test_config_round_trips_through_json_and_overrides():
    cfg = get_config("isr_resnet18").replace(input_size=[128, 64], gem_p=4.0)
    assert cfg.input_size == (128, 64) and cfg.extra["gem_p"] == 4.0
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_overrides_reach_the_model():
    m = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32), gem_p=4.0)
    assert m.cfg.input_size == (64, 32)
    assert float(m.head.p.detach()) == 4.0 and not m.training


def test_weights_of_another_architecture_are_refused(tmp_path):
    r18 = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu")
    r18.save_pretrained(tmp_path / "r18")
    with pytest.raises(ValueError, match=r"architecture 'resnet18_gem_bnneck'.*'isr_resnet50' is 'resnet50_gem_bnneck'"):
        isr_reid.load_model("isr_resnet50", weights=tmp_path / "r18")
    # The saved config (input size included) travels with the weights.
    small = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32))
    small.save_pretrained(tmp_path / "small")
    back = isr_reid.load_model("isr_resnet18", weights=tmp_path / "small", device="cpu")
    assert back.cfg.input_size == (64, 32)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        np.testing.assert_allclose(back(x).numpy(), small(x).numpy(), atol=1e-6)
