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
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SCLObjective", "SCLResult", "train_scl"]


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


@dataclass
class SCLResult:
    """What :func:`train_scl` did: one record per step (epoch, loss), and the objective with its memory banks."""

    history: list[dict[str, float]]
    objective: SCLObjective


def _scl_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g, stripes = model.branch_embeddings(model.forward_features(x))
    return g, torch.stack(stripes, dim=1)


def train_scl(
    model: nn.Module,
    images: Sequence[object],
    camids: Sequence[int],
    *,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 3.5e-4,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    flip_prob: float = 0.5,
    objective_options: dict[str, float] | None = None,
) -> SCLResult:
    """Train an SCL model (global + stripe branches, e.g. ``scl_resnet50``) on unlabeled images with :class:`SCLObjective`.

    ``images``: objects with ``path`` and ``box`` (``ImageRecord``, ``Crop``) or file paths; ``camids``
    one per image. The banks start from the eval-mode features of every image; each epoch visits the
    images in a seeded random order, with random horizontal flips. Returns the per-step records
    (epoch, loss) and the objective (its banks). With ``output_dir`` the final model is written with
    ``save_pretrained``.
    """
    from ..data.video import Crop
    from ..kernels import normalize_images
    from ._common import load_crops, show_progress

    if not hasattr(model, "branch_embeddings"):
        raise TypeError(f"train_scl needs a model with global and stripe branches (branch_embeddings); got {type(model).__name__}")
    if len(images) != len(camids):
        raise ValueError(f"images ({len(images)}) and camids ({len(camids)}) differ in length")
    items = [Crop(str(im)) if isinstance(im, (str, os.PathLike)) else im for im in images]
    dev = torch.device(device) if device is not None else model.device
    size = tuple(model.cfg.input_size)
    gen = torch.Generator().manual_seed(seed)
    model.to(dev)

    def batch(idx: torch.Tensor) -> torch.Tensor:
        u8 = load_crops([items[int(i)] for i in idx], size)
        return normalize_images(u8.to(dev), model.cfg.mean, model.cfg.std)

    g0, s0 = [], []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            g, s = _scl_features(model, batch(torch.arange(start, min(start + batch_size, len(items)))))
            g0.append(g.float().cpu())
            s0.append(s.float().cpu())
    g_all, s_all = torch.cat(g0), torch.cat(s0)
    objective = SCLObjective(camids, global_dim=g_all.shape[1], num_stripes=s_all.shape[1], stripe_dim=s_all.shape[2],
                             **(objective_options or {}))
    objective.initialize(g_all, s_all)
    objective.to(dev)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    history: list[dict[str, float]] = []
    from tqdm.auto import tqdm

    steps_per_epoch = math.ceil(len(items) / batch_size)
    bar = tqdm(total=epochs * steps_per_epoch, desc="scl train", unit="step", disable=not show_progress(progress, True))
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(items), generator=gen)
            for start in range(0, len(items), batch_size):
                idx = order[start:start + batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                x = batch(idx)
                flip = (torch.rand(len(idx), generator=gen) < flip_prob).to(dev)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
                g, s = _scl_features(model, x)
                loss = objective.loss(g, s, idx.to(dev), epoch)
                if not torch.isfinite(loss):
                    from ._common import NonFiniteLossError

                    raise NonFiniteLossError(f"the SCL loss is not finite at epoch {epoch + 1}; lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                objective.update(g.detach(), s.detach(), idx.to(dev))
                history.append({"epoch": float(epoch + 1), "loss": float(loss.item())})
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    finally:
        bar.close()
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return SCLResult(history, objective)
