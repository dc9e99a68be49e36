"""extract(): every input kind gives the same row; order, batching, flip, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import isr_reid
from isr_reid.data import ImageInputError, extract_features

SIZE = (64, 32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=SIZE)
    # Non-trivial BN statistics so that the head is not the identity.
    for mod in m.modules():
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (int(rng.integers(40, 120)), int(rng.integers(20, 70)), 3), dtype=np.uint8)
            for _ in range(7)]


def reference_embedding(model, rgb: np.ndarray, flip: bool = False) -> np.ndarray:
    """Independent path: PIL resize, float64 normalisation by hand, then model.forward."""
    h, w = model.cfg.input_size
    resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), dtype=np.float64) / 255.0
    x = (resized - np.array(model.cfg.mean)) / np.array(model.cfg.std)
    x = torch.from_numpy(x.transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        e = model(x)
        if flip:
            e = F.normalize(e + model(x.flip(3)), dim=1)
    return e[0].numpy()


def test_mixed_size_numpy_batch_matches_reference(model, images):
    emb = model.extract(images, batch_size=3, progress=False)
    assert emb.shape == (7, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)
    for i, img in enumerate(images):
        np.testing.assert_allclose(emb[i], reference_embedding(model, img), atol=2e-5)


def test_every_input_kind_gives_the_same_row(model, images, tmp_path):
    img = images[4]
    png = tmp_path / "a.png"
    Image.fromarray(img).save(png)
    ref = model.extract(img, progress=False)[0]
    t = torch.from_numpy(img).permute(2, 0, 1)
    variants = {
        "path str": str(png),
        "Path": png,
        "PIL": Image.fromarray(img),
        "torch uint8 CHW": t,
        "torch float CHW": t.float() / 255.0,
        "torch uint8 BCHW": t[None],
        "numpy NHWC": img[None],
        "numpy BGR": np.ascontiguousarray(img[:, :, ::-1]),
        "grayscale PIL in RGB mode": Image.fromarray(img).convert("RGB"),
    }
    for kind, value in variants.items():
        order = "bgr" if kind == "numpy BGR" else "rgb"
        got = model.extract(value, progress=False, channel_order=order)
        assert got.shape == (1, 512), kind
        np.testing.assert_allclose(got[0], ref, atol=1e-5, err_msg=kind)


def test_alone_equals_in_batch_at_any_position(model, images):
    batch = model.extract(images, batch_size=4, progress=False)
    for i in (0, 3, 4, 6):  # first, last of batch 1, first of batch 2, last overall
        alone = model.extract(images[i], progress=False)[0]
        np.testing.assert_allclose(alone, batch[i], atol=1e-5)


def test_directory_is_sorted_and_order_kept(model, images, tmp_path):
    names = ["b.jpg", "a.png", "sub/c.png"]
    for name, img in zip(names, images):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / name, quality=95)
    res = extract_features(model, tmp_path, batch_size=2, progress=False, num_workers=2)
    assert res.labels == [str(tmp_path / n) for n in sorted(names)]
    for label, row in zip(res.labels, res.embeddings):
        decoded = np.asarray(Image.open(label).convert("RGB"))
        np.testing.assert_allclose(row, reference_embedding(model, decoded), atol=2e-5)


def test_flip_averages_with_mirror(model, images):
    emb = model.extract(images[:2], flip=True, progress=False)
    for i in range(2):
        np.testing.assert_allclose(emb[i], reference_embedding(model, images[i], flip=True), atol=2e-5)
    # The embedding of the mirrored image with flip=True is the same (flip is symmetric).
    mirrored = model.extract(np.ascontiguousarray(images[0][:, ::-1]), flip=True, progress=False)
    np.testing.assert_allclose(mirrored[0], emb[0], atol=2e-5)


def test_training_mode_is_restored_and_not_used(model, images):
    model.train()
    try:
        emb = model.extract(images[:3], progress=False)
        assert model.training
    finally:
        model.eval()
    np.testing.assert_allclose(emb, model.extract(images[:3], progress=False), atol=1e-6)


def test_streaming_never_stacks_everything(model, monkeypatch):
    seen = []
    real = isr_reid.data.extract._embed

    def spy(m, batch, flip, device):
        seen.append(batch.shape[0])
        return real(m, batch, flip, device)

    monkeypatch.setattr(isr_reid.data.extract, "_embed", spy)
    imgs = np.zeros((23, 10, 6, 3), dtype=np.uint8)
    out = model.extract(imgs, batch_size=5, progress=False)
    assert out.shape == (23, 512)
    assert seen == [5, 5, 5, 5, 3]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), r"images\[1\].*uint8"),
        (np.zeros((10, 10, 5), dtype=np.uint8), r"images\[1\].*channels"),
        (torch.full((3, 8, 8), 2.0), r"images\[1\].*\[0, 1\]"),
        (torch.zeros((3, 8, 8), dtype=torch.int32), r"images\[1\].*dtype"),
        (np.zeros((0, 10, 3), dtype=np.uint8), r"images\[1\].*empty"),
        (42, r"unsupported input type int"),
    ],
)
def test_bad_in_memory_input_names_its_index(model, bad, match):
    with pytest.raises((ImageInputError, ValueError, TypeError), match=match):
        model.extract([np.zeros((10, 10, 3), dtype=np.uint8), bad], progress=False)


def test_bad_files_are_named_or_skipped(model, images, tmp_path):
    good = tmp_path / "0_good.png"
    Image.fromarray(images[0]).save(good)
    truncated = tmp_path / "1_truncated.jpg"
    Image.fromarray(images[1]).save(truncated, quality=95)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    not_image = tmp_path / "2_text.png"
    not_image.write_text("not an image")
    missing = tmp_path / "3_missing.jpg"
    inputs = [good, truncated, not_image, missing, good]

    with pytest.raises(ImageInputError) as err:
        model.extract(inputs, progress=False)
    assert err.value.index == 1 and "1_truncated.jpg" in str(err.value)

    res = extract_features(model, inputs, progress=False, skip_bad=True)
    assert [s.index for s in res.skipped] == [1, 2, 3]
    assert all(Path(s.label).name in {"1_truncated.jpg", "2_text.png", "3_missing.jpg"} for s in res.skipped)
    assert list(res.indices) == [0, 4] and res.embeddings.shape == (2, 512)
    np.testing.assert_allclose(res.embeddings[0], res.embeddings[1], atol=1e-6)


def test_empty_inputs_are_errors(model, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        model.extract([], progress=False)
    with pytest.raises(FileNotFoundError, match="no image files"):
        model.extract(tmp_path, progress=False)
