"""TransReID-SSL's ViTs: ViT-S/16, ViT-S/16 + ICS, ViT-B/16 + ICS; the embedding is the CLS token.

TransReID-SSL (Luo et al., "Self-Supervised Pre-Training for Transformer-Based Person
Re-Identification", 2021) pretrains these with DINO on LUPerson at 256x128. A ViT (Dosovitskiy et
al., ICLR 2021) with qkv bias and LayerNorm eps 1e-6; ICS, the IBN-based convolution stem, replaces
the 16x16 patch projection by conv7x7/2 -> IBN -> ReLU -> conv3x3 -> IBN -> ReLU -> conv3x3 -> BN
-> ReLU -> conv8x8/8, where IBN (Pan et al., ECCV 2018) instance-normalises the first half of the
channels and batch-normalises the second. Parameter names follow TransReID-SSL's, so its
checkpoints convert by renaming almost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from ..config import ModelConfig, register_architecture
from .base import ReIDModel

__all__ = ["IBN", "PatchEmbed", "VisionTransformerReID", "fit_pos_grid", "resize_pos_embed"]

PATCH_STRIDE = 16  # the token stride of every zoo ViT: 16x16 patches, or the ICS stem (/2) then 8x8 patches

logger = logging.getLogger("isr_reid")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (1, 1 + H*W, D) position embedding to ``new_grid``: the CLS entry is kept, the grid
    part is resized bilinearly (align_corners=False), as TransReID's ``resize_pos_embed`` does."""
    if tuple(grid) == tuple(new_grid):
        return pos_embed
    h, w = grid
    if pos_embed.shape[1] != 1 + h * w:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} tokens, expected 1 + {h}x{w}")
    cls_pos, grid_pos = pos_embed[:, :1], pos_embed[:, 1:]
    grid_pos = grid_pos.reshape(1, h, w, -1).permute(0, 3, 1, 2)
    grid_pos = F.interpolate(grid_pos, size=tuple(new_grid), mode="bilinear", align_corners=False)
    grid_pos = grid_pos.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], -1)
    return torch.cat([cls_pos, grid_pos], dim=1)


class IBN(nn.Module):
    """InstanceNorm (affine) on the first half of the channels, BatchNorm on the rest (Pan et al., ECCV 2018)."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


class PatchEmbed(nn.Module):
    """Image -> patch tokens (B, N, D): a 16x16/16 conv, or the ICS stem then an 8x8/8 conv."""

    def __init__(self, embed_dim: int, patch_size: int = 16, ics: bool = False, stem_dim: int = 64):
        super().__init__()
        self.ics = ics
        if ics:
            self.conv = nn.Sequential(
                nn.Conv2d(3, stem_dim, kernel_size=7, stride=2, padding=3, bias=False),
                IBN(stem_dim),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_dim, stem_dim, kernel_size=3, stride=1, padding=1, bias=False),
                IBN(stem_dim),
                nn.ReLU(inplace=True),
                nn.Conv2d(stem_dim, stem_dim, kernel_size=3, stride=1, padding=1, bias=False),
                nn.BatchNorm2d(stem_dim),
                nn.ReLU(inplace=True),
            )
            self.proj = nn.Conv2d(stem_dim, embed_dim, kernel_size=patch_size // 2, stride=patch_size // 2)
        else:
            self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.ics:
            x = self.conv(x)
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class _Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d)) v, with the fused kernel where the device has one
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformerReID(ReIDModel):
    """ViT whose embedding is the CLS token after the final LayerNorm, L2-normalised.

    With ``neck=True`` the CLS feature goes through a BatchNorm1d (``bottleneck``, TransReID's
    BNNeck) before the L2 normalisation: TransReID's ``TEST.NECK_FEAT 'after'``.

    ``pos_embed`` holds a ``pos_grid`` (16x8: 256x128 inputs) grid plus CLS; inputs whose patch grid
    differs get it resized bilinearly on the fly (:func:`resize_pos_embed`), which is what
    TransReID-SSL does once at load time for its 384x128 models.
    ``forward_features`` gives the tokens (B, 1 + N, D) before the final LayerNorm.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        ics: bool = False,
        pos_grid: tuple[int, int] = (16, 8),
        drop_path_rate: float = 0.1,
        neck: bool = False,
    ):
        super().__init__()
        self.pos_grid = (int(pos_grid[0]), int(pos_grid[1]))
        self.patch_embed = PatchEmbed(embed_dim, ics=ics)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio, rates[i]) for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.bottleneck = nn.BatchNorm1d(embed_dim) if neck else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens, grid = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = x + resize_pos_embed(self.pos_embed, self.pos_grid, grid).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return x

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if features.dim() != 3:
            raise ValueError(f"forward_head expects tokens (B, 1 + N, D), got shape {tuple(features.shape)}")
        # LayerNorm is per token, so normalising the CLS token alone is the same as norm(x)[:, 0].
        cls = self.norm(features[:, 0])
        if self.bottleneck is not None:
            cls = self.bottleneck(cls)
        return F.normalize(cls.float(), dim=1) if normalize else cls.float()


