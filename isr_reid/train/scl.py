"""The SCL objective (Pang et al., "Selective Contrastive Learning for Unsupervised Person Re-identification", ACM TOMM 2022).

For unlabeled images without video. Every training image i has a slot in two memory banks: global
(2048-d) and local (8 stripes of 256-d), all unit vectors. For a batch sample with features g (global)
and s_1..s_8 (stripes), both unit:

- distance to memory item j: d_j = lambda_g (1 - <g, G_j>) + (1 - lambda_g) (1 - mean_k <s_k, S_jk>)
  + lambda_c [camera(j) == camera(i)] (the camera term favours cross-camera neighbours);
- positives P(i): its ``num_positives`` = 7 nearest items (itself excluded); negatives N(i): the next
  ``num_negatives`` nearest (a choice: the paper's text leaves their number open; 50 here);
- with candidates C = {i} + P(i) + N(i) and logits z_j = 10 <f, M_j> over C,
  L(f, M) = - sum_j w_j log softmax(z)_j, w_i = lambda_t, w_j = alpha (1 - lambda_t) / |P| for j in P(i);
- applied to the global feature (M = global bank) and to the local one (f = the stripes concatenated
  and divided by sqrt(8), a unit vector whose dot product is the mean stripe similarity), mixed as
  L = (1 - lambda_p) L_global + lambda_p L_local (lambda_p weighs the auxiliary local term);
- during the first ``warmup_epochs`` = 3 epochs the only positive is the sample itself (w_i = 1);
- after each step the banks are updated: v <- l2norm(0.5 v + 0.5 f) (per stripe for the local bank).

Defaults from the authors' code: lambda_g 0.5, lambda_c 0.05, lambda_t 0.5, alpha 1.75, lambda_p 0.3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SCLObjective"]


class SCLObjective(nn.Module):
    """SCL's memory banks and loss; ``loss(g, stripes, indices, epoch)`` then ``update(g, stripes, indices)``."""

    def __init__(
        self,
        camids: Sequence[int],
        *,
        global_dim: int = 2048,
        num_stripes: int = 8,
        stripe_dim: int = 256,
        num_positives: int = 7,
        num_negatives: int = 50,
        lambda_g: float = 0.5,
        lambda_c: float = 0.05,
        lambda_t: float = 0.5,
        alpha: float = 1.75,
        lambda_p: float = 0.3,
        scale: float = 10.0,
        momentum: float = 0.5,
        warmup_epochs: int = 3,
    ):
        super().__init__()
        n = len(camids)
        if n < 2:
            raise ValueError(f"SCL needs at least 2 training images, got {n}")
        if num_positives < 1 or num_negatives < 0:
            raise ValueError(f"num_positives must be >= 1 and num_negatives >= 0, got {num_positives}, {num_negatives}")
        self.num_positives = min(num_positives, n - 1)
        self.num_negatives = min(num_negatives, n - 1 - self.num_positives)
        self.lambda_g, self.lambda_c, self.lambda_t = lambda_g, lambda_c, lambda_t
        self.alpha, self.lambda_p, self.scale = alpha, lambda_p, scale
        self.momentum, self.warmup_epochs = momentum, warmup_epochs
        self.num_stripes = num_stripes
        self.register_buffer("camids", torch.as_tensor(list(camids), dtype=torch.long))
        self.register_buffer("global_bank", F.normalize(torch.randn(n, global_dim), dim=1))
        self.register_buffer("local_bank", F.normalize(torch.randn(n, num_stripes, stripe_dim), dim=2))

    @torch.no_grad()
    def initialize(self, g: torch.Tensor, stripes: torch.Tensor) -> None:
        """Fill the banks with the features of every training image: g (N, Dg), stripes (N, S, Ds)."""
        if g.shape != self.global_bank.shape or stripes.shape != self.local_bank.shape:
            raise ValueError(
                f"initial features must be {tuple(self.global_bank.shape)} and {tuple(self.local_bank.shape)}, "
                f"got {tuple(g.shape)} and {tuple(stripes.shape)}"
            )
        self.global_bank.copy_(F.normalize(g.float(), dim=1))
        self.local_bank.copy_(F.normalize(stripes.float(), dim=2))

    @torch.no_grad()
    def neighbours(self, g: torch.Tensor, stripes: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positives (B, P), negatives (B, N)): memory indices by SCL's distance, nearest first, self excluded."""
        sim_g = g.float() @ self.global_bank.t()
        sim_l = torch.einsum("bkd,nkd->bn", stripes.float(), self.local_bank) / self.num_stripes
        dist = self.lambda_g * (1 - sim_g) + (1 - self.lambda_g) * (1 - sim_l)
        dist = dist + self.lambda_c * (self.camids[indices][:, None] == self.camids[None, :]).float()
        dist[torch.arange(len(indices)), indices] = float("inf")
        order = torch.argsort(dist, dim=1, stable=True)
        p, q = self.num_positives, self.num_negatives
        return order[:, :p], order[:, p:p + q]

    def _branch_loss(self, f: torch.Tensor, bank: torch.Tensor, cand: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        logits = self.scale * torch.einsum("bd,bcd->bc", f, bank[cand])
        return -(weights * torch.log_softmax(logits, dim=1)).sum(1).mean()

    def loss(self, g: torch.Tensor, stripes: torch.Tensor, indices: torch.Tensor, epoch: int) -> torch.Tensor:
        """SCL loss of a batch: g (B, Dg) and stripes (B, S, Ds) unit features of training images ``indices``."""
        if stripes.dim() != 3 or stripes.shape[1] != self.num_stripes:
            raise ValueError(f"stripes must be (B, {self.num_stripes}, D), got {tuple(stripes.shape)}")
        pos, neg = self.neighbours(g.detach(), stripes.detach(), indices)
        cand = torch.cat([indices[:, None], pos, neg], dim=1)
        w = torch.zeros(cand.shape, device=g.device)
        if epoch < self.warmup_epochs:
            w[:, 0] = 1.0
        else:
            w[:, 0] = self.lambda_t
            w[:, 1:1 + pos.shape[1]] = self.alpha * (1 - self.lambda_t) / pos.shape[1]
        b = len(indices)
        local_f = stripes.float().reshape(b, -1) / math.sqrt(self.num_stripes)
        local_bank = self.local_bank.reshape(len(self.local_bank), -1) / math.sqrt(self.num_stripes)
        lg = self._branch_loss(g.float(), self.global_bank, cand, w)
        ll = self._branch_loss(local_f, local_bank, cand, w)
        return (1 - self.lambda_p) * lg + self.lambda_p * ll

    @torch.no_grad()
    def update(self, g: torch.Tensor, stripes: torch.Tensor, indices: torch.Tensor) -> None:
        """v <- l2norm(m v + (1 - m) f) for the batch's memory slots (m = 0.5)."""
        m = self.momentum
        self.global_bank[indices] = F.normalize(m * self.global_bank[indices] + (1 - m) * g.float(), dim=1)
        self.local_bank[indices] = F.normalize(m * self.local_bank[indices] + (1 - m) * stripes.float(), dim=2)
