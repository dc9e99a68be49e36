"""TransReID-SSL ViTs against a straightforward float64 re-computation (explicit q/k/v matmuls,
softmax, LayerNorm, IBN stem, bilinear position-embedding resize) written in reference_nets."""

from __future__ import annotations

import pytest
import torch
from reference_nets import rand_state, transreid_vit_shapes, vit_reference

from isr_reid import load_model
from isr_reid.models.vit import VisionTransformerReID, resize_pos_embed
from isr_reid.weights import load_state_dict_strict


def _tiny(ics: bool, seed: int) -> tuple[VisionTransformerReID, dict]:
    model = VisionTransformerReID(embed_dim=32, depth=2, num_heads=4, ics=ics).eval()
    # our parameter names are TransReID-SSL's, so the upstream-named random weights load as they are
    state = rand_state(transreid_vit_shapes(32, 2, ics, with_fc=False), seed=seed)
    load_state_dict_strict(model, state, source="random")
    return model, state


@pytest.mark.parametrize("ics", [False, True])
@pytest.mark.parametrize("size", [(256, 128), (384, 128), (192, 96)])
def test_tiny_vit_matches_reference(ics, size):
    model, state = _tiny(ics, seed=11)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        got = model(x)
    ref = vit_reference(state, x, heads=4)
    assert got.shape == (2, 32) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    assert (got[0] @ got[1]).item() < 0.999


def test_unnormalised_head_is_the_final_layernorm_of_cls():
    model, state = _tiny(ics=False, seed=13)
    x = torch.randn(1, 3, 256, 128, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        tokens = model.forward_features(x)
        raw = model.forward_head(tokens, normalize=False)
    assert tokens.shape == (1, 1 + 16 * 8, 32)
    cls = tokens[0, 0].double()
    mu, var = cls.mean(), cls.var(unbiased=False)
    expect = (cls - mu) / torch.sqrt(var + 1e-6) * state["norm.weight"].double() + state["norm.bias"].double()
    torch.testing.assert_close(raw[0].double(), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "dim", "heads", "ics", "input_size"),
    [
        ("transreid_ssl_vit_small", 384, 6, False, (256, 128)),
        ("transreid_ssl_vit_small_ics", 384, 6, True, (256, 128)),
        ("transreid_ssl_vit_base_ics", 768, 12, True, (384, 128)),
    ],
)
def test_zoo_vits_have_the_published_structure(name, dim, heads, ics, input_size):
    model = load_model(name, pretrained=False, device="cpu")
    assert model.cfg.input_size == input_size and model.cfg.embed_dim == dim
    assert tuple(model.pos_embed.shape) == (1, 129, dim)  # the 16x8 LUPerson pretraining grid + CLS
    assert model.blocks[0].attn.num_heads == heads and len(model.blocks) == 12
    assert model.blocks[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6
    if ics:
        stem = 3 * 64 * 49 + 2 * 64 * 64 * 9 + 2 * (2 * 32 + 2 * 32) + 2 * 64 + 64 * 64 * dim + dim
    else:
        stem = 3 * 16 * 16 * dim + dim
    block = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (4 * dim * dim + 4 * dim) + (4 * dim * dim + dim) + 4 * dim
    expected = stem + dim + 129 * dim + 12 * block + 2 * dim
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.randn(1, 3, *input_size)
    with torch.no_grad():
        tokens = model.forward_features(x)
        emb = model.forward_head(tokens)
    # ViT-B runs at 384x128: a 24x8 grid, the position embedding resized from 16x8
    assert tokens.shape == (1, 1 + (input_size[0] // 16) * (input_size[1] // 16), dim)
    assert emb.shape == (1, dim)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))


def test_resize_pos_embed_identity_and_errors():
    pos = torch.randn(1, 129, 8)
    assert resize_pos_embed(pos, (16, 8), (16, 8)) is pos
    out = resize_pos_embed(pos, (16, 8), (32, 16))
    torch.testing.assert_close(out[:, 0], pos[:, 0])  # CLS entry untouched
    # 2x upsampling, half-pixel centres: output row 5 samples input row 2.25, column 7 input column 3.25
    grid = pos[0, 1:].reshape(16, 8, 8)
    up = out[0, 1:].reshape(32, 16, 8)
    torch.testing.assert_close(
        up[5, 7], 0.75 * (0.75 * grid[2, 3] + 0.25 * grid[2, 4]) + 0.25 * (0.75 * grid[3, 3] + 0.25 * grid[3, 4])
    )
    with pytest.raises(ValueError, match="pos_embed has 129 tokens"):
        resize_pos_embed(pos, (12, 8), (16, 8))
