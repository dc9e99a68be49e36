"""The ISR trainer: resume equivalence, NaN handling, the output folder, the CLI (tiny synthetic videos)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isr_reid import load_model
from isr_reid.train import NonFiniteLossError, train_isr

SIZE = (32, 16)


def write_synthetic_videos(root: Path, videos: int = 3, frames: int = 3, persons: int = 3, seed: int = 0) -> Path:
    """<root>/<video>/<frame>/<crop>.png: each person a fixed colour pattern plus per-frame noise."""
    rng = np.random.default_rng(seed)
    for v in range(videos):
        looks = rng.integers(0, 256, size=(persons, 4, 2, 3))
        for f in range(frames):
            d = root / f"video{v}" / f"{f:04d}"
            d.mkdir(parents=True)
            for p in range(persons):
                img = np.kron(looks[p], np.ones((6, 6, 1))) + rng.normal(0, 12, size=(24, 12, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"p{p}.png")
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_videos(tmp_path_factory.mktemp("videos"))


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")


KW = dict(batch_size=12, videos_per_batch=2, delta=(1, 2), progress=False, lr=1e-3)


class _Stop(Exception):
    pass


def test_resume_reaches_the_uninterrupted_weights(videos: Path, tmp_path: Path) -> None:
    full = _model()
    r_full = train_isr(full, videos, max_steps=4, checkpoint_every=2, output_dir=tmp_path / "a", momentum=0.9, **KW)

    def stop_at_2(record: dict) -> None:
        if record["step"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train_isr(_model(), videos, max_steps=4, checkpoint_every=2, output_dir=tmp_path / "b", momentum=0.9,
                  callback=stop_at_2, **KW)
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    r_res = train_isr(resumed, videos, max_steps=4, checkpoint_every=2, output_dir=tmp_path / "b", momentum=0.9,
                      resume=True, **KW)
    assert r_res.resumed_from == 2
    assert [h["loss"] for h in r_res.history] == [h["loss"] for h in r_full.history]
    start = _model().state_dict()
    moved = False
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
        moved |= not torch.equal(value, start[key])
    assert moved  # training changed the weights, so the equality above is not trivial


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(videos: Path, tmp_path: Path) -> None:
    model = _model()
    calls = {"n": 0}

    def poison(_module, _inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] >= 3 else output

    model.backbone.register_forward_hook(poison)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*checkpoint\.pt"):
        train_isr(model, videos, max_steps=5, checkpoint_every=1, output_dir=tmp_path, **KW)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2
    # the failed step applied no update (its forward did move BN running statistics, hence parameters only)
    for key, value in model.named_parameters():
        assert torch.equal(ckpt["model"][key], value.detach()), key
    assert all(torch.isfinite(v.float()).all() for v in ckpt["model"].values())


def test_cli_trains_resumes_and_writes_a_loadable_model(videos: Path, tmp_path: Path, capsys) -> None:
    from isr_reid.cli import main

    out = tmp_path / "run"
    common = ["train", "--model", "isr_resnet18", "--videos", str(videos), "--output", str(out),
              "--batch-size", "12", "--videos-per-batch", "2", "--delta", "1", "2", "--input-size", *map(str, SIZE),
              "--no-progress", "--log-every", "1", "--device", "cpu", "--reliability", "uniform"]
    assert main([*common, "--max-steps", "2"]) == 0
    assert main([*common, "--max-steps", "3", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "step 3/3" in err and "img/s" in err
    history = json.loads((out / "train_history.json").read_text())["history"]
    assert [h["step"] for h in history] == [1, 2, 3]
    for h in history:
        # 2 frame pairs of 3 persons each: the matching gives 3 pairs per frame pair
        assert h["pairs"] == 6 and h["images"] == 12
        assert h["reliability"] == 1.0 and np.isfinite(h["loss"])
    model = load_model("isr_resnet18", weights=out, device="cpu")
    assert model.cfg.input_size == SIZE
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 3
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt["model"][key], value), key


def test_photometric_jitter_matches_float64_formula():
    from isr_reid.train.isr import _photometric_jitter

    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 5, 4), dtype=np.uint8))
    got = _photometric_jitter(images, 0.3, torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)  # the same draws, in the same order
    gain = (1 + 0.3 * (2 * torch.rand(3, 3, 1, 1, generator=g) - 1)).double().numpy()
    gamma = np.exp(0.3 * (2 * torch.rand(3, 1, 1, 1, generator=g) - 1).double().numpy())
    x = np.maximum(images.double().numpy() / 255, 1e-6) ** gamma * gain
    want = np.round(np.clip(x, 0, 1) * 255)
    assert np.abs(got.numpy().astype(np.float64) - want).max() <= 1  # float32 vs float64 rounding
    assert (got != images).float().mean() > 0.5  # it does change the pixels


def test_instance_positives_pair_each_crop_with_its_augmented_copy(videos: Path, monkeypatch) -> None:
    """positives="instance" (the no-mining ablation): rows i and i + n are two views of one crop, weight 1."""
    import isr_reid.train.isr as isr_mod

    calls = []
    real = isr_mod.reliability_contrastive_loss

    def spy(emb, a, b, w, temperature):
        calls.append((emb.shape[0], a.cpu(), b.cpu(), w.cpu()))
        return real(emb, a, b, w, temperature)

    monkeypatch.setattr(isr_mod, "reliability_contrastive_loss", spy)
    result = train_isr(_model(), videos, max_steps=2, positives="instance", color_jitter=0.2, **KW)
    assert len(calls) == 2 and result.history[-1]["pairs"] > 0
    for n, a, b, w in calls:
        assert n % 2 == 0 and n <= KW["batch_size"]
        assert torch.equal(a, torch.arange(n // 2)) and torch.equal(b, a + n // 2) and bool((w == 1).all())
    with pytest.raises(ValueError, match="positives"):
        train_isr(_model(), videos, max_steps=1, positives="frames", **KW)


def test_random_resized_crop_keeps_shape_and_range():
    from isr_reid.train.isr import _random_resized_crop

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 32, 16), dtype=torch.uint8, generator=g)
    out = _random_resized_crop(images, 0.64, g)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert not torch.equal(out, images)
    flat = torch.full((1, 3, 32, 16), 77, dtype=torch.uint8)
    assert torch.equal(_random_resized_crop(flat, 0.64, g), flat)  # a constant image stays constant


def test_freeze_bn_keeps_the_running_statistics(videos: Path) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    train_isr(model, videos, max_steps=2, freeze_bn=True, **KW)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert not torch.equal(model.head.bn.weight, torch.ones_like(model.head.bn.weight))  # affine still trains
