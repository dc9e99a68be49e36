"""Fused ops on the extraction path: uint8 -> normalised float, and pool + BN + L2 heads.

Each op has a PyTorch path (CPU, and the reference) and a Triton path (CUDA), registered as a
``torch.library`` custom op. ``ISR_REID_KERNELS=auto|triton|torch`` picks the path (``auto``:
Triton on CUDA tensors, PyTorch elsewhere; ``triton`` on CPU tensors needs ``TRITON_INTERPRET=1``),
and :func:`kernel_backend` overrides it inside a block (``"torch"`` keeps custom ops out of
exported graphs).
"""

from ._backend import current_backend, kernel_backend
from .head import pool_bn_l2
from .l2norm import l2_normalize
from .ln_mean import ln_mean_tokens
from .normalize import normalize_images

__all__ = [
    "current_backend",
    "kernel_backend",
    "l2_normalize",
    "ln_mean_tokens",
    "normalize_images",
    "pool_bn_l2",
]
