"""isr_reid: person re-identification with self-supervised ReID backbones.

>>> from isr_reid import load_model
>>> model = load_model("isr_swin_base")            # doctest: +SKIP
>>> emb = model.extract("crops/")                  # doctest: +SKIP  (N, 512) float32, unit rows

Names are imported lazily so that ``import isr_reid`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

_LAZY = {
    "ModelConfig": "isr_reid.config",
    "get_config": "isr_reid.config",
    "list_models": "isr_reid.config",
    "load_model": "isr_reid.zoo",
    "ReIDModel": "isr_reid.models.base",
    "fetch_weights": "isr_reid.weights",
}

__all__ = ["ModelConfig", "ReIDModel", "__version__", "fetch_weights", "get_config", "list_models", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'isr_reid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
