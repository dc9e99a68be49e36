"""Converters: checkpoints built here in each upstream key layout with random weights, converted,
loaded strictly, and compared to forwards written independently (reference_nets, torchvision)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from reference_nets import (
    bn_eval,
    l2n,
    rand_state,
    swin_isr_reference,
    timm_swin_shapes,
    transreid_vit_shapes,
    vit_reference,
)

from isr_reid import load_model
from isr_reid.convert import (
    convert_checkpoint,
    convert_isr_swin,
    convert_transreid_ssl,
    detect_format,
    read_upstream_checkpoint,
)
from isr_reid.models.swin import SwinISR
from isr_reid.models.vit import VisionTransformerReID
from isr_reid.weights import load_state_dict_strict

TINY_DEPTHS, TINY_HEADS = (2, 2, 2, 2), (1, 2, 2, 4)


def _tiny_isr() -> dict:
    return rand_state(timm_swin_shapes(8, TINY_DEPTHS, TINY_HEADS, out_dim=16), seed=3)


def _tiny_swin() -> SwinISR:
    return SwinISR(embed_dim=8, depths=TINY_DEPTHS, num_heads=TINY_HEADS, out_dim=16).eval()


# ---------------------------------------------------------------- ISR (timm 0.4.12 Swin-B)


def test_isr_official_file_converts_to_the_official_embedding(tmp_path):
    shapes = timm_swin_shapes(128, (2, 2, 18, 2), (4, 8, 16, 32))
    assert len(shapes) == 366  # the released file's entry count
    upstream = rand_state(shapes, seed=0)
    path = tmp_path / "swin_base_patch4_window7_224.pth"
    torch.save({"state_dict": upstream}, path)

    ckpt = read_upstream_checkpoint(path)
    assert detect_format(ckpt) == "isr_swin"
    model = load_model("isr_swin_base", pretrained=False, device="cpu")
    load_state_dict_strict(model, convert_checkpoint(ckpt, "swin_base_isr"), source=str(path))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = model(x)
    ref = swin_isr_reference(upstream, x, (2, 2, 18, 2), (4, 8, 16, 32))
    assert (got.double() * ref).sum().item() >= 0.99999
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module"])
def test_isr_wrappers(wrap):
    upstream = _tiny_isr()
    if wrap == "module":
        ckpt = {"state_dict": {f"module.{k}": v for k, v in upstream.items()}}
    else:
        ckpt = {wrap: upstream}
    assert detect_format(ckpt) == "isr_swin"
    out = convert_isr_swin(ckpt)
    torch.testing.assert_close(
        out["features.2.reduction.weight"], upstream["model.layers.0.downsample.reduction.weight"]
    )
    torch.testing.assert_close(out["features.7.1.mlp.3.weight"], upstream["model.layers.3.blocks.1.mlp.fc2.weight"])
    model = _tiny_swin()
    load_state_dict_strict(model, out, source="tiny")  # every key lands, nothing left over


def test_isr_missing_and_unexpected_keys_are_listed():
    upstream = _tiny_isr()
    del upstream["model.layers.1.blocks.0.attn.qkv.bias"]
    upstream["model.layers.3.downsample.norm.weight"] = torch.ones(64 * 4)  # a newer timm's layout
    with pytest.raises(ValueError) as e:
        convert_isr_swin({"state_dict": upstream})
    msg = str(e.value)
    assert "missing: model.layers.1.blocks.0.attn.qkv.bias" in msg
    assert "unexpected: model.layers.3.downsample.norm.weight" in msg


def test_wrong_architecture_names_both():
    with pytest.raises(ValueError, match=r"isr_swin.*swin_base_isr.*vit_small_ics"):
        convert_checkpoint({"state_dict": _tiny_isr()}, "vit_small_ics")


# ---------------------------------------------------------------- TransReID-SSL ViT


def _tiny_vit_state(ics: bool, seed: int = 4) -> dict:
    return rand_state(transreid_vit_shapes(32, 2, ics), seed=seed)


def _tiny_vit(ics: bool) -> VisionTransformerReID:
    return VisionTransformerReID(embed_dim=32, depth=2, num_heads=4, ics=ics).eval()


@pytest.mark.parametrize("layout", ["flat", "dino", "dino_no_module", "finetuned"])
def test_transreid_layouts(layout):
    flat = _tiny_vit_state(ics=True)
    if layout == "flat":
        ckpt, fmt = dict(flat), "transreid_ssl"
    elif layout.startswith("dino"):
        pre = "module." if layout == "dino" else ""
        teacher = {f"{pre}backbone.{k}": v for k, v in flat.items()}
        teacher[f"{pre}head.mlp.0.weight"] = torch.randn(64, 32)  # DINO projection head: dropped
        teacher[f"{pre}head.last_layer.weight_g"] = torch.randn(1000, 1)
        ckpt, fmt = {"teacher": teacher, "epoch": 100}, "transreid_ssl_dino"
    else:
        sd = {f"base.{k}": v for k, v in flat.items() if not k.startswith("fc.")}
        sd.update({f"bottleneck.{p}": torch.rand(32) for p in ("weight", "bias", "running_mean", "running_var")})
        sd["bottleneck.num_batches_tracked"] = torch.tensor(3)
        sd["classifier.weight"] = torch.randn(751, 32)
        ckpt, fmt = sd, "transreid_ssl_finetuned"
    assert detect_format(ckpt) == fmt
    model = _tiny_vit(ics=True)
    load_state_dict_strict(model, convert_transreid_ssl(ckpt), source=layout)
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got.double(), vit_reference(flat, x, heads=4), rtol=1e-4, atol=1e-5)


def test_transreid_vit_small_ics_real_size():
    flat = rand_state(transreid_vit_shapes(384, 12, ics=True), seed=6)
    ckpt = {"teacher": {f"module.backbone.{k}": v for k, v in flat.items()}}
    model = load_model("transreid_ssl_vit_small_ics", pretrained=False, device="cpu")
    load_state_dict_strict(model, convert_checkpoint(ckpt, "vit_small_ics"), source="dino")
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got.double(), vit_reference(flat, x, heads=6), rtol=1e-4, atol=1e-5)


def test_transreid_stem_mismatch_is_named():
    flat = rand_state(transreid_vit_shapes(384, 1, ics=False), seed=8)
    with pytest.raises(ValueError, match=r"vit_small_ics.*ICS stem.*16x16 patch projection"):
        convert_checkpoint(flat, "vit_small_ics")


def test_transreid_unexpected_key_is_listed():
    flat = _tiny_vit_state(ics=False)
    flat["sie_embed"] = torch.zeros(6, 1, 32)  # camera embedding: changes the forward, must not pass
    with pytest.raises(ValueError, match="unexpected: sie_embed"):
        convert_transreid_ssl(flat)


# ---------------------------------------------------------------- SCL


def _scl_upstream(conv_stripes: bool) -> dict:
    shapes: dict[str, tuple[int, ...]] = {"CNN.conv1.weight": (64, 3, 7, 7)}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    shapes.update({f"CNN.bn1.{p}": (64,) if p != "num_batches_tracked" else () for p in bn})
    inplanes = 64
    for layer, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for j in range(blocks):
            p = f"CNN.layer{layer}.{j}."
            cin = inplanes if j == 0 else planes * 4
            for c, shape in ((1, (planes, cin, 1, 1)), (2, (planes, planes, 3, 3)), (3, (planes * 4, planes, 1, 1))):
                shapes[f"{p}conv{c}.weight"] = shape
                shapes.update({f"{p}bn{c}.{q}": (shape[0],) if q != "num_batches_tracked" else () for q in bn})
            if j == 0:
                shapes[f"{p}downsample.0.weight"] = (planes * 4, cin, 1, 1)
                shapes.update({f"{p}downsample.1.{q}": (planes * 4,) if q != "num_batches_tracked" else () for q in bn})
        inplanes = planes * 4
    shapes["avg_pooling.embeding.weight"], shapes["avg_pooling.embeding.bias"] = (2048, 2048), (2048,)
    shapes.update({f"avg_pooling.embeding_bn.{q}": (2048,) if q != "num_batches_tracked" else () for q in bn})
    for k in range(8):
        p = f"local_pooling.local_conv_list.{k}."
        shapes[p + "0.weight"] = (256, 2048, 1, 1) if conv_stripes else (256, 2048)
        shapes[p + "0.bias"] = (256,)
        shapes.update({f"{p}1.{q}": (256,) if q != "num_batches_tracked" else () for q in bn})
    return rand_state(shapes, seed=9)


def _scl_reference(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """SCL's forward: a torchvision-layout ResNet-50 with last stride 1, then the global and 8 stripe
    branches (bands of H // 8 rows), combined with weights 1/sqrt(2) and 1/4."""
    net = torchvision.models.resnet50(weights=None)
    net.layer4[0].conv2.stride = (1, 1)
    net.layer4[0].downsample[0].stride = (1, 1)
    net.fc = torch.nn.Identity()
    net.load_state_dict({k[len("CNN.") :]: v for k, v in sd.items() if k.startswith("CNN.")}, strict=False)
    net.eval().double()
    trunk = torch.nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    d = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    with torch.no_grad():
        f = trunk(x.double())
    g = l2n(
        bn_eval(
            f.mean((2, 3)) @ d["avg_pooling.embeding.weight"].T + d["avg_pooling.embeding.bias"],
            d,
            "avg_pooling.embeding_bn.",
        )
    )
    sh = f.shape[2] // 8
    parts = [g / math.sqrt(2)]
    for k in range(8):
        p = f"local_pooling.local_conv_list.{k}."
        band = f[:, :, k * sh : (k + 1) * sh].mean((2, 3))
        w = d[p + "0.weight"].reshape(256, 2048)
        parts.append(l2n(bn_eval(band @ w.T + d[p + "0.bias"], d, p + "1.")) / 4)
    return torch.cat(parts, 1)


def test_scl_converts_to_the_upstream_embedding():
    upstream = _scl_upstream(conv_stripes=False)
    ckpt = {"state_dict": {f"module.{k}": v for k, v in upstream.items()}}
    assert detect_format(ckpt) == "scl"
    model = load_model("scl_resnet50", pretrained=False, device="cpu")
    load_state_dict_strict(model, convert_checkpoint(ckpt, "resnet50_scl"), source="scl")
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got.double(), _scl_reference(upstream, x), rtol=1e-4, atol=1e-5)


