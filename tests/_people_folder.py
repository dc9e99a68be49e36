"""A labeled folder of tiny person images for CLI tests: one colour per person plus noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_people_folder(root: Path, n_ids: int, n_cams: int, per_cam: int, suffix: str = ".png") -> Path:
    """<root>/{query,gallery}/<pid:04d>/c<cam>_<k><suffix>: camera 1's first shot of each person is the query."""
    rng = np.random.default_rng(0)
    for pid in range(1, n_ids + 1):
        base = rng.integers(0, 255, 3)
        for cam in range(1, n_cams + 1):
            for k in range(per_cam):
                split = "query" if (cam == 1 and k == 0) else "gallery"
                img = np.clip(base + rng.normal(0, 40, (32, 16, 3)), 0, 255).astype(np.uint8)
                path = root / split / f"{pid:04d}" / f"c{cam}_{k}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
    return root
