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
    flat["dist_token"] = torch.zeros(1, 1, 32)  # DeiT's distillation token: another forward, must not pass
    with pytest.raises(ValueError, match="unexpected: dist_token"):
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


class _Custom:
    """A class of this test module: nothing a checkpoint reader may rebuild."""

    def __init__(self) -> None:
        self.x = 1


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pickled code ran",))


@pytest.mark.parametrize(("payload", "named"), [(_Custom(), "_Custom"), (_RunsCode(), "system")])
def test_read_refuses_pickled_objects(tmp_path, payload, named):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse_namespace(), "extra": payload}, path)
    with pytest.raises(ValueError, match=rf"evil\.pth with torch\.load\(weights_only=True\): it pickles \S*{named}"):
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


# ---------------------------------------------------------------- checkpoints as users hold them (issue 12)


def _dino_training_checkpoint(flat: dict) -> dict:
    """DINO's checkpoint.pth: student and teacher (MultiCropWrapper, DDP), optimizer, epoch, args, loss."""
    teacher = {f"module.backbone.{k}": v for k, v in flat.items()}
    teacher["module.head.mlp.0.weight"] = torch.randn(64, 32)
    student = {k: v + 1.0 if v.is_floating_point() else v for k, v in teacher.items()}  # not what is embedded
    args = argparse_namespace()
    args.arch, args.global_crops_scale, args.use_fp16, args.output_dir = "vit_small", (0.4, 1.0), True, "/runs/x"
    return {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
        "epoch": 100,
        "args": args,
        "dino_loss": {"center": torch.zeros(1, 64)},
    }


def test_raw_dino_training_checkpoint_with_args_loads(tmp_path, caplog):
    flat = _tiny_vit_state(ics=True, seed=11)
    path = tmp_path / "checkpoint.pth"
    torch.save(_dino_training_checkpoint(flat), path)
    ckpt = read_upstream_checkpoint(path)
    assert ckpt["args"].arch == "vit_small" and ckpt["epoch"] == 100
    assert detect_format(ckpt) == "transreid_ssl_dino"
    model = _tiny_vit(ics=True)
    with caplog.at_level("INFO", logger="isr_reid"):
        load_state_dict_strict(model, convert_transreid_ssl(ckpt, source=str(path)), source="dino")
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got.double(), vit_reference(flat, x, heads=4), rtol=1e-4, atol=1e-5)
    lines = [r.getMessage() for r in caplog.records if r.name == "isr_reid"]
    assert len(lines) == 1 and "teacher.head.mlp.0.weight" in lines[0] and "fc." in lines[0]


def _finetuned(flat: dict, seed: int = 13, classes: int = 751) -> dict:
    """TransReID's build_transformer state dict: base.* (the ViT, with its ImageNet fc), BNNeck, classifier."""
    g = torch.Generator().manual_seed(seed)
    dim = flat["cls_token"].shape[-1]
    sd = {f"base.{k}": v for k, v in flat.items()}
    sd["bottleneck.weight"] = 1.0 + 0.3 * torch.randn(dim, generator=g)
    sd["bottleneck.bias"] = 0.2 * torch.randn(dim, generator=g)
    sd["bottleneck.running_mean"] = 0.3 * torch.randn(dim, generator=g)
    sd["bottleneck.running_var"] = 0.5 + torch.rand(dim, generator=g)
    sd["bottleneck.num_batches_tracked"] = torch.tensor(1000)
    sd["classifier.weight"] = torch.randn(classes, dim, generator=g) * 0.01
    return sd


