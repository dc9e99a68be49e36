"""The released ISR model: Swin-B -> final LayerNorm -> mean over tokens -> Linear(1024, 512) -> L2.

ISR (Dou et al., "Identity-Seeking Self-Supervised Representation Learning for Generalizable
Person Re-identification", ICCV 2023) runs timm 0.4.12's ``swin_base_patch4_window7_224`` and a
Linear. torchvision's ``SwinTransformer`` (v1) is the same network: the same 2x2 patch-merging
order (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), the same relative position
bias table and index, the same -100 attention mask for shifted windows, and no shift once the
window covers the whole map (the 7x7 stage at 224x224). The trunk here is torchvision's, so its
state-dict keys are torchvision's (``features.*``, ``norm.*``) plus ``feat.*`` for the Linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer

from ..config import ModelConfig, register_architecture
from ..kernels import l2_normalize, ln_mean_tokens
from .base import ReIDModel

__all__ = ["SwinISR"]


class SwinISR(ReIDModel):
    """Swin Transformer (Liu et al., ICCV 2021) with ISR's embedding head.

    ``forward_features`` gives the last stage's tokens (B, L, C) before the final LayerNorm;
    ``forward_head`` applies LayerNorm, the mean over tokens, the Linear, then L2.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        window_size: int = 7,
        out_dim: int = 512,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        trunk = SwinTransformer(
            patch_size=[4, 4],
            embed_dim=embed_dim,
            depths=list(depths),
            num_heads=list(num_heads),
            window_size=[window_size, window_size],
            stochastic_depth_prob=drop_path_rate,
        )
        self.features = trunk.features
        self.norm = trunk.norm
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        self.feat = nn.Linear(self.num_features, out_dim)
        nn.init.trunc_normal_(self.feat.weight, std=0.02)
        nn.init.zeros_(self.feat.bias)
        # The index is a function of the window size alone: rebuild it, never store it, so that
        # weights files hold parameters only (upstream files carry it and the converter drops it).
        for m in self.features.modules():
            if isinstance(m, ShiftedWindowAttention):
                index = m.relative_position_index
                del m._buffers["relative_position_index"]
                m.register_buffer("relative_position_index", index, persistent=False)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, H, W, C)
        return x.flatten(1, 2)

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"SwinISR.forward_head expects tokens (B, L, C), got shape {tuple(features.shape)}")
        if self.training:
            y = self.feat(self.norm(features).mean(1))
            return F.normalize(y, dim=1) if normalize else y
        pooled = ln_mean_tokens(features, self.norm.weight, self.norm.bias, self.norm.eps)
        y = pooled @ self.feat.weight.t().to(pooled.dtype)
        if normalize:
            return l2_normalize(y, self.feat.bias)
        return y + self.feat.bias.to(y.dtype)


@register_architecture("swin_base_isr")
def _swin_base_isr(cfg: ModelConfig) -> ReIDModel:
    return SwinISR(
        embed_dim=128,
        depths=(2, 2, 18, 2),
        num_heads=(4, 8, 16, 32),
        window_size=7,
        out_dim=cfg.embed_dim,
        drop_path_rate=float(cfg.extra.get("drop_path_rate", 0.1)),
    )
