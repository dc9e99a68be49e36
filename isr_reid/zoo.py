"""The top of the package: :func:`load_model`, the one place that joins a config, an architecture and weights.

Below it: :mod:`isr_reid.config` (``ModelConfig``, the manifest, model names, the architecture
registry), :mod:`isr_reid.weights` (finding, converting, checking and reading weights) and
:mod:`isr_reid.models` (the architectures, registered into the config layer's registry). The config
names are re-exported here, where users have imported them from.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import weights as weights_mod
from .config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelConfig,
    architecture_builder,
    architecture_fitter,
    get_config,
    list_models,
    manifest_path,
    read_manifest,
    register_architecture,
    registered_architectures,
)

if TYPE_CHECKING:
    import torch

    from .models.base import ReIDModel

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelConfig",
    "build_model",
    "get_config",
    "list_architectures",
    "list_models",
    "load_model",
    "manifest_path",
    "read_manifest",
    "register_architecture",
]


def _import_model_files() -> None:
    # Importing the models package runs every model file's @register_architecture. Deferred to the
    # first build so that `import isr_reid.zoo` (the CLI, list_models, get_config) does not import torch.
    from . import models  # noqa: F401


def list_architectures() -> list[str]:
    """Every registered architecture name, sorted."""
    _import_model_files()
    return registered_architectures()


def build_model(cfg: ModelConfig) -> ReIDModel:
    """Build the architecture of ``cfg`` with freshly initialised weights."""
    _import_model_files()
    try:
        builder = architecture_builder(cfg.architecture)
    except KeyError as e:
        raise KeyError(f"model {cfg.name!r}: {e.args[0]}") from None
    model = builder(cfg)
    model.cfg = cfg
    return model


def _default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    name: str,
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> ReIDModel:
    """Build a zoo model, load its weights, and return it in eval mode on ``device``.

    ``weights=None`` with ``pretrained=True`` resolves the manifest's sources for ``name``
    (Hugging Face hub, then upstream URL, then a clear error). ``weights`` may also be a local
    ``.safetensors`` file, a directory in hub layout, an upstream checkpoint in a recognised
    format, or ``"hf-hub:owner/repo[@rev]"``; it implies ``pretrained=True``. ``overrides``
    replace config fields (e.g. ``input_size=(128, 64)``); other keys, or ``extra={...}``, are
    architecture options (e.g. ``neck_feat="after"`` for a fine-tuned TransReID checkpoint).

    The config comes from the zoo, replaced by the one saved with the weights (``config.json`` or
    the safetensors metadata), then by ``overrides``, then fitted to the weights (a ViT's
    position-embedding grid). Weights that carry no config and are not an upstream release's are
    refused unless ``input_size`` is given; non-finite weights are refused.
    """
    cfg = get_config(name)
    source = str(weights) if weights is not None else name
    if weights is not None:
        info = weights_mod.inspect_weights(weights)
        if info.config is not None:
            if info.config.architecture != cfg.architecture:
                raise ValueError(
                    f"weights {weights} are for architecture {info.config.architecture!r} (model {info.config.name!r}), "
                    f"but {name!r} is {cfg.architecture!r}"
                )
            cfg = info.config
        elif info.kind == "bare" and "input_size" not in overrides:
            raise ValueError(
                f"{weights} carries no model config (no {weights_mod.CONFIG_NAME} beside it, no 'config' in its "
                "safetensors metadata), so the input size and mean/std it was trained with are unknown, and "
                f"{name!r}'s defaults ({cfg.input_size[0]}x{cfg.input_size[1]}) may be wrong: pass input_size=(H, W) "
                "(and mean/std if not the zoo's), or re-save the model with save_pretrained"
            )
    cfg = cfg.replace(**overrides) if overrides else cfg
    state_dict = None
    if weights is not None or pretrained:
        state_dict = weights_mod.resolve_state_dict(cfg, weights)
        _import_model_files()
        fit = architecture_fitter(cfg.architecture)
        if fit is not None:
            explicit = frozenset(overrides) | frozenset(overrides.get("extra") or {})
            cfg = fit(cfg, state_dict, explicit=explicit, source=source)
    model = build_model(cfg)
    if state_dict is not None:
        weights_mod.load_state_dict_strict(model, state_dict, source=source)
    model.eval()
    return model.to(device if device is not None else _default_device())