def _bn_ref(f: torch.Tensor, sd: dict) -> torch.Tensor:
    d = {k: v.double() for k, v in sd.items() if k.startswith("bottleneck.") and v.is_floating_point()}
    return l2n(bn_eval(f, d, "bottleneck."))


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_finetuned_neck_feat_before_and_after(neck_feat, caplog):
    flat = _tiny_vit_state(ics=True, seed=14)
    sd = _finetuned(flat)
    model = VisionTransformerReID(embed_dim=32, depth=2, num_heads=4, ics=True, neck=neck_feat == "after").eval()
    with caplog.at_level("INFO", logger="isr_reid"):
        state = convert_transreid_ssl(sd, neck_feat=neck_feat, source="transformer_120.pth")
    load_state_dict_strict(model, state, source="finetuned")
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(15))
    with torch.no_grad():
        got = model(x).double()
    f = vit_reference(flat, x, heads=4, normalize=False)
    ref = _bn_ref(f, sd) if neck_feat == "after" else l2n(f)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    other = l2n(f) if neck_feat == "after" else _bn_ref(f, sd)
    assert (got - other).abs().max() > 1e-2  # the two features differ: the option matters
    lines = [r for r in caplog.records if r.name == "isr_reid"]
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    msg = lines[0].getMessage()
    assert "transformer_120.pth" in msg and "classifier.weight" in msg and "base.fc.* (2 keys)" in msg
    assert ("bottleneck.* (5 keys)" in msg) == (neck_feat == "before")


def test_neck_feat_after_needs_a_bnneck():
    flat = _tiny_vit_state(ics=True)
    with pytest.raises(ValueError, match=r"neck_feat='after'.*no bottleneck"):
        convert_transreid_ssl({"teacher": {f"backbone.{k}": v for k, v in flat.items()}}, neck_feat="after")
    with pytest.raises(ValueError, match=r"neck_feat must be 'before' or 'after'"):
        convert_transreid_ssl(_finetuned(flat), neck_feat="bnneck")


def test_sie_camera_embedding_needs_a_choice_and_folds_exactly():
    flat = _tiny_vit_state(ics=False, seed=16)
    sd = _finetuned(flat)
    sie = 0.3 * torch.randn(6, 1, 32, generator=torch.Generator().manual_seed(17))
    sd["base.sie_embed"] = sie
    with pytest.raises(ValueError, match=r"SIE camera embeddings \(base\.sie_embed, 6 rows.*sie_camera=K.*'drop'"):
        convert_transreid_ssl(sd)
    with pytest.raises(ValueError, match=r"sie_camera must be 'drop' or a row of base\.sie_embed, 0\.\.5; got 6"):
        convert_transreid_ssl(sd, sie_camera=6)
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(18))
    model = _tiny_vit(ics=False)
    load_state_dict_strict(model, convert_transreid_ssl(sd, sie_camera=2, sie_coe=3.0), source="sie")
    with torch.no_grad():
        got = model(x).double()
    torch.testing.assert_close(got, vit_reference(flat, x, heads=4, token_bias=3.0 * sie[2, 0]), rtol=1e-4, atol=1e-5)
    load_state_dict_strict(model, convert_transreid_ssl(sd, sie_camera="drop"), source="sie")
    with torch.no_grad():
        dropped = model(x).double()
    torch.testing.assert_close(dropped, vit_reference(flat, x, heads=4), rtol=1e-4, atol=1e-5)
    assert (got - dropped).abs().max() > 1e-2


def test_jpm_checkpoint_needs_a_choice_and_loads_the_global_branch(caplog):
    flat = _tiny_vit_state(ics=True, seed=19)
    sd = _finetuned(flat)
    for branch, seed in (("b1", 21), ("b2", 22)):  # copies of the last block and the final LayerNorm, trained apart
        b = rand_state(transreid_vit_shapes(32, 1, ics=False, with_fc=False), seed=seed)
        sd.update({f"{branch}.0.{k[len('blocks.0.'):]}": v for k, v in b.items() if k.startswith("blocks.0.")})
        sd.update({f"{branch}.1.{k[len('norm.'):]}": v for k, v in b.items() if k.startswith("norm.")})
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for i in range(1, 5):
        sd[f"classifier_{i}.weight"] = torch.zeros(751, 32)
        sd.update({f"bottleneck_{i}.{p}": sd[f"bottleneck.{p}"].clone() for p in bn})
    with pytest.raises(ValueError, match=r"JPM model.*160-d.*jpm='global'"):
        convert_transreid_ssl(sd)
    model = _tiny_vit(ics=True)
    with caplog.at_level("INFO", logger="isr_reid"):
        load_state_dict_strict(model, convert_transreid_ssl(sd, jpm="global"), source="jpm")
    x = torch.randn(2, 3, 256, 128, generator=torch.Generator().manual_seed(23))
    with torch.no_grad():
        got = model(x).double()
    # the global branch: base blocks 0..n-2, then b1's block and LayerNorm (b1 is index 1 of 2 blocks here)
    ref_flat = {k: v for k, v in flat.items() if not k.startswith(("blocks.1.", "norm."))}
    ref_flat.update({f"blocks.1.{k[len('b1.0.'):]}": v for k, v in sd.items() if k.startswith("b1.0.")})
    ref_flat.update({f"norm.{k[len('b1.1.'):]}": v for k, v in sd.items() if k.startswith("b1.1.")})
    torch.testing.assert_close(got, vit_reference(ref_flat, x, heads=4), rtol=1e-4, atol=1e-5)
    assert (got - vit_reference(flat, x, heads=4)).abs().max() > 1e-2  # base's own last block is not it
    lines = [r.getMessage() for r in caplog.records if r.name == "isr_reid"]
    assert len(lines) == 1
    assert "b2.* (" in lines[0] and "classifier_4.weight" in lines[0] and "base.blocks.1" in lines[0]


