"""Bad inputs on purpose: each gives an error that names the input and the problem, or the result an
independent computation gives (issue 11, "No silent wrong result").

To add a case, append a row to ``EXTRACT_CASES`` (an input given to ``model.extract`` as the second of
two images) or to ``CALL_CASES`` (any call), with the error type and a fragment of the message.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import re
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from isr_reid import load_model
from isr_reid.data.extract import NonFiniteEmbeddingError
from isr_reid.data.images import ImageInputError, to_rgb_uint8
from isr_reid.retrieval import evaluate_rank

SIZE = (32, 16)
GOOD = np.full((24, 12, 3), 128, dtype=np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")


def _pil(arr: np.ndarray, mode: str) -> Image.Image:
    return Image.fromarray(arr, mode) if mode not in ("I", "F") else Image.fromarray(arr).convert(mode)


def _truncated_jpeg(tmp: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp / "truncated.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return p


def _tiff(tmp: Path, img: Image.Image, name: str) -> Path:
    p = tmp / name
    img.save(p)
    return p


# (name, make_input(tmp_path), error type, fragment of the message)
EXTRACT_CASES: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    ("numpy (3, H, 3): HWC or CHW", lambda t: np.zeros((3, 20, 3), np.uint8), ImageInputError,
     "ambiguous image layout: shape (3, 20, 3)"),
    ("numpy (3, H, 4): HWC+alpha or CHW", lambda t: np.zeros((3, 20, 4), np.uint8), ImageInputError,
     "ambiguous image layout: shape (3, 20, 4)"),
    ("numpy (1, H, 3)", lambda t: np.zeros((1, 20, 3), np.uint8), ImageInputError, "ambiguous image layout"),
    ("tensor (3, H, 3): CHW or HWC", lambda t: torch.zeros(3, 20, 3, dtype=torch.uint8), ImageInputError,
     "ambiguous image layout: shape (3, 20, 3)"),
    ("numpy CHW (3, H, W)", lambda t: np.zeros((3, 32, 16), np.uint8), ImageInputError, "looks CHW"),
    ("numpy float64", lambda t: np.zeros((32, 16, 3)), ImageInputError, "must be uint8 HWC, got dtype float64"),
    ("float tensor with NaN", lambda t: torch.full((3, 32, 16), float("nan")), ImageInputError,
     "NaN or inf values"),
    ("float tensor in [0, 255]", lambda t: torch.full((3, 32, 16), 200.0), ImageInputError,
     "must hold values in [0, 1]"),
    ("PIL mode I beyond 16 bits", lambda t: Image.fromarray(np.full((8, 4), 70000, np.int32)), ImageInputError,
     "values in [70000, 70000]; only 16-bit grey"),
    ("PIL mode F in [0, 255]", lambda t: Image.fromarray(np.full((8, 4), 200.0, np.float32)), ImageInputError,
     "mode F) must hold values in [0, 1]"),
    ("PIL mode F with NaN", lambda t: Image.fromarray(np.full((8, 4), np.nan, np.float32)), ImageInputError,
     "32 NaN or inf pixels"),
    ("TIFF file of mode F in [0, 255]", lambda t: _tiff(t, Image.fromarray(np.full((8, 4), 9.0, np.float32)), "f.tif"),
     ImageInputError, "must hold values in [0, 1]"),
    ("truncated JPEG", _truncated_jpeg, ImageInputError, "truncated.jpg"),
    ("unsupported type", lambda t: {"not": "an image"}, ImageInputError, "unsupported input type dict"),
]


@pytest.mark.parametrize("make_input, error, fragment", [c[1:] for c in EXTRACT_CASES],
                         ids=[c[0] for c in EXTRACT_CASES])
def test_extract_refuses_bad_input_and_names_it(model, tmp_path: Path, make_input, error, fragment) -> None:
    with pytest.raises(error) as info:
        model.extract([GOOD, make_input(tmp_path)], progress=False)
    msg = str(info.value)
    assert fragment in msg, msg
    assert msg.startswith("images[1]"), msg  # the index of the bad input


@functools.cache
def _nan_model():
    m = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(float("nan"))
    return m


def _nan_std_model():
    m = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    object.__setattr__(m, "cfg", dataclasses.replace(m.cfg, std=(float("nan"), 1.0, 1.0)))
    return m


def _nan_distmat() -> np.ndarray:
    d = np.random.default_rng(0).random((4, 5))
    d[0, 2] = np.nan
    return d


def _nan_rows_in_two_chunks() -> np.ndarray:
    d = np.random.default_rng(0).random((6, 5))
    d[1, :] = np.nan
    d[4, 0] = np.nan
    return d


_IDS = dict(q_pids=[1, 2, 3, 4], g_pids=[1, 2, 3, 4, 5], q_camids=[0] * 4, g_camids=[1] * 5)
_IDS6 = dict(q_pids=[1, 2, 3, 4, 5, 1], g_pids=[1, 2, 3, 4, 5], q_camids=[0] * 6, g_camids=[1] * 5)

# (name, call(tmp_path), error type, fragment of the message)
CALL_CASES: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    ("extract with all-NaN weights", lambda t: _nan_model().extract([GOOD, GOOD], progress=False),
     NonFiniteEmbeddingError, "for 2 of the 2 inputs of a batch: images[0] (numpy (24, 12, 3) uint8); images[1]"),
    ("the cause: non-finite weights", lambda t: _nan_model().extract(GOOD, progress=False),
     NonFiniteEmbeddingError, "Likely cause: the model's weights are not finite"),
    ("the cause: a NaN std", lambda t: _nan_std_model().extract(GOOD, progress=False),
     NonFiniteEmbeddingError, "(nan, 1.0, 1.0): not finite"),
    ("evaluate_rank, a NaN in row 0 only", lambda t: evaluate_rank(_nan_distmat(), **_IDS),
     ValueError, "NaN distances in query row 0 (1 of 5 columns)"),
    ("evaluate_rank, NaN rows in two chunks", lambda t: evaluate_rank(_nan_rows_in_two_chunks(), **_IDS6, chunk_size=2),
     ValueError, "query rows 1 (5 of 5 columns), 4 (1 of 5 columns)"),
]


@pytest.mark.parametrize("call, error, fragment", [c[1:] for c in CALL_CASES], ids=[c[0] for c in CALL_CASES])
def test_call_refuses_bad_input_and_names_it(tmp_path: Path, call, error, fragment) -> None:
    with pytest.raises(error) as info:
        call(tmp_path)
    assert fragment in str(info.value), str(info.value)


def test_evaluate_rank_nan_message_names_no_other_row() -> None:
    with pytest.raises(ValueError) as info:
        evaluate_rank(_nan_distmat(), **_IDS)
    assert "0..3" not in str(info.value) and "row 0 " in str(info.value) and "1," not in str(info.value)


# --- decoding: every mode against an independent numpy reference, the same through every input kind ---

def _ref_16_to_8(a: np.ndarray) -> np.ndarray:
    return np.round(a.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def test_16bit_png_is_scaled_not_clipped(model, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a16 = rng.integers(0, 65536, size=(40, 20), dtype=np.uint16)
    a16[0, :4] = (0, 128, 32895, 65535)  # the ends, and values either side of a rounding step
    path = tmp_path / "grey16.png"
    Image.fromarray(a16).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"  # the mode of the issue
    ref = _grey3(_ref_16_to_8(a16))
    assert ref.min() == 0 and ref.max() == 255 and len(np.unique(ref)) > 200
    got = to_rgb_uint8(str(path))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(to_rgb_uint8(Image.open(path)), ref)
    # end to end: the file embeds as the float64 reference decode does
    np.testing.assert_allclose(model.extract(path, progress=False), model.extract(ref, progress=False), atol=1e-6)


def test_16bit_pgm_and_tiff_match_the_png(tmp_path: Path) -> None:
    a16 = np.random.default_rng(2).integers(0, 65536, size=(16, 8), dtype=np.uint16)
    ref = _grey3(_ref_16_to_8(a16))
    for name in ("g.pgm", "g.tif"):
        Image.fromarray(a16).save(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.mode in ("I", "I;16")
        np.testing.assert_array_equal(to_rgb_uint8(tmp_path / name), ref, err_msg=name)


def _png16(path: Path, a: np.ndarray, color_type: int) -> None:
    """Write a 16-bit PNG by hand (PIL cannot write 16-bit colour): ``a`` is (H, W, C) uint16."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = a.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in a)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels, color_type", [(3, 2), (4, 6), (2, 4)], ids=["RGB 48-bit", "RGBA 64-bit", "LA 32-bit"])
