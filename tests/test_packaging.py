"""The built wheel carries the weights manifest, and an installed wheel finds it (not the checkout's)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        check=True, capture_output=True, cwd=out,
    )
    (whl,) = out.glob("isr_reid-*.whl")
    return whl


def test_wheel_contains_manifest_typing_marker_and_entry_point(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("isr_reid/weights_manifest.json"))
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert "isr_reid/py.typed" in names
    assert manifest == json.loads((REPO / "weights_manifest.json").read_text())
    assert "isr-reid = isr_reid.cli:main" in entry_points
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_loads_models_from_its_own_manifest(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import isr_reid, isr_reid.zoo as z;"
        "print(z.manifest_path());"
        "m = isr_reid.load_model('isr_resnet18', pretrained=False, device='cpu', input_size=(32, 16));"
        "print(m.cfg.embed_dim, len(isr_reid.list_models()))"
    )
    # Run from an empty folder so the checkout cannot be imported by accident.
    out = subprocess.run([sys.executable, "-c", code, str(target)], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.split()
    assert Path(out[0]).is_relative_to(target)
    assert out[1:] == ["512", str(len(json.loads((REPO / "weights_manifest.json").read_text())["models"]))]
