"""The model zoo: model names -> :class:`ModelConfig`, architectures -> builders, and :func:`load_model`.

A model's config (architecture, input size, mean/std, embedding dim) is read from
``weights_manifest.json``, the same file that lists its published weights, so that the
preprocessing always travels with the weights and nothing is written twice. Architectures are
registered in code by the model files (``isr_reid/models/*.py``) with :func:`register_architecture`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .models.base import ReIDModel

__all__ = [
    "ModelConfig",
    "get_config",
    "list_architectures",
    "list_models",
    "load_model",
    "manifest_path",
    "read_manifest",
    "register_architecture",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a model and feed it: the ``pretrained_cfg`` of a zoo name.

    ``input_size`` is (H, W); images are squash-resized to it (no crop), scaled to [0, 1], then
    normalised with ``mean``/``std`` per RGB channel.
    """

    name: str
    architecture: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    embed_dim: int = 512
    interpolation: str = "bilinear"
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with fields replaced; unknown keys go into ``extra`` (architecture options), and an
        ``extra`` mapping is merged into the current one."""
        known = {f.name for f in dataclasses.fields(self)}
        extra = dict(self.extra)
        fields_: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "extra":
                if not isinstance(value, Mapping):
                    raise TypeError(f"extra must be a mapping of architecture options, got {type(value).__name__}")
                extra.update(value)
            elif key in known:
                fields_[key] = value
            else:
                extra[key] = value
        if "input_size" in fields_:
            fields_["input_size"] = tuple(int(v) for v in fields_["input_size"])
        for key in ("mean", "std"):
            if key in fields_:
                fields_[key] = tuple(float(v) for v in fields_[key])
        return dataclasses.replace(self, extra=extra, **fields_)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (used by ``config.json`` and feature files)."""
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """The inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["input_size"] = tuple(int(v) for v in kw["input_size"])
        for key in ("mean", "std"):
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        kw["extra"] = dict(kw.get("extra") or {})
        return cls(**kw)


Builder = Callable[[ModelConfig], "ReIDModel"]
# fit(cfg, state_dict, *, explicit, source) -> cfg: what the weights themselves say about the config
# (e.g. a ViT's position-embedding grid); ``explicit`` names the fields the caller set.
ConfigFitter = Callable[..., ModelConfig]
_ARCHITECTURES: dict[str, Builder] = {}
_FITTERS: dict[str, ConfigFitter] = {}


def register_architecture(name: str, *, fit_to_weights: ConfigFitter | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(cfg) -> ReIDModel`` under an architecture name; ``fit_to_weights``,
    if given, adjusts a config to a state dict before the model is built (see :func:`load_model`)."""

    def wrap(fn: Builder) -> Builder:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not fn:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = fn
        if fit_to_weights is not None:
            _FITTERS[name] = fit_to_weights
        return fn

    return wrap


def _import_model_files() -> None:
    # Importing the package runs every model file's @register_architecture.
    from . import models  # noqa: F401


def list_architectures() -> list[str]:
    """Every registered architecture name, sorted."""
    _import_model_files()
    return sorted(_ARCHITECTURES)


def manifest_path() -> Path:
    """The ``weights_manifest.json`` shipped with the package (inside the wheel, or the checkout's)."""
    return Path(__file__).resolve().parent / "weights_manifest.json"


@functools.lru_cache(maxsize=1)
def read_manifest() -> dict[str, Any]:
    """The parsed weights manifest (cached)."""
    path = manifest_path()
    if not path.is_file():
        raise FileNotFoundError(f"weights manifest not found at {path}: the installation is incomplete")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def list_models() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(read_manifest()["models"])


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a zoo name; an unknown name raises with the known ones listed."""
    models = read_manifest()["models"]
    if name not in models:
        import difflib

        close = difflib.get_close_matches(name, models, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown model {name!r}.{hint} Known models: {', '.join(sorted(models))}")
    entry = models[name]
    return ModelConfig(
        name=name,
        architecture=entry["architecture"],
        input_size=tuple(entry["input_size"]),
        mean=tuple(entry["mean"]),
        std=tuple(entry["std"]),
        embed_dim=int(entry["embed_dim"]),
        interpolation=entry.get("interpolation", "bilinear"),
        description=entry.get("description", ""),
        extra=dict(entry.get("options", {})),
    )


def build_model(cfg: ModelConfig) -> ReIDModel:
    """Build the architecture of ``cfg`` with freshly initialised weights."""
    _import_model_files()
    if cfg.architecture not in _ARCHITECTURES:
        raise KeyError(
            f"model {cfg.name!r} names architecture {cfg.architecture!r}, which is not registered; "
            f"known: {', '.join(sorted(_ARCHITECTURES))}"
        )
    model = _ARCHITECTURES[cfg.architecture](cfg)
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
    from . import weights as weights_mod

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
        fit = _FITTERS.get(cfg.architecture)
        if fit is not None:
            explicit = frozenset(overrides) | frozenset(overrides.get("extra") or {})
            cfg = fit(cfg, state_dict, explicit=explicit, source=source)
    model = build_model(cfg)
    if state_dict is not None:
        weights_mod.load_state_dict_strict(model, state_dict, source=source)
    model.eval()
    return model.to(device if device is not None else _default_device())
