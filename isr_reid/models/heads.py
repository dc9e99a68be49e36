"""Embedding heads shared by the CNN models: pooling, BNNeck, L2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels import pool_bn_l2

__all__ = ["PoolBNHead", "fold_batchnorm"]


def fold_batchnorm(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode BatchNorm as a per-channel affine: y = x * scale + shift."""
    scale = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.float()
    shift = -bn.running_mean.float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.float()
    return scale, shift


class PoolBNHead(nn.Module):
    """Pool (mean or GeM) -> BNNeck -> L2 (Luo et al., "Bag of Tricks", CVPRW 2019, for BNNeck).

    In eval mode the three steps run as one fused op (:func:`isr_reid.kernels.pool_bn_l2`).
    ``pool_features`` gives the pre-BN feature that a triplet loss uses in training.
    """

    def __init__(self, dim: int, pool: str = "gem", p: float = 3.0, learn_p: bool = True, eps: float = 1e-6):
        super().__init__()
        if pool not in ("mean", "gem"):
            raise ValueError(f"pool must be 'mean' or 'gem', got {pool!r}")
        self.pool = pool
        self.eps = eps
        if pool == "gem":
            self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learn_p)
        else:
            self.register_parameter("p", None)
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)  # BNNeck: no shift learned

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C) pooled, before the BNNeck, float32."""
        return pool_bn_l2(features, mode=self.pool, p=self.p, eps=self.eps, normalize=False)

    def forward(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if self.training:
            y = self.bn(self.pool_features(features))
            return F.normalize(y, dim=1) if normalize else y
        scale, shift = fold_batchnorm(self.bn)
        return pool_bn_l2(
            features, mode=self.pool, p=self.p, eps=self.eps, scale=scale, shift=shift, normalize=normalize
        )
