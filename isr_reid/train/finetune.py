"""Supervised fine-tuning on a labeled ReID dataset: BNNeck, label-smoothed cross-entropy + batch-hard triplet.

The recipe of Luo et al. ("Bag of Tricks and A Strong Baseline for Deep Person Re-identification",
CVPRW 2019): a PxK identity sampler (P identities, K images each), the triplet loss on the pooled
feature before the BNNeck, the identity classifier (no bias) on the feature after it, cross-entropy
with label smoothing 0.1, triplet margin 0.3, Adam 3.5e-4 with linear warm-up and cosine decay,
random flip and pad-and-crop (10 px). At the end the model is evaluated on the query/gallery split
(cosine distance, Market-1501 protocol) when one is given.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._io import atomic_path
from ..kernels import normalize_images
from ._common import (
    CHECKPOINT_NAME,
    NonFiniteLossError,
    all_finite,
    amp_setup,
    gather_rank_states,
    load_crops,
    make_optimization,
    resume_checkpoint,
    save_checkpoint,
    setup_distributed,
    show_progress,
)
from .losses import batch_hard_triplet_loss, cross_entropy_label_smooth

if TYPE_CHECKING:
    from ..data.datasets import ImageRecord, ReIDDataset
    from ..models.base import ReIDModel
    from ..retrieval import RankResult

__all__ = ["FinetuneResult", "IdentitySampler", "evaluate_model", "finetune", "reid_features"]


class IdentitySampler:
    """PxK batches: P distinct identities, K images each (with replacement when an identity has fewer than K).

    With ``world_size > 1`` each rank draws its own batches (seeded by rank). The state is a numpy
    PCG64 generator, saved by :meth:`state_dict`.
    """

    def __init__(self, pids: Sequence[int], p: int = 16, k: int = 4, *, seed: int = 0):
        if p < 2 or k < 2:
            raise ValueError(f"a PxK batch needs P >= 2 identities and K >= 2 images each, got P={p}, K={k}")
        self.by_pid: dict[int, np.ndarray] = {}
        for i, pid in enumerate(pids):
            self.by_pid.setdefault(int(pid), []).append(i)  # type: ignore[arg-type]
        self.by_pid = {pid: np.asarray(idx, dtype=np.int64) for pid, idx in self.by_pid.items()}
        if len(self.by_pid) < p:
            raise ValueError(f"the training set has {len(self.by_pid)} identities; P={p} needs at least that many")
        self.pid_list = np.asarray(sorted(self.by_pid), dtype=np.int64)
        self.p, self.k = p, k
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self) -> np.ndarray:
        """One batch of P*K record indices, grouped by identity."""
        out = []
        for pid in self.rng.choice(self.pid_list, size=self.p, replace=False):
            idx = self.by_pid[int(pid)]
            out.append(self.rng.choice(idx, size=self.k, replace=len(idx) < self.k))
        return np.concatenate(out)

    def state_dict(self) -> dict[str, Any]:
        """The generator state (for resuming)."""
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rng.bit_generator.state = state["bit_generator"]


def reid_features(model: ReIDModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(triplet feature, classifier feature): pooled before the BNNeck and after it, when the head has one.

    Heads without ``pool_features`` (transformers, SCL) give their unnormalised embedding for both.
    """
    feats = model.forward_features(x)
    after = model.forward_head(feats, normalize=False).float()
    head = getattr(model, "head", None)
    before = head.pool_features(feats).float() if hasattr(head, "pool_features") else after
    return before, after


class _Trainable(nn.Module):
    # One module for DDP: the model and its identity classifier.
    def __init__(self, model: ReIDModel, num_classes: int):
        super().__init__()
        self.model = model
        self.classifier = nn.Linear(model.cfg.embed_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before, after = reid_features(self.model, x)
        return before, self.classifier(after)


@dataclass
class FinetuneResult:
    """Per-step records (loss, ce, triplet, lr, images/s), the final evaluation, where the model was written."""

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    metrics: RankResult | None = None
    output_dir: Path | None = None
    resumed_from: int | None = None


def _augment(images: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    n, _, h, w = images.shape
    flip = torch.rand(n, generator=gen) < 0.5
    images = images.clone()
    images[flip] = images[flip].flip(3)
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
        images = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offs.tolist())])
    return images


