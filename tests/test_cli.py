"""The isr-reid command end to end: models table, extract to .npz/.safetensors, list files, --skip-bad."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import isr_reid
from isr_reid.cli import main
from isr_reid.data.features import load_features


def test_models_lists_every_zoo_name(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert names == isr_reid.list_models()
    for required in ("isr_swin_base", "isr_resnet50", "transreid_ssl_vit_small", "transreid_ssl_vit_small_ics",
                     "transreid_ssl_vit_base_ics", "scl_resnet50"):
        assert required in names
    swin = next(line for line in out.splitlines() if line.startswith("isr_swin_base "))
    assert "512" in swin.split() and "224x224" in swin.split()


def test_console_script_help_runs_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-m", "isr_reid.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("models", "extract", "demo"):
        assert cmd in out.stdout


@pytest.fixture
def crops(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "crops"
    folder.mkdir()
    for i in range(5):
        img = rng.integers(0, 256, (60 + 4 * i, 30, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_extract_writes_a_features_file(crops, tmp_path, suffix):
    out = tmp_path / f"feats{suffix}"
    argv = ["extract", str(crops), "-o", str(out), "--model", "isr_resnet18", "--random-init",
            "--input-size", "64", "32", "--batch-size", "2", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    f = load_features(out)
    assert f.paths == [str(p) for p in sorted(crops.iterdir())]
    assert f.model == "isr_resnet18" and f.config["input_size"] == [64, 32]
    assert f.embeddings.shape == (5, 512) and f.embeddings.dtype == np.float32
    # (equality with the API for the same weights is checked in the next test)
    np.testing.assert_allclose(np.linalg.norm(f.embeddings, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(f.embeddings[0], f.embeddings[1])
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def test_extract_list_file_glob_and_skip_bad(crops, tmp_path):
    (crops / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    listing = tmp_path / "list.txt"
    listing.write_text("# crops\ncrops/00.png\n\ncrops/broken.jpg\n" + str(crops / "01.png") + "\n")
    weights = tmp_path / "w"
    model = isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32))
    model.save_pretrained(weights)
    out = tmp_path / "f.npz"
    base = ["-o", str(out), "--model", "isr_resnet18", "--weights", str(weights), "--no-progress", "--device", "cpu"]

    assert main(["extract", str(listing), *base]) == 1  # the broken file fails the run by default
    assert not out.exists()

    assert main(["extract", str(listing), str(crops / "0[23].png"), *base, "--skip-bad"]) == 0
    f = load_features(out)
    names = [p.rsplit("/", 1)[-1] for p in f.paths]
    assert names == ["00.png", "01.png", "02.png", "03.png"]
    assert len(f.skipped) == 1 and f.skipped[0]["path"].endswith("broken.jpg") and f.skipped[0]["index"] == 1
    # Saved weights reload to the same embeddings as the API gives.
    api = model.extract([crops / n for n in names], progress=False)
    np.testing.assert_allclose(f.embeddings, api, atol=1e-5)


def test_unknown_model_is_a_clear_error(capsys, tmp_path):
    assert main(["extract", str(tmp_path), "-o", str(tmp_path / "x.npz"), "--model", "isr_swin_bas",
                 "--random-init"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'isr_swin_bas'" in err and "isr_swin_base" in err


def test_extract_under_torchrun_equals_single_process(crops, tmp_path):
    (crops / "zz_broken.png").write_text("not an image")
    weights = tmp_path / "w"
    isr_reid.load_model("isr_resnet18", pretrained=False, device="cpu", input_size=(64, 32)).save_pretrained(weights)
    common = [str(crops), "--model", "isr_resnet18", "--weights", str(weights), "--no-progress", "--device", "cpu",
              "--skip-bad", "--batch-size", "2"]
    single, multi = tmp_path / "single.npz", tmp_path / "multi.npz"
    assert main(["extract", *common, "-o", str(single)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "isr_reid.cli", "extract", *common, "-o", str(multi)],
                   check=True, capture_output=True, env=env, timeout=300)
    a, b = load_features(single), load_features(multi)
    assert b.paths == a.paths and len(a.paths) == 5  # input order kept across the two ranks' shares
    np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-6)
    assert b.skipped == a.skipped and b.skipped[0]["index"] == 5


def test_models_markdown_carries_every_published_number(capsys):
    from isr_reid.zoo import read_manifest

    assert main(["models", "--markdown"]) == 0
    rows = {line.split("|")[1].strip(" `"): line for line in capsys.readouterr().out.splitlines()[2:]}
    assert sorted(rows) == isr_reid.list_models()
    for name, entry in read_manifest()["models"].items():
        for r in entry.get("published_results", []):
            assert f"{r['dataset']} {r['metric']} {r['value']}" in rows[name]


def test_atomic_writes_get_umask_permissions(tmp_path):
    import os
    import stat

    from isr_reid._io import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "f.bin") as tmp:
            tmp.write_bytes(b"x")
        assert stat.S_IMODE((tmp_path / "f.bin").stat().st_mode) == 0o644
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "g.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
        assert not (tmp_path / "g.bin").exists() and not list(tmp_path.glob(".*.tmp"))
    finally:
        os.umask(old)
