"""Embedding heads in one read of the feature map: pool -> per-channel affine -> L2."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["l2_normalize", "ln_mean_tokens", "pool_bn_l2", "pool_bn_l2_torch"]


def pool_bn_l2_torch(
    x: torch.Tensor,
    *,
    mode: str = "mean",
    p: torch.Tensor | float | None = None,
    eps: float = 1e-6,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """PyTorch path of :func:`pool_bn_l2`."""
    if x.dim() == 4:
        flat = x.flatten(2).float()  # (B, C, HW)
        dim = 2
    elif x.dim() == 3:
        flat = x.float()  # (B, L, C)
        dim = 1
    else:
        raise ValueError(f"pool_bn_l2 expects (B,C,H,W) or (B,L,C), got {tuple(x.shape)}")
    if mode == "mean":
        pooled = flat.mean(dim)
    elif mode == "gem":
        if p is None:
            raise ValueError("GeM pooling needs p")
        p_t = p.float() if isinstance(p, torch.Tensor) else torch.tensor(float(p), device=x.device)
        pooled = flat.clamp(min=eps).pow(p_t).mean(dim).pow(1.0 / p_t)
    else:
        raise ValueError(f"mode must be 'mean' or 'gem', got {mode!r}")
    if scale is not None:
        pooled = pooled * scale.float()
    if shift is not None:
        pooled = pooled + shift.float()
    return F.normalize(pooled, dim=1) if normalize else pooled


def pool_bn_l2(
    x: torch.Tensor,
    *,
    mode: str = "mean",
    p: torch.Tensor | float | None = None,
    eps: float = 1e-6,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Pool a feature map (B,C,H,W) or tokens (B,L,C) to (B,C) float32, then affine, then L2.

    mean: m_c = mean_i x_ci. GeM (Radenovic et al., TPAMI 2018): m_c = (mean_i max(x_ci, eps)^p)^(1/p).
    Then y_c = m_c * scale_c + shift_c (an eval-mode BatchNorm folded into scale/shift), and
    y / max(||y||_2, 1e-12) when ``normalize``.
    """
    return pool_bn_l2_torch(x, mode=mode, p=p, eps=eps, scale=scale, shift=shift, normalize=normalize)


def ln_mean_tokens(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """LayerNorm over channels of tokens (B,L,C), then the mean over tokens: (B,C) float32."""
    return F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps).mean(1)


def l2_normalize(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """(x + bias) / max(||x + bias||_2, 1e-12) over the last dim, in float32."""
    x = x.float()
    if bias is not None:
        x = x + bias.float()
    return F.normalize(x, dim=-1)