def _build(cfg: ModelConfig, embed_dim: int, num_heads: int, ics: bool) -> VisionTransformerReID:
    neck_feat = cfg.extra.get("neck_feat", "before")
    if neck_feat not in ("before", "after"):
        raise ValueError(f"neck_feat must be 'before' or 'after' (TransReID's TEST.NECK_FEAT), got {neck_feat!r}")
    return VisionTransformerReID(
        neck=neck_feat == "after",
        embed_dim=embed_dim,
        depth=12,
        num_heads=num_heads,
        ics=ics,
        pos_grid=tuple(cfg.extra.get("pos_grid", (16, 8))),
        drop_path_rate=float(cfg.extra.get("drop_path_rate", 0.1)),
    )


def fit_pos_grid(
    cfg: ModelConfig, state_dict: Mapping[str, Any], *, explicit: frozenset[str] = frozenset(), source: str = "weights"
) -> ModelConfig:
    """``cfg`` with ``pos_grid`` (and, unless given, ``input_size``) told by the checkpoint's position embedding.

    A (1, 1 + K, D) ``pos_embed`` is read as: the ``pos_grid`` given (must hold K cells), else the
    configured grid if it holds K cells, else the input size's grid at stride 16 if it holds K, else
    K / (W / 16) rows of the input's width; in that last case a 384x128 fine-tuned checkpoint (K=192)
    loaded without ``input_size`` gets the 384x128 input it was trained at. Anything else is an error.
    """
    pos = state_dict.get("pos_embed")
    if not isinstance(pos, torch.Tensor) or pos.dim() != 3:
        return cfg  # the strict load names the missing or mis-shaped key
    cells = int(pos.shape[1]) - 1
    h, w = cfg.input_size
    in_grid = (h // PATCH_STRIDE, w // PATCH_STRIDE)
    grid = tuple(int(v) for v in cfg.extra.get("pos_grid", (16, 8)))
    hint = (
        f"pass input_size=(H, W), the size it was trained at (TransReID's INPUT.SIZE_TEST), or pos_grid=(rows, cols) "
        f"with rows*cols={cells}; checkpoints trained with overlapping patches (TransReID's STRIDE_SIZE < 16) "
        "are not supported"
    )
    if "pos_grid" in explicit:
        if grid[0] * grid[1] != cells:
            raise ValueError(
                f"{source}: pos_embed holds 1+{cells} tokens, but pos_grid={grid} has {grid[0] * grid[1]} cells; {hint}"
            )
        return cfg
    if grid[0] * grid[1] == cells:
        return cfg
    if in_grid[0] * in_grid[1] == cells:
        return cfg.replace(pos_grid=in_grid)
    if in_grid[1] > 0 and cells % in_grid[1] == 0:
        fitted = (cells // in_grid[1], in_grid[1])
        if "input_size" in explicit:
            return cfg.replace(pos_grid=fitted)  # resized on the fly to the input's grid
        size = (fitted[0] * PATCH_STRIDE, fitted[1] * PATCH_STRIDE)
        logger.info(
            "%s: pos_embed holds a %dx%d grid: input size set to %dx%d, the size it was trained at "
            "(pass input_size=(H, W) to embed at another size)", source, *fitted, *size,
        )
        return cfg.replace(pos_grid=fitted, input_size=size)
    raise ValueError(
        f"{source}: pos_embed holds 1+{cells} tokens, which is no grid of input size {h}x{w} at patch stride "
        f"{PATCH_STRIDE} ({in_grid[0]}x{in_grid[1]}={in_grid[0] * in_grid[1]} cells); {hint}"
    )


@register_architecture("vit_small_patch16", fit_to_weights=fit_pos_grid)
def _vit_small_patch16(cfg: ModelConfig) -> ReIDModel:
    return _build(cfg, 384, 6, ics=False)


@register_architecture("vit_small_ics", fit_to_weights=fit_pos_grid)
def _vit_small_ics(cfg: ModelConfig) -> ReIDModel:
    return _build(cfg, 384, 6, ics=True)


@register_architecture("vit_base_ics", fit_to_weights=fit_pos_grid)
def _vit_base_ics(cfg: ModelConfig) -> ReIDModel:
    return _build(cfg, 768, 12, ics=True)