def test_16bit_colour_png_is_within_one_level_of_the_reference(tmp_path: Path, channels: int, color_type: int) -> None:
    a16 = np.random.default_rng(5).integers(0, 65536, size=(10, 6, channels), dtype=np.uint16)
    _png16(tmp_path / "c16.png", a16, color_type)
    ref = _ref_16_to_8(a16[:, :, :3] if channels >= 3 else np.repeat(a16[:, :, :1], 3, axis=2))
    got = to_rgb_uint8(tmp_path / "c16.png")  # PIL keeps the high byte: truncation, not rounding
    assert int(np.abs(got.astype(int) - ref.astype(int)).max()) <= 1


def _palette_with_transparency() -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, size=(12, 6), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(palette.tobytes())
    img.info["transparency"] = int(idx[0, 0])
    return img, palette[idx]  # the transparent index keeps its palette colour: alpha is dropped


def _modes() -> list[tuple[str, Image.Image, np.ndarray, int]]:
    rng = np.random.default_rng(4)
    g = rng.integers(0, 256, size=(12, 6), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(12, 6), dtype=np.uint8)
    bits = rng.random((12, 6)) > 0.5
    cmyk = rng.integers(0, 256, size=(12, 6, 4), dtype=np.uint8)
    f = rng.random((12, 6)).astype(np.float32)
    i32 = rng.integers(0, 65536, size=(12, 6)).astype(np.int32)
    p_img, p_ref = _palette_with_transparency()
    k = cmyk[:, :, 3:].astype(np.float64)
    cmyk_ref = np.round((255.0 - cmyk[:, :, :3]) * (255.0 - k) / 255.0).astype(np.uint8)
    return [  # (mode, image, reference, tolerance in grey levels)
        ("L", Image.fromarray(g, "L"), _grey3(g), 0),
        ("LA", Image.fromarray(np.dstack([g, alpha]), "LA"), _grey3(g), 0),
        ("RGBA", Image.fromarray(np.dstack([g, g[::-1], g, alpha]), "RGBA"), np.dstack([g, g[::-1], g]), 0),
        ("1", Image.fromarray(bits), _grey3(np.where(bits, 255, 0).astype(np.uint8)), 0),
        ("P+transparency", p_img, p_ref, 0),
        ("CMYK", Image.fromarray(cmyk, "CMYK"), cmyk_ref, 1),  # PIL rounds the two products separately
        ("F in [0, 1]", Image.fromarray(f), _grey3(np.round(f.astype(np.float64) * 255).astype(np.uint8)), 0),
        ("I 16-bit", Image.fromarray(i32), _grey3(_ref_16_to_8(i32)), 0),
    ]


