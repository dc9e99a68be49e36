"""Training losses: ISR's reliability-guided contrastive loss, batch-hard triplet, label-smoothed cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["batch_hard_triplet_loss", "cross_entropy_label_smooth", "reliability_contrastive_loss"]


def reliability_contrastive_loss(
    embeddings: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """ISR's reliability-guided InfoNCE over a batch (Dou et al., ICCV 2023).

    With unit embeddings z (N, D), l_ij = -log( exp(<z_i, z_j>/T) / sum_{k != i} exp(<z_i, z_k>/T) ):
    every other crop of the batch (both frames, other videos) is a negative. For positive pairs
    (a_p, b_p) with reliabilities w_p in [0, 1]:

        L = sum_p w_p (l_{a_p b_p} + l_{b_p a_p}) / 2  /  sum_p w_p

    a weighted mean, so reliable pairs dominate whatever the overall confidence (an untrained network
    has low margins everywhere). Returns 0 (still attached to the graph) when no pair has weight.
    T = 0.07 is MoCo's temperature, also used by contrastive ReID methods; the paper leaves it open.
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    if not (a.shape == b.shape == weights.shape) or a.dim() != 1:
        raise ValueError(f"a, b, weights must be 1-D of one length, got {tuple(a.shape)}, {tuple(b.shape)}, {tuple(weights.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = embeddings.shape[0]
    z = embeddings.float()
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), float("-inf"))
    logp = torch.log_softmax(logits, dim=1)
    w = weights.to(z)
    total = w.sum()
    if len(a) == 0 or total <= 0:
        return z.sum() * 0.0
    per_pair = -(logp[a, b] + logp[b, a]) / 2
    return (w * per_pair).sum() / total


def batch_hard_triplet_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al., "In Defense of the Triplet Loss", 2017), Euclidean distances.

    Per anchor: max(0, d(hardest positive) - d(hardest negative) + margin), averaged over anchors
    that have both a positive and a negative in the batch.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features (N, D) and labels (N,) expected, got {tuple(features.shape)} and {tuple(labels.shape)}")
    x = features.float()
    sq = (x * x).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=x.device)
    pos = same & ~eye
    neg = ~same
    valid = pos.any(1) & neg.any(1)
    if not valid.any():
        return x.sum() * 0.0
    hardest_pos = dist.masked_fill(~pos, float("-inf")).max(1).values
    hardest_neg = dist.masked_fill(~neg, float("inf")).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def cross_entropy_label_smooth(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing (Szegedy et al., CVPR 2016): targets (1 - eps) one-hot + eps / C."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=epsilon)
