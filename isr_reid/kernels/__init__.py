"""Fused ops on the extraction path: uint8 -> normalised float, and pool + BN + L2 heads.

Each op has a PyTorch path (CPU, and the reference) and a Triton path (CUDA); the environment
variable ``ISR_REID_KERNELS=auto|triton|torch`` picks one (``auto``: Triton on CUDA tensors).
"""

from .head import l2_normalize, ln_mean_tokens, pool_bn_l2
from .normalize import normalize_images

__all__ = ["l2_normalize", "ln_mean_tokens", "normalize_images", "pool_bn_l2"]