def evaluate_model(model: ReIDModel, dataset: ReIDDataset, *, batch_size: int = 64, progress: bool | None = None) -> RankResult:
    """Rank-1/mAP of ``model`` on ``dataset``'s query/gallery split (cosine distance, Market-1501 protocol)."""
    from ..data.datasets import record_images
    from ..retrieval import evaluate_rank

    if not dataset.query or not dataset.gallery:
        raise ValueError(f"dataset {dataset.name!r} has no query/gallery split to evaluate on")
    q = model.extract(record_images(dataset.query), batch_size=batch_size, progress=progress)
    g = model.extract(record_images(dataset.gallery), batch_size=batch_size, progress=progress)
    dist = 1.0 - q @ g.T
    return evaluate_rank(
        dist,
        np.asarray([r.pid for r in dataset.query]), np.asarray([r.pid for r in dataset.gallery]),
        np.asarray([r.camid for r in dataset.query]), np.asarray([r.camid for r in dataset.gallery]),
    )


def finetune(
    model: ReIDModel,
    train: Sequence[ImageRecord],
    *,
    max_steps: int = 2000,
    ids_per_batch: int = 16,
    instances: int = 4,
    lr: float = 3.5e-4,
    weight_decay: float = 5e-4,
    warmup_steps: int | None = None,
    label_smoothing: float = 0.1,
    triplet_margin: float = 0.3,
    triplet_weight: float = 1.0,
    augment: bool = True,
    pad: int = 10,
    eval_dataset: ReIDDataset | None = None,
    output_dir: str | Path | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    seed: int = 0,
    amp: bool | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    log_every: int = 0,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` on labeled records (``load_dataset(name, root).train``) with CE + triplet (BoT recipe).

    Loss = CE_ls(classifier(BNNeck(f))) + triplet_weight * batch_hard_triplet(f). Checkpoints (model,
    classifier, optimizer, scheduler, sampler, RNG) go to ``output_dir/checkpoint.pt`` atomically;
    the final model is written with ``save_pretrained``; ``eval_dataset`` is evaluated at the end.
    ``resume=True`` continues from the checkpoint as :func:`isr_reid.train.train_isr` does: the run
    options must equal the checkpoint's ``config`` except ``max_steps``, else a ValueError names each.
    """
    if not train:
        raise ValueError("finetune: the training set is empty")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if resume and output_dir is None:
        raise ValueError("resume=True needs output_dir (where checkpoint.pt is)")
    out = Path(output_dir) if output_dir is not None else None
    dist_info = setup_distributed(device)
    dev = dist_info.device
    use_amp, amp_dtype = amp_setup(amp, dev)

    labels_of = {pid: i for i, pid in enumerate(sorted({r.pid for r in train}))}
    labels = torch.tensor([labels_of[r.pid] for r in train])
    sampler = IdentitySampler([r.pid for r in train], ids_per_batch, instances, seed=seed * 1000 + dist_info.rank)
    aug_gen = torch.Generator().manual_seed(seed * 1000 + dist_info.rank + 1)
    torch.manual_seed(seed)
    net = _Trainable(model, len(labels_of)).to(dev).train()
    config = {
        "model": model.cfg.name, "input_size": list(model.cfg.input_size), "max_steps": max_steps,
        "ids_per_batch": ids_per_batch, "instances": instances, "lr": lr, "weight_decay": weight_decay,
        "warmup_steps": warmup_steps, "label_smoothing": label_smoothing, "triplet_margin": triplet_margin,
        "triplet_weight": triplet_weight, "augment": augment, "pad": pad, "num_images": len(train),
        "num_identities": len(labels_of), "seed": seed, "world_size": dist_info.world_size,
    }

    result = FinetuneResult(output_dir=out)
    start = 0
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    # One check of this run's options against the checkpoint's (see RESUME_MAY_CHANGE), before anything is loaded.
    state = resume_checkpoint(ckpt_path, config, max_steps=max_steps, is_main=dist_info.is_main, log=log) if resume else None
    if state is not None and warmup_steps is None:
        warmup_steps = (state.get("config") or {}).get("warmup_steps")
    opt = make_optimization([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay,
                            max_steps=max_steps, warmup_steps=warmup_steps, use_amp=use_amp, amp_dtype=amp_dtype)
    config["warmup_steps"] = opt.warmup_steps
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state)
        rank_state = state["ranks"].get(str(dist_info.rank))
        if rank_state is None:
            raise ValueError(f"{ckpt_path} has no state for rank {dist_info.rank}: resume with the same number of processes")
        sampler.load_state_dict(rank_state["sampler"])
        aug_gen.set_state(rank_state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        result.history = list(state.get("history", []))
        result.resumed_from = start
    wrapped: nn.Module = net
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    size = tuple(model.cfg.input_size)
    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=start, desc="finetune", unit="step",
               disable=not show_progress(progress, dist_info.is_main))
    try:
        for step in range(start, max_steps):
            t0 = time.perf_counter()
            idx = sampler.sample()
            images = load_crops([train[int(i)] for i in idx], size)
            if augment:
                images = _augment(images, aug_gen, pad)
            x = normalize_images(images.to(dev), model.cfg.mean, model.cfg.std)
            y = labels[idx].to(dev)
            autocast = torch.autocast(dev.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            with autocast:
                feat, logits = wrapped(x)
            ce = cross_entropy_label_smooth(logits.float(), y, label_smoothing)
            tri = batch_hard_triplet_loss(feat.float(), y, triplet_margin)
            loss = ce + triplet_weight * tri
            if not all_finite(loss.detach(), dist_info.world_size):
                last = f"; the last good checkpoint is {ckpt_path}" if ckpt_path is not None and ckpt_path.is_file() else ""
                raise NonFiniteLossError(f"the fine-tuning loss is not finite at step {step + 1}{last}. Lower the learning rate.")
            opt.step(loss)
            record = {
                "step": step + 1, "loss": float(loss.item()), "ce": float(ce.item()), "triplet": float(tri.item()),
                "lr": float(opt.optimizer.param_groups[0]["lr"]),
                "images_per_s": len(idx) * dist_info.world_size / (time.perf_counter() - t0),
            }
            result.history.append(record)
            result.steps = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", ce=f"{record['ce']:.3f}", tri=f"{record['triplet']:.3f}")
            if log is not None and dist_info.is_main and log_every and (step + 1) % log_every == 0:
                log(f"step {step + 1}/{max_steps}  loss {record['loss']:.4f}  ce {record['ce']:.4f}  "
                    f"triplet {record['triplet']:.4f}  {record['images_per_s']:.1f} img/s  lr {record['lr']:.2e}")
            if (step + 1) % checkpoint_every == 0 or step + 1 == max_steps:
                ranks = gather_rank_states(
                    {str(dist_info.rank): {"sampler": sampler.state_dict(), "aug_rng": aug_gen.get_state()}},
                    dist_info.world_size,
                )
                if dist_info.is_main and ckpt_path is not None:
                    save_checkpoint(ckpt_path, {
                        "step": step + 1, "net": net.state_dict(), **opt.state_dict(), "ranks": ranks,
                        "torch_rng": torch.get_rng_state(), "history": result.history, "config": config,
                    })
    finally:
        bar.close()
    model.eval()
    if dist_info.is_main and out is not None:
        model.save_pretrained(out)
        with atomic_path(out / "finetune_history.json") as tmp:
            tmp.write_text(json.dumps({"config": config, "history": result.history}, indent=1) + "\n")
    if eval_dataset is not None and dist_info.is_main:
        result.metrics = evaluate_model(model, eval_dataset, progress=progress)
    return result
