"""ResNet models: last stride 1, the GeM + BNNeck head against float64, SCL's similarity identity."""

from __future__ import annotations

import math

import pytest
import torch

from isr_reid.models.resnet import ResNetGeMReID, ResNetSCL, resnet_trunk


def _random_bn(bn: torch.nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        bn.weight.copy_(1 + 0.3 * torch.randn(bn.weight.shape, generator=g))
        bn.bias.copy_(0.3 * torch.randn(bn.bias.shape, generator=g))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(bn.running_var.shape, generator=g))


@pytest.mark.parametrize(("depth", "channels"), [(18, 512), (50, 2048)])
def test_last_stride_1_gives_16x8_at_256x128(depth, channels):
    trunk = resnet_trunk(depth).eval()
    with torch.no_grad():
        f = trunk(torch.randn(1, 3, 256, 128))
    assert f.shape == (1, channels, 16, 8)  # stride 16 overall, not 32
    with torch.no_grad():
        f2 = resnet_trunk(depth, last_stride=2).eval()(torch.randn(1, 3, 256, 128))
    assert f2.shape == (1, channels, 8, 4)


@pytest.mark.parametrize("normalize", [True, False])
def test_gem_bnneck_head_against_float64(normalize):
    g = torch.Generator().manual_seed(0)
    model = ResNetGeMReID(18, pool="gem", gem_p=3.0).eval()
    with torch.no_grad():
        model.head.p.fill_(2.7)
    _random_bn(model.head.bn, g)
    feats = torch.randn(3, 512, 16, 8, generator=g)  # negatives too: GeM clamps them to eps
    with torch.no_grad():
        got = model.forward_head(feats, normalize=normalize)

    x = feats.double().clamp(min=1e-6)
    p = 2.7
    pooled = (x**p).mean((2, 3)) ** (1 / p)
    bn = model.head.bn
    y = (pooled - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps)
    y = y * bn.weight.double() + bn.bias.double()
    if normalize:
        y = y / y.norm(dim=1, keepdim=True)
    assert got.shape == (3, 512) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), y, rtol=1e-5, atol=1e-6)


def _scl_with_random_head(seed: int) -> ResNetSCL:
    g = torch.Generator().manual_seed(seed)
    model = ResNetSCL().eval()
    for bn in [model.global_bn, *model.stripe_bn]:
        _random_bn(bn, g)
    return model


def test_scl_embedding_dot_product_is_scl_similarity():
    model = _scl_with_random_head(1)
    feats = torch.randn(4, 2048, 16, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        emb = model.forward_head(feats)
        g, stripes = model.branch_embeddings(feats)
    assert emb.shape == (4, 4096)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    # SCL's similarity computed pair by pair from the branches
    expected = torch.empty(4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            glob = float(g[i].double() @ g[j].double())
            local = sum(float(s[i].double() @ s[j].double()) for s in stripes) / len(stripes)
            expected[i, j] = 0.5 * glob + 0.5 * local
    torch.testing.assert_close((emb @ emb.T).double(), expected, rtol=1e-5, atol=1e-5)


def test_scl_stripes_are_upstream_floor_bands():
    """SCL cuts H into 8 bands of H // 8 rows from the top; with H = 18 the last 2 rows are unused."""
    model = _scl_with_random_head(3)
    feats = torch.randn(2, 2048, 18, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, stripes = model.branch_embeddings(feats)
        changed = feats.clone()
        changed[:, :, 16:] += 5.0
        _, stripes_changed = model.branch_embeddings(changed)
    for k in range(8):
        band = feats[:, :, 2 * k : 2 * k + 2].double().mean((2, 3))
        fc, bn = model.stripe_fc[k], model.stripe_bn[k]
        y = band @ fc.weight.double().T + fc.bias.double()
        y = (y - bn.running_mean.double()) / torch.sqrt(bn.running_var.double() + bn.eps) * bn.weight.double()
        y = y + bn.bias.double()
        torch.testing.assert_close(stripes[k].double(), y / y.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stripes_changed[k], stripes[k])
    assert math.isclose(float(stripes[0][0].norm()), 1.0, rel_tol=1e-5)


def test_scl_too_short_map_is_an_error():
    model = ResNetSCL().eval()
    with pytest.raises(ValueError, match="height 4"):
        model.forward_head(torch.randn(1, 2048, 4, 2))
