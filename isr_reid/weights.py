"""Weights: resolve a model's weights (local file, hub layout, hub, upstream URL), load, save.

The weights-issue work (hub download, upstream URLs, cache, digests, model card) extends this
module; the functions below are the contract that :func:`isr_reid.load_model` relies on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ._io import atomic_path
from .zoo import ModelConfig

if TYPE_CHECKING:
    from .models.base import ReIDModel

__all__ = ["config_from_weights", "load_state_dict_strict", "resolve_state_dict", "save_pretrained"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def config_from_weights(weights: str | Path) -> ModelConfig | None:
    """The :class:`ModelConfig` saved beside weights in hub layout (``config.json``), else None."""
    path = Path(weights)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        with open(path / CONFIG_NAME, encoding="utf-8") as f:
            return ModelConfig.from_dict(json.load(f))
    return None


def resolve_state_dict(cfg: ModelConfig, weights: str | Path | None) -> dict[str, torch.Tensor]:
    """The state dict for ``cfg`` from ``weights`` (a ``.safetensors`` file or a hub-layout directory)."""
    from safetensors.torch import load_file

    if weights is None:
        raise FileNotFoundError(f"no published weights are configured for {cfg.name!r}; pass weights=PATH")
    path = Path(weights)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix != ".safetensors":
        raise ValueError(f"unrecognised weights file {path}: expected a .safetensors file")
    return load_file(str(path))


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model``; any missing, unexpected or mis-shaped key is an error listing them."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(state_dict[k].shape)}"
        for k in set(own) & set(state_dict)
        if own[k].shape != state_dict[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{label}: {shown}")
        arch = getattr(getattr(model, "cfg", None), "architecture", type(model).__name__)
        raise ValueError(f"weights from {source} do not fit architecture {arch!r}; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def save_pretrained(model: ReIDModel, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (hub layout), atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "model": model.cfg.name})
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    return directory
