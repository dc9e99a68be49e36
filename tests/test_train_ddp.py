"""DDP through torchrun: two CPU processes (gloo) train one step; the weights equal a hand-made gradient average."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from test_train_isr import SIZE, write_synthetic_videos

from isr_reid import load_model
from isr_reid.data.images import resize_image
from isr_reid.data.video import FramePairSampler, VideoSet
from isr_reid.train import mine_pairs, reliability_contrastive_loss

LR = 1e-3


def _rank_loss(model: torch.nn.Module, vs: VideoSet, rank: int) -> torch.Tensor:
    # What rank `rank` computes in its first step (seed 0): its own sampler and flip generator.
    sampler = FramePairSampler(vs, pairs_per_batch=2, max_crops_per_frame=3, delta=(1, 2), seed=rank, rank=rank, world_size=2)
    flip_gen = torch.Generator().manual_seed(rank + 1)
    crops, groups = [], []
    for p in sampler.sample():
        ia = list(range(len(crops), len(crops) + len(p.crops_a)))
        crops += p.crops_a
        ib = list(range(len(crops), len(crops) + len(p.crops_b)))
        crops += p.crops_b
        groups.append((ia, ib))
    u8 = np.stack([resize_image(np.asarray(Image.open(c.path).convert("RGB")), SIZE) for c in crops])
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    flip = torch.rand(len(crops), generator=flip_gen) < 0.5
    x[flip] = x[flip].flip(3)
    mean = torch.tensor(model.cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.cfg.std).view(1, 3, 1, 1)
    emb = model((x - mean) / std)
    mined = mine_pairs(emb, groups)
    return reliability_contrastive_loss(
        emb, torch.from_numpy(mined.a), torch.from_numpy(mined.b), torch.from_numpy(mined.reliability).float()
    )


def test_torchrun_two_cpu_processes_average_gradients(tmp_path: Path) -> None:
    videos = write_synthetic_videos(tmp_path / "videos", videos=4)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "isr_reid.cli", "train", "--model", "isr_resnet18", "--videos", str(videos), "--output", str(out),
        "--max-steps", "1", "--batch-size", "12", "--videos-per-batch", "2", "--delta", "1", "2",
        "--input-size", *map(str, SIZE), "--lr", str(LR), "--device", "cpu", "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert sorted(ckpt["ranks"]) == ["0", "1"] and ckpt["config"]["world_size"] == 2

    # Reference: the same start (seed 0 before the model is built, as the CLI does), one rank at a time,
    # gradients averaged by hand, one Adam step.
    torch.manual_seed(0)
    ref = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu").train()
    vs = VideoSet.from_folder(videos)
    params = [p for p in ref.parameters() if p.requires_grad]
    grads = []
    for rank in (0, 1):
        ref.zero_grad()
        _rank_loss(ref, vs, rank).backward()
        grads.append([p.grad.clone() for p in params])
    trained = load_model("isr_resnet18", weights=out, device="cpu").state_dict()

    def mismatched_fraction(grad: list[torch.Tensor]) -> float:
        torch.manual_seed(0)
        model = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
        ps = [p for p in model.parameters() if p.requires_grad]
        for p, g in zip(ps, grad):
            p.grad = g
        torch.optim.Adam(ps, lr=LR, weight_decay=5e-4).step()
        bad = sum(int(((trained[n] - p.detach()).abs() > 1e-5).sum()) for n, p in model.named_parameters())
        return bad / sum(p.numel() for p in ps)

    # Adam's first step is lr * g / (|g| + eps): where |g| is ~1e-8 the summation order of the
    # all-reduce flips it, so a handful of elements may differ; any other gradient differs widely.
    assert mismatched_fraction([(g0 + g1) / 2 for g0, g1 in zip(*grads)]) < 1e-3
    assert mismatched_fraction(grads[0]) > 1e-2