def test_scl_conv_stripes_become_linear_weights():
    """One SCL release variant stores each stripe as a 1x1 Conv2d + BatchNorm2d: the same map."""
    upstream = _scl_upstream(conv_stripes=True)
    out = convert_checkpoint(upstream, "resnet50_scl")
    for k in range(8):
        w = upstream[f"local_pooling.local_conv_list.{k}.0.weight"]
        assert out[f"stripe_fc.{k}.weight"].shape == (256, 2048)
        torch.testing.assert_close(out[f"stripe_fc.{k}.weight"], w[:, :, 0, 0])
    torch.testing.assert_close(
        out["backbone.4.0.downsample.1.running_var"], upstream["CNN.layer4.0.downsample.1.running_var"]
    )
    assert len(out) == len(upstream)


def test_scl_missing_batchnorm_counter_is_filled():
    upstream = _scl_upstream(conv_stripes=False)
    del upstream["CNN.bn1.num_batches_tracked"]  # checkpoints from torch < 0.4.1 lack the counters
    out = convert_checkpoint(upstream, "resnet50_scl")
    assert out["backbone.0.1.num_batches_tracked"].item() == 0
    del upstream["CNN.bn1.running_var"]
    with pytest.raises(ValueError, match=r"missing: CNN\.bn1\.running_var"):
        convert_checkpoint(upstream, "resnet50_scl")


# ---------------------------------------------------------------- reading files


def test_read_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse_namespace()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_upstream_checkpoint(path)


def test_read_truncated_file(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": _tiny_isr()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(path.name)):
        read_upstream_checkpoint(path)


def test_unknown_format_lists_keys():
    with pytest.raises(ValueError, match=r"unrecognised.*encoder\.w"):
        detect_format({"encoder.w": torch.zeros(1)})


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)
