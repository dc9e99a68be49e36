"""ISR training on unlabeled video: mine positive pairs across frames, train with the reliability-guided loss.

One step (Dou et al., ICCV 2023, with the choices the paper leaves open made here):

1. The sampler draws ``videos_per_batch`` frame pairs (t, t + delta), one per video, delta uniform in
   ``delta`` frame steps (default 1 to 4: close enough that most persons are still in view, far
   enough that pose and occlusion change); each frame keeps at most
   ``batch_size // (2 * videos_per_batch)`` crops. Several videos per batch give negatives that are
   surely different persons.
2. All crops are embedded by the model in train mode (random horizontal flip). Pairs are mined on
   these embeddings, detached (no gradient goes through the matching), or, with ``momentum``, on the
   embeddings of a momentum (EMA) copy of the model in eval mode (MoCo-style, steadier targets).
3. Per frame pair: maximum-weight bipartite matching of the cosine similarities; each matched pair
   gets a reliability (:func:`isr_reid.train.matching.pair_reliability`).
4. Loss: :func:`isr_reid.train.losses.reliability_contrastive_loss` over the whole batch.

``positives="instance"`` is the ablation without inter-frame mining (plain instance contrast, as in
SimCLR/MoCo): each step takes the crops of the first frame of each pair only, embeds two independently
augmented views of each (flip, ``color_jitter``, and a random resized crop of 64-100% of the area),
and the two views of a crop are its only positive, with weight 1.

Adam (lr 3.5e-4, weight decay 5e-4, the usual ReID setting) with linear warm-up and cosine decay.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

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
from .losses import reliability_contrastive_loss
from .matching import MinedPairs, mine_pairs

if TYPE_CHECKING:
    from ..data.video import VideoSet
    from ..models.base import ReIDModel

__all__ = ["NonFiniteLossError", "TrainResult", "train_isr"]


@dataclass
class TrainResult:
    """What a training run did: one record per step (loss, pairs, reliability, images/s, lr), where it wrote."""

    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    output_dir: Path | None = None
    resumed_from: int | None = None

    @property
    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, momentum: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(momentum).add_(pm.detach(), alpha=1 - momentum)
        for be, bm in zip(ema.buffers(), model.buffers()):
            be.copy_(bm)


def _photometric_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Per image, a random per-channel gain in [1 - s, 1 + s] and gamma in [e^-s, e^s] on uint8 (B, 3, H, W).

    The two frames of an ISR pair come from one camera, so nothing in them teaches invariance to
    another camera's colour cast and exposure; jittering each crop independently does.
    """
    n = images.shape[0]
    gain = 1 + strength * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    gamma = torch.exp(strength * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1))
    x = (images.float() / 255).clamp_min(1e-6).pow(gamma) * gain
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _random_resized_crop(images: torch.Tensor, min_area: float, gen: torch.Generator) -> torch.Tensor:
    """Per image, a random box of ``min_area`` to 100% of the area (aspect ratio 3/4 to 4/3 of the
    image's), resized back to the full size: uint8 (B, 3, H, W) in and out."""
    import math

    import torch.nn.functional as F

    n, _, h, w = images.shape
    out = torch.empty_like(images)
    area = min_area + (1 - min_area) * torch.rand(n, generator=gen)
    log_ratio = math.log(4 / 3) * (2 * torch.rand(n, generator=gen) - 1)
    pos = torch.rand(n, 2, generator=gen)
    for i in range(n):
        ratio = math.exp(float(log_ratio[i]))
        ch = min(h, max(1, round(h * math.sqrt(float(area[i]) / ratio))))
        cw = min(w, max(1, round(w * math.sqrt(float(area[i]) * ratio))))
        y0, x0 = int(pos[i, 0] * (h - ch + 1)), int(pos[i, 1] * (w - cw + 1))
        crop = images[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw].float()
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
    return out


def _raise_non_finite(what: str, step: int, rank: int, ckpt_path: Path | None) -> None:
    last = (
        f"; the last good checkpoint is {ckpt_path}" if ckpt_path is not None and ckpt_path.is_file() else
        "; no checkpoint was written yet"
    )
    raise NonFiniteLossError(
        f"NaN or inf in the ISR {what} at step {step + 1} (on rank {rank}), so the loss is not finite; "
        f"training stopped{last}. Lower the learning rate, or turn AMP off."
    )


