"""Export a zoo model for runtimes without PyTorch: ONNX (with its preprocessing and config inside) and torch.export.

The exported graph takes either uint8 images (B, 3, H, W), RGB, already resized to
``cfg.input_size``, and normalises them inside the graph with ``cfg.mean``/``cfg.std``, or float
images already normalised. It returns L2-normalised float32 embeddings (B, D). Every kernel op
runs through its PyTorch path (:func:`isr_reid.kernels.kernel_backend`), so no custom op (Triton)
reaches the graph: ONNX runtimes cannot run them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._io import atomic_path
from .kernels import kernel_backend, normalize_images

if TYPE_CHECKING:
    from .models.base import ReIDModel

__all__ = [
    "INPUT_KINDS",
    "MIN_OPSET",
    "check_onnx",
    "export_onnx",
    "export_program",
    "export_pt2",
    "read_onnx_metadata",
]

INPUT_KINDS = ("uint8", "float")
# The torch.export-based ONNX exporter (torch >= 2.9's default) has op implementations from
# opset 18 on; below that it silently keeps 18, so a lower request is refused instead.
MIN_OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
_PROTOBUF_LIMIT = 2**31 - 1


class _Exportable(nn.Module):
    """The model with its input contract: uint8 -> normalise -> model, or float -> model; float32 out."""

    def __init__(self, model: ReIDModel, input_kind: str, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.input_kind = input_kind
        self.dtype = dtype
        self.mean = tuple(model.cfg.mean)
        self.std = tuple(model.cfg.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_kind == "uint8":
            x = normalize_images(images, self.mean, self.std, out_dtype=self.dtype)
        else:
            x = images.to(self.dtype)
        return self.model(x).float()


def _check_args(model: Any, input: str) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "cfg"):
        raise TypeError(f"model must be an isr_reid ReIDModel (from load_model), got {type(model).__name__}")
    if input not in INPUT_KINDS:
        raise ValueError(f"input must be one of {', '.join(INPUT_KINDS)}, got {input!r}")


def _prepare(model: ReIDModel, input: str, fp16: bool) -> _Exportable:
    # A CPU copy: the caller's model keeps its device, dtype and train/eval state, and the graph
    # does not depend on where the model happened to live.
    dtype = torch.float16 if fp16 else torch.float32
    clone = copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
    clone.cfg = model.cfg
    return _Exportable(clone, input, dtype).eval()


def _example(model: ReIDModel, input: str, batch: int) -> torch.Tensor:
    h, w = model.cfg.input_size
    gen = torch.Generator().manual_seed(0)
    if input == "uint8":
        return torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=gen)
    return torch.randn(batch, 3, h, w, generator=gen)


def _dynamic_shapes(dynamic_batch: bool) -> dict[str, Any] | None:
    return {INPUT_NAME: {0: torch.export.Dim("batch")}} if dynamic_batch else None


def export_program(
    model: ReIDModel, *, input: str = "uint8", fp16: bool = False, dynamic_batch: bool = True
) -> torch.export.ExportedProgram:
    """``torch.export`` of the eval model with the same input contract as :func:`export_onnx`.

    ``program.module()(images)`` gives the embeddings; save it with ``torch.export.save``.
    """
    _check_args(model, input)
    wrapped = _prepare(model, input, fp16)
    # Batch 2 in the example: torch.export specialises sizes 0 and 1, which would pin the axis.
    example = _example(model, input, 2 if dynamic_batch else 1)
    with kernel_backend("torch"), torch.no_grad():
        return torch.export.export(wrapped, (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch))


def export_pt2(
    model: ReIDModel, path: str | Path, *, input: str = "uint8", fp16: bool = False, dynamic_batch: bool = True
) -> Path:
    """Write :func:`export_program`'s program to ``path`` (atomically) with ``torch.export.save``; return the path."""
    program = export_program(model, input=input, fp16=fp16, dynamic_batch=dynamic_batch)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # a file object: torch.export.save warns about a file name without the .pt2 suffix
        torch.export.save(program, f)
    return path


