"""Shared test fixtures: the real MOT17 data beside the checkout, small deterministic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--data-root",
        default=os.environ.get("ISR_REID_DATA", str(REPO.parent / "shared" / "data")),
        help="the shared data folder (holds mot17-mini/); default $ISR_REID_DATA or ../shared/data",
    )


@pytest.fixture(scope="session")
def data_root(request: pytest.FixtureRequest) -> Path:
    root = Path(request.config.getoption("--data-root"))
    if not (root / "mot17-mini").is_dir():
        pytest.skip(f"shared data not found at {root} (pass --data-root or set ISR_REID_DATA)")
    return root


@pytest.fixture(scope="session")
def mot17_root(data_root: Path) -> Path:
    return data_root / "mot17-mini" / "train"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
