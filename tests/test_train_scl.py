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