def _metadata(model: ReIDModel, input: str, fp16: bool, dynamic_batch: bool) -> dict[str, str]:
    from . import __version__

    cfg = model.cfg
    h, w = cfg.input_size
    return {
        "model_name": cfg.name,
        "architecture": cfg.architecture,
        "input_kind": input,
        "input_layout": "NCHW, RGB" + (", uint8 0-255" if input == "uint8" else ", float, normalised"),
        "input_size": json.dumps([int(h), int(w)]),
        "mean": json.dumps([float(v) for v in cfg.mean]),
        "std": json.dumps([float(v) for v in cfg.std]),
        "embed_dim": str(int(cfg.embed_dim)),
        "output": "L2-normalised float32 embeddings (B, embed_dim)",
        "precision": "fp16" if fp16 else "fp32",
        "dynamic_batch": "true" if dynamic_batch else "false",
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "isr_reid_version": __version__,
    }


def export_onnx(
    model: ReIDModel,
    path: str | Path,
    *,
    input: str = "uint8",
    opset: int | None = None,
    fp16: bool = False,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically) with its config in ``metadata_props``; return the path.

    ``input="uint8"``: the graph takes uint8 (B, 3, H, W) RGB at ``cfg.input_size`` and normalises
    it; ``"float"``: float32 images already normalised. ``fp16`` stores weights and runs the
    network in float16; the input kind and the float32 output stay as they are. ``opset`` defaults
    to the exporter's own (>= 18). ``dynamic_batch=False`` fixes the batch axis at 1.
    """
    import onnx

    _check_args(model, input)
    if opset is not None and int(opset) < MIN_OPSET:
        raise ValueError(
            f"opset {opset} is not supported: torch's ONNX exporter writes opset {MIN_OPSET} or newer"
        )
    path = Path(path)
    wrapped = _prepare(model, input, fp16)
    example = _example(model, input, 2 if dynamic_batch else 1)
    with kernel_backend("torch"), torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            verbose=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=_dynamic_shapes(dynamic_batch),
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program; torch >= 2.5 with onnxscript is required")
    proto = program.model_proto
    for key, value in _metadata(model, input, fp16, dynamic_batch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "isr_reid"
    proto.doc_string = f"isr_reid {model.cfg.name}: {INPUT_NAME} -> {OUTPUT_NAME} (L2-normalised)"
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ValueError(
            f"{model.cfg.name} is too large for a single ONNX file (2 GiB protobuf limit); export with fp16=True"
        )
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata that :func:`export_onnx` wrote, decoded (input_size, mean, std as lists, embed_dim as int)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    proto = onnx.load(str(path), load_external_data=False)
    raw = {p.key: p.value for p in proto.metadata_props}
    if "model_name" not in raw:
        raise ValueError(f"{path} carries no isr_reid metadata (was it written by isr_reid.export.export_onnx?)")
    out: dict[str, Any] = dict(raw)
    for key in ("input_size", "mean", "std", "config"):
        if key in raw:
            out[key] = json.loads(raw[key])
    out["embed_dim"] = int(raw["embed_dim"])
    out["dynamic_batch"] = raw.get("dynamic_batch") == "true"
    return out


def check_onnx(model: ReIDModel, path: str | Path, *, batch_size: int = 3, seed: int = 0) -> float:
    """Run the ONNX file at ``path`` in onnxruntime (CPU) on a random batch; return its max abs difference to ``model``.

    The batch follows the file's input kind (from its metadata); the reference is the eager model in
    float32 with the same preprocessing. Needs the ``onnx`` extra (onnxruntime).
    """
    import numpy as np
    import onnxruntime as ort

    meta = read_onnx_metadata(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    if not meta["dynamic_batch"]:
        batch_size = 1
    reference = _prepare(model, meta["input_kind"], fp16=False)
    gen = torch.Generator().manual_seed(seed)
    h, w = meta["input_size"]
    if meta["input_kind"] == "uint8":
        images = torch.randint(0, 256, (batch_size, 3, h, w), dtype=torch.uint8, generator=gen)
    else:
        images = torch.randn(batch_size, 3, h, w, generator=gen)
    (out,) = session.run(None, {INPUT_NAME: images.numpy()})
    with kernel_backend("torch"), torch.no_grad():
        expected = reference(images).numpy()
    if out.shape != expected.shape:
        raise ValueError(f"{path}: output shape {out.shape} differs from the model's {expected.shape}")
    return float(np.abs(out.astype(np.float64) - expected).max())