@pytest.mark.parametrize("mode, img, ref, tol", _modes(), ids=[m[0] for m in _modes()])
def test_every_pil_mode_decodes_to_its_reference(tmp_path: Path, mode, img, ref, tol) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning (e.g. palette transparency) either
        got = to_rgb_uint8(img)
    assert got.dtype == np.uint8 and got.shape == ref.shape
    assert int(np.abs(got.astype(int) - ref.astype(int)).max()) <= tol
    # the same picture as a file gives the same pixels (PNG where it holds the mode, else TIFF)
    path = tmp_path / ("x.png" if img.mode in ("L", "LA", "RGBA", "1", "P") else "x.tif")
    img.save(path)
    np.testing.assert_array_equal(to_rgb_uint8(path), got)


# --- EXIF orientation: applied for paths and PIL images, as ImageOps.exif_transpose and viewers do ---

def _exif_reference(raw: np.ndarray, orientation: int) -> np.ndarray:
    """The displayed picture of stored pixels ``raw``, by the EXIF 2.3 definitions (independent of PIL)."""
    t = raw.transpose(1, 0, 2)
    return {
        1: raw, 2: raw[:, ::-1], 3: raw[::-1, ::-1], 4: raw[::-1],
        5: t, 6: t[:, ::-1], 7: t[::-1, ::-1], 8: t[::-1],
    }[orientation]


