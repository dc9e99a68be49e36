"""ResNet ReID models: ``isr_resnet50`` / ``isr_resnet18`` (GeM + BNNeck) and ``scl_resnet50`` (global + stripes).

Backbones are torchvision's ResNets with the last stride set to 1 (a 256x128 input gives a 16x8
map), as is standard in ReID since Sun et al. (PCB, ECCV 2018) and Luo et al. (Bag of Tricks, 2019).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..config import ModelConfig, register_architecture
from .base import ReIDModel
from .heads import PoolBNHead

__all__ = ["ResNetGeMReID", "ResNetSCL", "resnet_trunk"]


def resnet_trunk(depth: int, last_stride: int = 1) -> nn.Sequential:
    """torchvision ResNet-``depth`` without avgpool/fc, layer4's stride set to ``last_stride``."""
    builders = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34, 50: torchvision.models.resnet50}
    if depth not in builders:
        raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(builders)}")
    net = builders[depth](weights=None)
    block = net.layer4[0]
    # Bottleneck strides in conv2 (ResNet v1.5), BasicBlock in conv1; the shortcut in downsample[0].
    strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
    strided.stride = (last_stride, last_stride)
    if block.downsample is not None:
        block.downsample[0].stride = (last_stride, last_stride)
    return nn.Sequential(
        nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),  # stem
        net.layer1,
        net.layer2,
        net.layer3,
        net.layer4,
    )


class ResNetGeMReID(ReIDModel):
    """ResNet (last stride 1) -> GeM -> BNNeck -> L2. The embedding has the trunk's width."""

    def __init__(self, depth: int = 50, pool: str = "gem", gem_p: float = 3.0):
        super().__init__()
        self.backbone = resnet_trunk(depth)
        dim = 2048 if depth == 50 else 512
        self.head = PoolBNHead(dim, pool=pool, p=gem_p)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.head(features, normalize=normalize)


class ResNetSCL(ReIDModel):
    """ResNet-50 with SCL's global and stripe branches (Pang et al., ACM TOMM 2022).

    Global: avg pool -> Linear(2048, 2048) -> BN -> L2 = g. Stripes: the map cut into 8 horizontal
    bands of H // 8 rows (as SCL's code does), each avg pool -> Linear(2048, 256) -> BN -> L2 = s_k.
    The embedding is ``[g / sqrt(2), s_1 / 4, ..., s_8 / 4]`` (4096-d): it has unit norm (1/2 + 8/16 = 1), and the dot
    product of two embeddings is 0.5 <g, g'> + 0.5 * mean_k <s_k, s_k'>, SCL's similarity.
    """

    def __init__(self, num_stripes: int = 8, global_dim: int = 2048, stripe_dim: int = 256):
        super().__init__()
        self.backbone = resnet_trunk(50)
        self.num_stripes = num_stripes
        self.global_fc = nn.Linear(2048, global_dim)
        self.global_bn = nn.BatchNorm1d(global_dim)
        self.stripe_fc = nn.ModuleList(nn.Linear(2048, stripe_dim) for _ in range(num_stripes))
        self.stripe_bn = nn.ModuleList(nn.BatchNorm1d(stripe_dim) for _ in range(num_stripes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def branch_embeddings(self, features: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The unit global embedding (B, 2048) and the list of 8 unit stripe embeddings (B, 256)."""
        f = features.float()
        g = F.normalize(self.global_bn(self.global_fc(f.mean((2, 3)))), dim=1)
        # SCL's bands: H // num_stripes rows each, from the top; leftover bottom rows are unused.
        band_h = f.shape[2] // self.num_stripes
        if band_h == 0:
            raise ValueError(f"feature map height {f.shape[2]} is below the {self.num_stripes} stripes")
        bands = f[:, :, : band_h * self.num_stripes].unflatten(2, (self.num_stripes, band_h)).mean((3, 4))
        stripes = [
            F.normalize(bn(fc(bands[:, :, k])), dim=1)
            for k, (fc, bn) in enumerate(zip(self.stripe_fc, self.stripe_bn))
        ]
        return g, stripes

    def forward_head(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        # The concatenation is unit-norm by construction, so `normalize` changes nothing.
        g, stripes = self.branch_embeddings(features)
        w = 1.0 / math.sqrt(2 * self.num_stripes)
        return torch.cat([g * math.sqrt(0.5)] + [s * w for s in stripes], dim=1)


@register_architecture("resnet50_gem_bnneck")
def _resnet50_gem_bnneck(cfg: ModelConfig) -> ReIDModel:
    return ResNetGeMReID(50, pool=cfg.extra.get("pool", "gem"), gem_p=cfg.extra.get("gem_p", 3.0))


@register_architecture("resnet18_gem_bnneck")
def _resnet18_gem_bnneck(cfg: ModelConfig) -> ReIDModel:
    return ResNetGeMReID(18, pool=cfg.extra.get("pool", "gem"), gem_p=cfg.extra.get("gem_p", 3.0))


@register_architecture("resnet50_scl")
def _resnet50_scl(cfg: ModelConfig) -> ReIDModel:
    return ResNetSCL()
