"""The config layer: :class:`ModelConfig`, the weights manifest, model names, and the architecture registry.

The bottom of the package: it imports nothing of isr_reid, and everything that builds or loads a
model reads its config from here. A model's config (architecture, input size, mean/std, embedding
dim) is read from ``weights_manifest.json``, the same file that lists its published weights, so
the preprocessing travels with the weights. Architectures are registered into the registry here by
the model files (``isr_reid/models/*.py``, :func:`register_architecture`); :func:`isr_reid.zoo.load_model`
is the one place that joins a config, an architecture and weights.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConfigFitter",
    "ModelConfig",
    "architecture_builder",
    "architecture_fitter",
    "get_config",
    "list_models",
    "manifest_path",
    "read_manifest",
    "register_architecture",
    "registered_architectures",
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


Builder = Callable[[ModelConfig], Any]  # cfg -> an isr_reid.models.ReIDModel
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


def registered_architectures() -> list[str]:
    """The architecture names registered so far, sorted (:func:`isr_reid.zoo.list_architectures`
    imports the model files first, so that it lists them all)."""
    return sorted(_ARCHITECTURES)


def architecture_builder(name: str) -> Builder:
    """The builder registered under architecture ``name``; an unknown name raises with the known ones."""
    if name not in _ARCHITECTURES:
        raise KeyError(f"architecture {name!r} is not registered; known: {', '.join(sorted(_ARCHITECTURES))}")
    return _ARCHITECTURES[name]


def architecture_fitter(name: str) -> ConfigFitter | None:
    """The ``fit_to_weights`` hook registered with architecture ``name``, or None."""
    return _FITTERS.get(name)


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
