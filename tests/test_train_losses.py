"""Pair matching against brute force, reliability and losses against hand/loop computations, gradient flow."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from isr_reid.train import (
    batch_hard_triplet_loss,
    match_pairs,
    mine_pairs,
    pair_reliability,
    reliability_contrastive_loss,
)


def _brute_force_best(sim: np.ndarray) -> float:
    n_a, n_b = sim.shape
    if n_a <= n_b:
        return max(sum(sim[i, p[i]] for i in range(n_a)) for p in itertools.permutations(range(n_b), n_a))
    return _brute_force_best(sim.T)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 2), (2, 5), (5, 5), (6, 4)])
def test_matching_is_the_maximum_weight_matching(shape: tuple[int, int], rng: np.random.Generator) -> None:
    for _ in range(5):
        sim = rng.uniform(-1, 1, size=shape)
        rows, cols = match_pairs(sim)
        assert len(rows) == min(shape)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert sim[rows, cols].sum() == pytest.approx(_brute_force_best(sim), abs=1e-12)


def test_matching_beats_greedy_on_a_known_case() -> None:
    # greedy takes (0, 0) = 0.9 and is left with (1, 1) = 0.0; the optimum is 0.8 + 0.8
    sim = np.array([[0.9, 0.8], [0.8, 0.0]])
    rows, cols = match_pairs(sim)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = match_pairs(sim, min_similarity=0.85)
    assert len(rows) == 0


def test_matching_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        match_pairs(np.array([[np.nan]]))


def test_reliability_follows_its_formula(rng: np.random.Generator) -> None:
    sim = rng.uniform(-0.2, 1, size=(4, 5))
    rows, cols = match_pairs(sim)
    r = pair_reliability(sim, rows, cols, margin_scale=0.1)
    for k, (i, j) in enumerate(zip(rows, cols)):
        others = [sim[i, jj] for jj in range(5) if jj != j] + [sim[ii, j] for ii in range(4) if ii != i]
        m = sim[i, j] - max(others)
        expected = max(sim[i, j], 0.0) * math.tanh(max(m, 0.0) / 0.1)
        assert r[k] == pytest.approx(expected, abs=1e-12)
    assert ((r >= 0) & (r <= 1)).all()
    assert (pair_reliability(sim, rows, cols, mode="uniform") == 1).all()


def test_reliability_hand_example() -> None:
    # mutual best with margin 0.5 -> 0.9 * tanh(5); second pair is not its column's best -> 0
    sim = np.array([[0.9, 0.4], [0.2, 0.1]])
    r = pair_reliability(sim, np.array([0, 1]), np.array([0, 1]))
    assert r[0] == pytest.approx(0.9 * math.tanh(5.0))
    assert r[1] == 0.0
    # a 1x1 problem has no alternative: the margin is the similarity itself
    assert pair_reliability(np.array([[0.05]]), np.array([0]), np.array([0]))[0] == pytest.approx(0.05 * math.tanh(0.5))


def test_contrastive_loss_hand_example() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    loss = reliability_contrastive_loss(z, torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]), temperature=1.0)
    # row 0: sims to 1, 2 are 0, -1; row 1: sims to 0, 2 are 0, 0
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_loss_matches_a_float64_loop(rng: np.random.Generator) -> None:
    z = F.normalize(torch.from_numpy(rng.normal(size=(7, 5))), dim=1)
    a, b = np.array([0, 2, 4]), np.array([1, 3, 6])
    w = np.array([0.2, 1.0, 0.0])
    t = 0.1
    loss = reliability_contrastive_loss(z.float(), torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(w).float(), t)
    zz = z.numpy()

    def term(i: int, j: int) -> float:
        denom = sum(math.exp(zz[i] @ zz[k] / t) for k in range(7) if k != i)
        return -math.log(math.exp(zz[i] @ zz[j] / t) / denom)

    expected = sum(wp * (term(i, j) + term(j, i)) / 2 for i, j, wp in zip(a, b, w)) / w.sum()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    zero = reliability_contrastive_loss(z.float(), torch.from_numpy(a), torch.from_numpy(b), torch.zeros(3))
    assert zero.item() == 0.0


def test_triplet_loss_matches_a_naive_loop(rng: np.random.Generator) -> None:
    x = torch.from_numpy(rng.normal(size=(8, 4)))
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])  # label 3 has no positive: left out
    loss = batch_hard_triplet_loss(x.float(), labels, margin=0.3)
    xs, ls = x.numpy(), labels.tolist()
    terms = []
    for i in range(8):
        pos = [np.linalg.norm(xs[i] - xs[j]) for j in range(8) if j != i and ls[j] == ls[i]]
        neg = [np.linalg.norm(xs[i] - xs[j]) for j in range(8) if ls[j] != ls[i]]
        if pos:
            terms.append(max(0.0, max(pos) - min(neg) + 0.3))
    assert loss.item() == pytest.approx(np.mean(terms), rel=1e-5)


def test_gradients_reach_the_backbone() -> None:
    from isr_reid import load_model

    torch.manual_seed(0)
    model = load_model("isr_resnet18", pretrained=False, input_size=(32, 16), device="cpu").train()
    x = torch.randn(6, 3, 32, 16)
    emb = model(x)
    mined = mine_pairs(emb, [([0, 1, 2], [3, 4, 5])], reliability="uniform")
    assert len(mined) == 3
    loss = reliability_contrastive_loss(
        emb, torch.from_numpy(mined.a), torch.from_numpy(mined.b), torch.from_numpy(mined.reliability).float()
    )
    loss.backward()
    stem_grad = model.backbone[0][0].weight.grad
    assert stem_grad is not None and torch.isfinite(stem_grad).all() and stem_grad.abs().sum() > 0
    # the mined indices point at a maximum-weight matching of the detached similarities
    e = emb.detach().double().numpy()
    sim = e[[0, 1, 2]] @ e[[3, 4, 5]].T
    assert mined.similarity.sum() == pytest.approx(_brute_force_best(sim), abs=1e-6)