def _write_oriented_jpeg(path: Path, orientation: int) -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:24]
    pattern = np.dstack([yy * 5, xx * 10, (yy < 10) * 255]).astype(np.uint8)  # no symmetry
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pattern).save(path, quality=95, exif=exif)
    with Image.open(path) as im:  # the stored pixels, orientation ignored
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_for_paths_and_pil_images(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    raw = _write_oriented_jpeg(path, orientation)
    ref = _exif_reference(raw, orientation)
    if orientation in (5, 6, 7, 8):
        assert ref.shape[:2] == (24, 48)  # the person stands up: width and height swap
    np.testing.assert_array_equal(to_rgb_uint8(path), ref)
    np.testing.assert_array_equal(to_rgb_uint8(Image.open(path)), ref)
    # a picture the caller already turned upright is not turned again
    np.testing.assert_array_equal(to_rgb_uint8(ImageOps.exif_transpose(Image.open(path))), ref)


def test_exif_rotated_jpeg_embeds_as_the_upright_array(model, tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    upright = _exif_reference(_write_oriented_jpeg(path, 6), 6)
    emb = model.extract([path, Image.open(path), np.ascontiguousarray(upright)], progress=False)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-6)
    np.testing.assert_allclose(emb[1], emb[2], atol=1e-6)


def test_mot17_frames_carry_no_exif_orientation(mot17_root: Path) -> None:
    # so applying EXIF changes nothing on benchmark-style data (the upstream evaluation read without it)
    for p in sorted(mot17_root.glob("*/img1/*.jpg"))[:8]:
        with Image.open(p) as im:
            assert im.getexif().get(0x0112, 1) == 1, p


# --- resume: one check of the run config against the checkpoint's ---

def _write_videos(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for v in range(2):
        looks = rng.integers(0, 256, size=(3, 4, 2, 3))
        for f in range(3):
            d = root / f"video{v}" / f"{f:04d}"
            d.mkdir(parents=True)
            for p in range(3):
                img = np.kron(looks[p], np.ones((6, 6, 1))) + rng.normal(0, 12, size=(24, 12, 3))
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"p{p}.png")
    return root


ISR_KW = dict(batch_size=12, videos_per_batch=2, delta=(1, 2), progress=False, lr=1e-3)


@pytest.fixture(scope="module")
def isr_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from isr_reid.train import train_isr

    tmp = tmp_path_factory.mktemp("isr_resume")
    videos = _write_videos(tmp / "videos")
    torch.manual_seed(0)
    train_isr(load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu"), videos, max_steps=1,
              output_dir=tmp / "run", **ISR_KW)
    return videos, tmp / "run"


RESUME_CASES = [  # (name, changed train_isr keywords, model input size, fragments of the error)
    ("changed lr", dict(lr=1e-2), SIZE, ["lr: checkpoint 0.001, this run 0.01"]),
    ("changed batch size", dict(batch_size=8), SIZE, ["batch_size: checkpoint 12, this run 8"]),
    ("missing --input-size", {}, None, ["input_size: checkpoint [32, 16], this run [256, 128]"]),
    ("two options", dict(lr=1e-2, temperature=0.1), SIZE,
     ["2 run option(s) differ", "lr: checkpoint 0.001, this run 0.01", "temperature: checkpoint 0.07, this run 0.1"]),
]


@pytest.mark.parametrize("changed, size, fragments", [c[1:] for c in RESUME_CASES], ids=[c[0] for c in RESUME_CASES])
def test_resume_refuses_a_changed_run_config(isr_run, changed, size, fragments) -> None:
    from isr_reid.train import train_isr

    videos, out = isr_run
    model = load_model("isr_resnet18", pretrained=False, device="cpu", **({"input_size": size} if size else {}))
    kw = {**ISR_KW, **changed}
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError) as info:
        train_isr(model, videos, max_steps=2, output_dir=out, resume=True, **kw)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    assert (out / "checkpoint.pt").read_bytes() == before  # nothing trained or written