def train_isr(
    model: ReIDModel,
    videos: str | Path | VideoSet,
    *,
    max_steps: int = 1000,
    batch_size: int = 64,
    videos_per_batch: int = 4,
    lr: float = 3.5e-4,
    weight_decay: float = 5e-4,
    warmup_steps: int | None = None,
    temperature: float = 0.07,
    delta: tuple[int, int] = (1, 4),
    reliability: str = "margin",
    margin_scale: float = 0.1,
    min_similarity: float | None = None,
    momentum: float | None = None,
    min_score: float | None = None,
    min_size: float | Sequence[float] = 0.0,
    flip_prob: float = 0.5,
    color_jitter: float = 0.0,
    positives: str = "mined",
    freeze_bn: bool = False,
    output_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    seed: int = 0,
    amp: bool | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    log_every: int = 0,
    log: Callable[[str], None] | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` with ISR on unlabeled videos (a MOT folder, a crop folder, a crop list, or a VideoSet).

    Writes ``output_dir/checkpoint.pt`` every ``checkpoint_every`` steps and at the end (atomically),
    and the final model with ``save_pretrained`` (loads with ``load_model(NAME, weights=output_dir)``).
    ``resume=True`` continues from ``output_dir/checkpoint.pt`` (logging "resuming from step N"; with no
    checkpoint there it says so and starts at step 0) and reaches the same weights as an uninterrupted
    run. Every run option recorded in the checkpoint's ``config`` (input size included) must equal this
    run's, except ``max_steps`` (``_common.RESUME_MAY_CHANGE``): a ValueError names each that differs.
    Under torchrun each rank samples its own videos and DDP all-reduces the gradients. ``seed`` seeds the sampler, the flips and torch's global RNG. A NaN/inf loss raises
    :class:`NonFiniteLossError`. ``callback(record)`` runs after
    each step. The model is returned to eval mode. ``color_jitter`` > 0 applies an independent
    per-channel gain and gamma to every crop (off by default, as in the paper's pipeline; useful
    when the cameras you will match across differ in colour and exposure). ``positives="instance"``
    replaces the inter-frame mining by plain instance contrast (see the module docstring).
    ``freeze_bn=True`` keeps every BatchNorm (trunk and BNNeck) in eval mode: running statistics stay
    those of the start, the affine parameters still train, and the training embedding is the one
    used at test time (for a pretrained start fine-tuned on few videos).
    """
    from ..data.frame_pairs import FramePairSampler
    from ..data.video import load_videos

    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if videos_per_batch < 1 or batch_size < 2 * videos_per_batch:
        raise ValueError(
            f"batch_size ({batch_size}) must hold at least one crop per frame: >= 2 * videos_per_batch ({videos_per_batch})"
        )
    if positives not in ("mined", "instance"):
        raise ValueError(f"positives must be 'mined' or 'instance', got {positives!r}")
    if momentum is not None and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if resume and output_dir is None:
        raise ValueError("resume=True needs output_dir (where checkpoint.pt is)")
    out = Path(output_dir) if output_dir is not None else None
    dist_info = setup_distributed(device)
    dev = dist_info.device
    use_amp, amp_dtype = amp_setup(amp, dev)

    vs = load_videos(videos, min_score=min_score, min_size=min_size)
    sampler = FramePairSampler(
        vs,
        pairs_per_batch=videos_per_batch,
        max_crops_per_frame=batch_size // (2 * videos_per_batch),
        delta=delta,
        seed=seed * 1000 + dist_info.rank,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
    )
    flip_gen = torch.Generator().manual_seed(seed * 1000 + dist_info.rank + 1)
    torch.manual_seed(seed)

    model.to(dev).train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    ema = None
    if momentum is not None:
        ema = copy.deepcopy(model).eval()
        ema.requires_grad_(False)
    size = tuple(model.cfg.input_size)
    config = {
        "model": model.cfg.name, "input_size": list(size), "max_steps": max_steps, "batch_size": batch_size,
        "videos_per_batch": videos_per_batch, "lr": lr, "weight_decay": weight_decay, "warmup_steps": warmup_steps,
        "temperature": temperature, "delta": list(delta), "reliability": reliability, "margin_scale": margin_scale,
        "min_similarity": min_similarity, "momentum": momentum, "color_jitter": color_jitter, "flip_prob": flip_prob,
        "positives": positives, "freeze_bn": freeze_bn,
        "min_score": min_score, "min_size": min_size, "num_videos": len(vs), "num_crops": vs.num_crops(),
        "seed": seed, "world_size": dist_info.world_size,
    }
    result = TrainResult(output_dir=out)
    start = 0
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    # One check of this run's options against the checkpoint's (see RESUME_MAY_CHANGE), before anything is loaded.
    state = resume_checkpoint(ckpt_path, config, max_steps=max_steps, is_main=dist_info.is_main, log=log) if resume else None
    if state is not None and warmup_steps is None:
        warmup_steps = (state.get("config") or {}).get("warmup_steps")
    opt = make_optimization([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay,
                            max_steps=max_steps, warmup_steps=warmup_steps, use_amp=use_amp, amp_dtype=amp_dtype)
    config["warmup_steps"] = opt.warmup_steps
    if state is not None:
        rank_key = str(dist_info.rank)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state)
        if ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"{ckpt_path} was written without a momentum encoder; resume with momentum=None")
            ema.load_state_dict(state["ema"])
        if rank_key not in state["ranks"]:
            raise ValueError(f"{ckpt_path} has no state for rank {rank_key}: resume with the same number of processes")
        sampler.load_state_dict(state["ranks"][rank_key]["sampler"])
        flip_gen.set_state(state["ranks"][rank_key]["flip_rng"])
        torch.set_rng_state(state["torch_rng"])
        start = int(state["step"])
        result.history = list(state.get("history", []))
        result.resumed_from = start

    net: torch.nn.Module = model
    if dist_info.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def write_checkpoint(step: int) -> None:
        ranks = gather_rank_states(
            {str(dist_info.rank): {"sampler": sampler.state_dict(), "flip_rng": flip_gen.get_state()}},
            dist_info.world_size,
        )
        if dist_info.is_main and ckpt_path is not None:
            save_checkpoint(ckpt_path, {
                "step": step, "model": model.state_dict(), **opt.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "ranks": ranks,
                "torch_rng": torch.get_rng_state(), "history": result.history, "config": config,
            })

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=start, desc="isr train", unit="step",
               disable=not show_progress(progress, dist_info.is_main))
    frame_cache: dict[str, Any] = {}
    try:
        for step in range(start, max_steps):
            t0 = time.perf_counter()
            pairs = sampler.sample()
            crops, groups = [], []
            for p in pairs:
                ia = list(range(len(crops), len(crops) + len(p.crops_a)))
                crops.extend(p.crops_a)
                ib = list(range(len(crops), len(crops) + len(p.crops_b)))
                crops.extend(p.crops_b)
                groups.append((ia, ib))
            if positives == "instance":  # one frame per pair, each crop twice: rows i and i + n are views of one crop
                crops = [c for p in pairs for c in p.crops_a]
                crops = crops + crops
            frame_cache.clear()
            images = load_crops(crops, size, frame_cache)
            if positives == "instance":
                images = _random_resized_crop(images, 0.64, flip_gen)
            flip = torch.rand(len(crops), generator=flip_gen) < flip_prob
            images[flip] = images[flip].flip(3)
            if color_jitter > 0:
                images = _photometric_jitter(images, color_jitter, flip_gen)
            x = normalize_images(images.to(dev), model.cfg.mean, model.cfg.std)
            autocast = torch.autocast(dev.type, dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            with autocast:
                emb = net(x).float()
            if not all_finite(emb.detach(), dist_info.world_size):
                _raise_non_finite("embeddings", step, dist_info.rank, ckpt_path)
            if ema is not None:
                with torch.no_grad(), autocast:
                    mine_emb = ema(x).float()
            else:
                mine_emb = emb.detach()
            if positives == "instance":
                half = len(crops) // 2
                idx = torch.arange(half)
                sim = (mine_emb[:half] * mine_emb[half:]).sum(1).cpu().double().numpy()
                mined = MinedPairs(idx.numpy(), (idx + half).numpy(), sim, sim * 0 + 1.0)
            else:
                mined = mine_pairs(mine_emb, groups, reliability=reliability, margin_scale=margin_scale,
                                   min_similarity=min_similarity)
            a = torch.from_numpy(mined.a).to(dev)
            b = torch.from_numpy(mined.b).to(dev)
            w = torch.from_numpy(mined.reliability).float().to(dev)
            loss = reliability_contrastive_loss(emb, a, b, w, temperature)
            if not all_finite(loss.detach(), dist_info.world_size):
                _raise_non_finite("loss", step, dist_info.rank, ckpt_path)
            opt.step(loss)
            if ema is not None:
                _ema_update(ema, model, momentum)  # type: ignore[arg-type]
            dt = time.perf_counter() - t0
            record = {
                "step": step + 1,
                "loss": float(loss.item()),
                "pairs": float(len(mined)),
                "reliability": float(mined.reliability.mean()) if len(mined) else 0.0,
                "similarity": float(mined.similarity.mean()) if len(mined) else 0.0,
                "images": float(len(crops)),
                "images_per_s": len(crops) * dist_info.world_size / dt,
                "pairs_per_s": len(mined) * dist_info.world_size / dt,
                "lr": float(opt.optimizer.param_groups[0]["lr"]),
            }
            result.history.append(record)
            result.steps = step + 1
            bar.update(1)
            bar.set_postfix({"loss": f"{record['loss']:.3f}", "pairs/s": f"{record['pairs_per_s']:.1f}",
                             "rel": f"{record['reliability']:.2f}", "img/s": f"{record['images_per_s']:.0f}"})
            if log is not None and dist_info.is_main and log_every and (step + 1) % log_every == 0:
                log(f"step {step + 1}/{max_steps}  loss {record['loss']:.4f}  pairs {int(record['pairs'])}  "
                    f"reliability {record['reliability']:.3f}  {record['images_per_s']:.1f} img/s  lr {record['lr']:.2e}")
            if (step + 1) % checkpoint_every == 0 or step + 1 == max_steps:
                write_checkpoint(step + 1)
            if callback is not None:
                callback(record)
    finally:
        bar.close()
    result.steps = max(result.steps, start)
    if dist_info.is_main and out is not None:
        model.save_pretrained(out)
        with atomic_path(out / "train_history.json") as tmp:
            tmp.write_text(json.dumps({"config": config, "history": result.history}, indent=1) + "\n")
    model.eval()
    return result
