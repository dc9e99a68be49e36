"""isr_swin_base: the Swin trunk against torchvision's own swin_b given the same weights, the head
against a float64 recomputation, and the timm-0.4.12 semantics against the reference in reference_nets."""

from __future__ import annotations

import pytest
import torch
import torchvision
from reference_nets import rand_state, swin_isr_reference, timm_swin_shapes

from isr_reid import load_model
from isr_reid.convert import convert_isr_swin
from isr_reid.models.swin import SwinISR
from isr_reid.weights import load_state_dict_strict


@pytest.fixture(scope="module")
def swin_pair():
    """Our isr_swin_base and an independently built torchvision swin_b holding the same random weights."""
    torch.manual_seed(0)
    tv = torchvision.models.swin_b(weights=None).eval()
    with torch.no_grad():  # LayerNorms and biases away from their 1/0 init, so that they count
        for p in tv.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    ours = load_model("isr_swin_base", pretrained=False, device="cpu")
    state = {
        k: v for k, v in tv.state_dict().items() if not k.startswith("head.") and "relative_position_index" not in k
    }
    state["feat.weight"] = torch.randn(512, 1024) / 32
    state["feat.bias"] = 0.1 * torch.randn(512)
    load_state_dict_strict(ours, state, source="torchvision swin_b")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        tv_tokens = tv.features(x)  # (1, 7, 7, 1024)
        tv_pooled = tv.flatten(tv.avgpool(tv.permute(tv.norm(tv_tokens))))
        ours_tokens = ours.forward_features(x)
        ours_emb = ours(x)
        ours_raw = ours.forward_head(ours_tokens, normalize=False)
    return {
        "ours": ours,
        "state": state,
        "tv_tokens": tv_tokens,
        "tv_pooled": tv_pooled,
        "ours_tokens": ours_tokens,
        "ours_emb": ours_emb,
        "ours_raw": ours_raw,
    }


def test_trunk_matches_torchvision_swin_b(swin_pair):
    tokens = swin_pair["ours_tokens"]
    assert tokens.shape == (1, 49, 1024)
    torch.testing.assert_close(tokens, swin_pair["tv_tokens"].reshape(1, 49, 1024), rtol=1e-5, atol=1e-5)


def test_head_against_float64(swin_pair):
    st = swin_pair["state"]
    pooled = swin_pair["tv_pooled"].double()  # torchvision's norm -> avgpool, the same "LN then mean"
    raw = pooled @ st["feat.weight"].double().T + st["feat.bias"].double()
    emb = raw / raw.norm(dim=1, keepdim=True)
    torch.testing.assert_close(swin_pair["ours_raw"].double(), raw, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swin_pair["ours_emb"].double(), emb, rtol=1e-5, atol=1e-6)
    assert swin_pair["ours_emb"].dtype == torch.float32
    assert swin_pair["ours_emb"].shape == (1, 512)


def test_train_mode_head_equals_eval_head(swin_pair):
    ours = swin_pair["ours"]
    ours.train()
    try:
        with torch.no_grad():
            y = ours.forward_head(swin_pair["ours_tokens"])
    finally:
        ours.eval()
    torch.testing.assert_close(y, swin_pair["ours_emb"], rtol=1e-5, atol=1e-6)


def test_weights_hold_no_buffers(swin_pair):
    keys = set(swin_pair["ours"].state_dict())
    assert not [k for k in keys if "relative_position_index" in k or "attn_mask" in k]
    # Swin-B without timm's 1000-class head (1000*1024 + 1000) plus ISR's Linear (512*1024 + 512)
    n = sum(p.numel() for p in swin_pair["ours"].parameters())
    assert n == 87_768_224 - 1_025_000 + 524_800  # timm lists swin_base_patch4_window7_224 at 87,768,224


def test_tiny_swin_follows_timm_0412_semantics():
    """Shifted windows with masks in stages 0-2, no shift on the one-window 7x7 stage, timm's merge order."""
    depths, heads = (2, 2, 2, 2), (1, 2, 2, 4)
    upstream = rand_state(timm_swin_shapes(8, depths, heads, out_dim=16), seed=1)
    model = SwinISR(embed_dim=8, depths=depths, num_heads=heads, out_dim=16).eval()
    load_state_dict_strict(model, convert_isr_swin({"state_dict": upstream}), source="tiny")
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = model(x)
    ref = swin_isr_reference(upstream, x, depths, heads)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=2e-5)
    assert (got[0] @ got[1]).item() < 0.999  # distinct inputs stay distinct


def test_forward_head_rejects_a_feature_map(swin_pair):
    with pytest.raises(ValueError, match="tokens"):
        swin_pair["ours"].forward_head(torch.zeros(1, 1024, 7, 7))