def test_fcneck_is_refused_by_name():
    sd = _finetuned(_tiny_vit_state(ics=True))
    sd["fcneck.weight"] = torch.zeros(16, 32)
    with pytest.raises(ValueError, match=r"fcneck \(MODEL\.REDUCE_FEAT_DIM\)"):
        convert_transreid_ssl(sd)


def test_finetuned_384x128_loads_with_its_grid(tmp_path, caplog):
    """transformer_120.pth of a 384x128 fine-tuning: 1+24x8 position tokens; the zoo's ViT-S is 256x128."""
    flat = rand_state(transreid_vit_shapes(384, 12, ics=False, grid=(24, 8)), seed=24)
    path = tmp_path / "transformer_120.pth"
    torch.save(_finetuned(flat, classes=10), path)
    x = torch.randn(1, 3, 384, 128, generator=torch.Generator().manual_seed(25))
    ref = vit_reference(flat, x, heads=6, grid=(24, 8))
    with caplog.at_level("INFO", logger="isr_reid"):
        model = load_model("transreid_ssl_vit_small", weights=path, device="cpu")
    assert model.cfg.input_size == (384, 128) and tuple(model.cfg.extra["pos_grid"]) == (24, 8)
    assert any("24x8 grid: input size set to 384x128" in r.getMessage() for r in caplog.records)
    with torch.no_grad():
        torch.testing.assert_close(model(x).double(), ref, rtol=1e-4, atol=1e-5)
    # saved and loaded again: the grid and the input size travel with the weights
    back = load_model("transreid_ssl_vit_small", weights=model.save_pretrained(tmp_path / "hub"), device="cpu")
    assert back.cfg.input_size == (384, 128)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)


def test_pos_grid_is_fitted_or_refused_with_a_hint():
    from isr_reid import get_config
    from isr_reid.models.vit import fit_pos_grid

    base = get_config("transreid_ssl_vit_base_ics")  # 384x128 input, pretrained on a 16x8 grid
    pretrained = {"pos_embed": torch.zeros(1, 129, 768)}
    assert fit_pos_grid(base, pretrained) == base
    finetuned = fit_pos_grid(base, {"pos_embed": torch.zeros(1, 193, 768)})
    assert tuple(finetuned.extra["pos_grid"]) == (24, 8) and finetuned.input_size == (384, 128)
    overlapping = {"pos_embed": torch.zeros(1, 1 + 21 * 10, 768)}  # STRIDE_SIZE 12 at 256x128
    with pytest.raises(ValueError, match=r"1\+210 tokens.*input size 384x128.*24x8=192.*STRIDE_SIZE"):
        fit_pos_grid(base, overlapping, source="t.pth")
    with pytest.raises(ValueError, match=r"pos_grid=\(16, 8\) has 128 cells"):
        fit_pos_grid(base.replace(pos_grid=(16, 8)), {"pos_embed": torch.zeros(1, 193, 768)}, explicit=frozenset({"pos_grid"}))
    # an explicit input size is kept; the 24x8 grid is resized to it on the fly
    small = fit_pos_grid(base.replace(input_size=(256, 128)), {"pos_embed": torch.zeros(1, 193, 768)},
                         explicit=frozenset({"input_size"}))
    assert small.input_size == (256, 128) and tuple(small.extra["pos_grid"]) == (24, 8)
