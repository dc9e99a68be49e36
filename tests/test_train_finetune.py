"""Supervised fine-tuning: the PxK sampler, the first step's loss recomputed by hand, the CLI with its evaluation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from isr_reid import load_model
from isr_reid.data.datasets import load_dataset
from isr_reid.train import IdentitySampler, finetune

SIZE = (32, 16)


def _write_folder_dataset(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    looks = rng.integers(0, 256, size=(6, 4, 2, 3))
    layout = {"train": {0: 3, 1: 3, 2: 2, 3: 3}, "query": {4: 1, 5: 1}, "gallery": {4: 2, 5: 2, 0: 1}}
    for split, ids in layout.items():
        for pid, n in ids.items():
            d = root / split / f"{pid:04d}"
            d.mkdir(parents=True)
            cam = "c1" if split == "query" else "c2"
            for k in range(n):
                img = np.kron(looks[pid], np.ones((6, 6, 1))) + rng.normal(0, 20, size=(24, 12, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"{cam}_{k}.png")
    return root


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_folder_dataset(tmp_path_factory.mktemp("folder_ds"))


def test_identity_sampler_draws_p_ids_with_k_images() -> None:
    pids = [7, 7, 7, 7, 7, 3, 3, 9, 9, 9, 9]
    s = IdentitySampler(pids, p=2, k=4, seed=0)
    seen_ids = set()
    for _ in range(50):
        batch = s.sample()
        groups = [batch[i * 4:(i + 1) * 4] for i in range(2)]
        ids = [{pids[i] for i in g} for g in groups]
        assert all(len(x) == 1 for x in ids) and ids[0] != ids[1]
        for g, x in zip(groups, ids):
            if x != {3}:  # 4+ images: drawn without replacement
                assert len(set(g.tolist())) == 4
        seen_ids |= ids[0] | ids[1]
    assert seen_ids == {3, 7, 9}
    with pytest.raises(ValueError, match="identities"):
        IdentitySampler([1, 1, 2], p=3, k=2)


def test_first_step_loss_matches_a_hand_computation(dataset_root: Path) -> None:
    train = load_dataset("folder", dataset_root).train
    torch.manual_seed(0)
    model = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    start = copy.deepcopy(model).train()
    result = finetune(model, train, max_steps=1, ids_per_batch=2, instances=2, augment=False, progress=False)

    idx = IdentitySampler([r.pid for r in train], 2, 2, seed=0).sample()
    labels_of = {pid: i for i, pid in enumerate(sorted({r.pid for r in train}))}
    y = np.array([labels_of[train[i].pid] for i in idx])
    u8 = np.stack([np.asarray(Image.open(train[i].path).convert("RGB").resize(SIZE[::-1], Image.BILINEAR)) for i in idx])
    x = (torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - torch.tensor(model.cfg.mean).view(1, 3, 1, 1)) / torch.tensor(
        model.cfg.std
    ).view(1, 3, 1, 1)
    torch.manual_seed(0)
    cls = nn.Linear(model.cfg.embed_dim, len(labels_of), bias=False)
    nn.init.normal_(cls.weight, std=0.001)
    with torch.no_grad():
        fmap = start.backbone(x).double()
        p = float(start.head.p)
        f = fmap.clamp_min(start.head.eps).pow(p).mean((2, 3)).pow(1 / p)  # GeM, before the BNNeck
        bn = start.head.bn
        g = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + bn.eps) * bn.weight.double() + bn.bias.double()
        logp = torch.log_softmax(g @ cls.weight.double().T, dim=1).numpy()
    eps, c = 0.1, len(labels_of)
    ce = np.mean([-(1 - eps) * logp[i, y[i]] - eps / c * logp[i].sum() for i in range(len(y))])
    fn = f.numpy()
    tri = []
    for i in range(len(y)):
        d = [np.linalg.norm(fn[i] - fn[j]) for j in range(len(y))]
        pos = max(d[j] for j in range(len(y)) if j != i and y[j] == y[i])
        neg = min(d[j] for j in range(len(y)) if y[j] != y[i])
        tri.append(max(0.0, pos - neg + 0.3))
    rec = result.history[0]
    assert rec["ce"] == pytest.approx(ce, rel=1e-4)
    assert rec["triplet"] == pytest.approx(np.mean(tri), rel=1e-4, abs=1e-6)
    assert rec["loss"] == pytest.approx(ce + np.mean(tri), rel=1e-4)


def test_cli_finetunes_and_reports_the_evaluation(dataset_root: Path, tmp_path: Path, capsys) -> None:
    from isr_reid.cli import main

    out = tmp_path / "ft"
    rc = main(["finetune", "--model", "isr_resnet18", "--random-init", "--dataset", "folder", "--root", str(dataset_root),
               "--output", str(out), "--max-steps", "2", "--ids-per-batch", "2", "--instances", "2",
               "--input-size", *map(str, SIZE), "--no-progress", "--device", "cpu"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ds = load_dataset("folder", dataset_root)
    model = load_model("isr_resnet18", weights=out, device="cpu")
    q = model.extract([r.path for r in ds.query], progress=False)
    g = model.extract([r.path for r in ds.gallery], progress=False)
    # naive rank-1 and AP (query and gallery cameras differ, so nothing is ignored)
    r1, aps = [], []
    for i, qr in enumerate(ds.query):
        order = np.argsort(-(g @ q[i]), kind="stable")
        hits = np.array([ds.gallery[j].pid == qr.pid for j in order])
        r1.append(float(hits[0]))
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean([(k + 1) / r for k, r in enumerate(ranks)]))
    assert printed["rank1"] == pytest.approx(np.mean(r1))
    assert printed["mAP"] == pytest.approx(np.mean(aps), rel=1e-5)
    assert printed["num_valid"] == 2