def _copy_run(isr_run: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    videos, run = isr_run
    return videos, Path(shutil.copytree(run, tmp_path / "run"))


def test_resume_says_where_it_starts(isr_run, tmp_path: Path) -> None:
    from isr_reid.train import train_isr
    from isr_reid.train._common import resume_checkpoint

    videos, out = _copy_run(isr_run, tmp_path)
    logged: list[str] = []
    model = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    # max_steps may change on resume: the run is extended from the checkpoint's step
    r = train_isr(model, videos, max_steps=2, output_dir=out, resume=True, log=logged.append, **ISR_KW)
    assert r.resumed_from == 1 and [h["step"] for h in r.history] == [1, 2]
    assert any(m.startswith("resuming from step 1 of 2") for m in logged), logged
    # a checkpoint beyond max_steps is refused
    with pytest.raises(ValueError, match="at step 2, past max_steps 1"):
        train_isr(model, videos, max_steps=1, output_dir=out, resume=True, **ISR_KW)
    # no checkpoint: it says so (log, or a warning without one) and starts at step 0
    logged.clear()
    r = train_isr(model, videos, max_steps=1, output_dir=tmp_path / "new", resume=True, log=logged.append, **ISR_KW)
    assert r.resumed_from is None and [h["step"] for h in r.history] == [1]
    assert any("no checkpoint at" in m and "starting from step 0" in m for m in logged), logged
    with pytest.warns(UserWarning, match="starting from step 0"):
        assert resume_checkpoint(tmp_path / "new2" / "checkpoint.pt", {}, max_steps=1) is None


def test_cli_resume_names_the_changed_options_and_says_where_it_starts(isr_run, tmp_path: Path, capsys) -> None:
    from isr_reid.cli import main

    videos, out = _copy_run(isr_run, tmp_path)
    common = ["train", "--model", "isr_resnet18", "--videos", str(videos), "--output", str(out), "--batch-size", "12",
              "--videos-per-batch", "2", "--delta", "1", "2", "--device", "cpu", "--no-progress", "--max-steps", "2",
              "--resume"]
    size = ["--input-size", *map(str, SIZE)]
    capsys.readouterr()
    assert main([*common, *size, "--lr", "0.01"]) != 0
    assert "lr: checkpoint 0.001, this run 0.01" in capsys.readouterr().err
    assert main([*common, "--lr", "0.001"]) != 0
    err = capsys.readouterr().err  # the command may name the option by its flag
    assert re.search(r"(input_size|--input-size): checkpoint \[32, 16\], this run \[256, 128\]", err), err
    assert main([*common, *size, "--lr", "0.001"]) == 0
    assert "resuming from step 1 of 2" in capsys.readouterr().err


def test_finetune_resume_refuses_a_changed_lr(tmp_path: Path) -> None:
    from isr_reid.data.datasets import ImageRecord
    from isr_reid.train import finetune

    rng = np.random.default_rng(0)
    train = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 12, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        train.append(ImageRecord(str(tmp_path / f"{i}.png"), pid=i // 2, camid=0))
    kw = dict(ids_per_batch=2, instances=2, progress=False, output_dir=tmp_path / "run")
    model = load_model("isr_resnet18", pretrained=False, input_size=SIZE, device="cpu")
    finetune(model, train, max_steps=1, lr=1e-3, **kw)
    with pytest.raises(ValueError, match=r"lr: checkpoint 0\.001, this run 0\.01"):
        finetune(model, train, max_steps=2, lr=1e-2, resume=True, **kw)
    logged: list[str] = []
    r = finetune(model, train, max_steps=2, lr=1e-3, resume=True, log=logged.append, **kw)
    assert r.resumed_from == 1 and any(m.startswith("resuming from step 1 of 2") for m in logged), logged
