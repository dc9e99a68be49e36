"""The SCL objective against float64 loops: neighbour selection, loss (warm-up and after), memory update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isr_reid.train.scl import SCLObjective

N, DG, S, DS = 12, 6, 2, 3
CAMS = [0, 1, 2] * 4


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


@pytest.fixture
def setup(rng: np.random.Generator):
    obj = SCLObjective(CAMS, global_dim=DG, num_stripes=S, stripe_dim=DS, num_positives=3, num_negatives=4)
    bank_g, bank_s = _unit(rng.normal(size=(N, DG))), _unit(rng.normal(size=(N, S, DS)))
    obj.initialize(torch.from_numpy(bank_g), torch.from_numpy(bank_s))
    idx = np.array([0, 5, 7])
    g, s = _unit(rng.normal(size=(3, DG))), _unit(rng.normal(size=(3, S, DS)))
    return obj, bank_g, bank_s, idx, g, s


def _ref_neighbours(bank_g, bank_s, idx, g, s):
    out = []
    for b, i in enumerate(idx):
        d = []
        for j in range(N):
            if j == i:
                continue
            sim_l = np.mean([s[b, k] @ bank_s[j, k] for k in range(S)])
            dj = 0.5 * (1 - g[b] @ bank_g[j]) + 0.5 * (1 - sim_l) + 0.05 * (CAMS[j] == CAMS[i])
            d.append((dj, j))
        order = [j for _, j in sorted(d)]
        out.append((order[:3], order[3:7]))
    return out


def test_neighbours_follow_scl_distance(setup) -> None:
    obj, bank_g, bank_s, idx, g, s = setup
    pos, neg = obj.neighbours(torch.from_numpy(g).float(), torch.from_numpy(s).float(), torch.from_numpy(idx))
    for b, (rp, rn) in enumerate(_ref_neighbours(bank_g, bank_s, idx, g, s)):
        assert pos[b].tolist() == rp and neg[b].tolist() == rn


@pytest.mark.parametrize("epoch", [0, 5])
def test_loss_matches_a_float64_loop(setup, epoch: int) -> None:
    obj, bank_g, bank_s, idx, g, s = setup
    loss = obj.loss(torch.from_numpy(g).float(), torch.from_numpy(s).float(), torch.from_numpy(idx), epoch)
    per_branch = {"g": [], "l": []}
    for b, (rp, rn) in enumerate(_ref_neighbours(bank_g, bank_s, idx, g, s)):
        cand = [idx[b], *rp, *rn]
        w = [1.0] + [0.0] * 7 if epoch < 3 else [0.5] + [1.75 * 0.5 / 3] * 3 + [0.0] * 4
        for key, f, bank in (("g", g[b], bank_g), ("l", s[b].ravel() / math.sqrt(S), bank_s.reshape(N, -1) / math.sqrt(S))):
            z = np.array([10 * f @ bank[j] for j in cand])
            logp = z - np.log(np.exp(z).sum())
            per_branch[key].append(-sum(wj * lp for wj, lp in zip(w, logp)))
    expected = 0.7 * np.mean(per_branch["g"]) + 0.3 * np.mean(per_branch["l"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_memory_update_and_gradient(setup) -> None:
    obj, bank_g, bank_s, idx, g, s = setup
    gt = torch.from_numpy(g).float().requires_grad_()
    obj.loss(gt, torch.from_numpy(s).float(), torch.from_numpy(idx), 5).backward()
    assert gt.grad is not None and gt.grad.abs().sum() > 0
    obj.update(torch.from_numpy(g).float(), torch.from_numpy(s).float(), torch.from_numpy(idx))
    np.testing.assert_allclose(obj.global_bank[idx].numpy(), _unit(0.5 * bank_g[idx] + 0.5 * g), atol=1e-6)
    np.testing.assert_allclose(obj.local_bank[idx].numpy(), _unit(0.5 * bank_s[idx] + 0.5 * s), atol=1e-6)
    untouched = [j for j in range(N) if j not in idx]
    np.testing.assert_allclose(obj.global_bank[untouched].numpy(), bank_g[untouched], atol=1e-6)


def test_bad_stripe_shape_is_named() -> None:
    obj = SCLObjective(CAMS, global_dim=DG, num_stripes=S, stripe_dim=DS)
    with pytest.raises(ValueError, match="stripes must be"):
        obj.loss(F.normalize(torch.randn(2, DG), dim=1), torch.randn(2, 3, DS), torch.tensor([0, 1]), 0)


def test_train_scl_initialises_and_updates_the_banks(tmp_path) -> None:
    import copy

    from PIL import Image

    from isr_reid import load_model
    from isr_reid.train.scl import train_scl

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(40, 20, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    cams = [0, 1, 0, 1, 0, 1]
    torch.manual_seed(0)
    model = load_model("scl_resnet50", pretrained=False, input_size=(128, 32), device="cpu")
    start = copy.deepcopy(model)
    # lr 0 and one batch: the weights stay, so the banks can be recomputed from the start model
    res = train_scl(model, paths, cams, epochs=1, batch_size=6, lr=0.0, flip_prob=0.0, progress=False,
                    objective_options={"num_positives": 2, "num_negatives": 2})
    u8 = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 128), Image.BILINEAR)) for p in paths])
    x = (torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255 - torch.tensor(model.cfg.mean).view(1, 3, 1, 1)) / torch.tensor(
        model.cfg.std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        g_eval, s_eval = start.eval().branch_embeddings(start.forward_features(x))
        g_train, s_train = start.train().branch_embeddings(start.forward_features(x))
    s_eval, s_train = torch.stack(s_eval, 1), torch.stack(s_train, 1)
    expected = F.normalize(0.5 * g_eval + 0.5 * g_train, dim=1)
    torch.testing.assert_close(res.objective.global_bank, expected, atol=5e-4, rtol=0)  # batch order moves BN sums by float32 rounding
    torch.testing.assert_close(res.objective.local_bank, F.normalize(0.5 * s_eval + 0.5 * s_train, dim=2), atol=5e-4, rtol=0)  # batch order moves BN sums by float32 rounding
    assert len(res.history) == 1 and np.isfinite(res.history[0]["loss"])
