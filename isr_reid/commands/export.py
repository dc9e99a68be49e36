"""isr-reid export: a zoo model -> an ONNX file (or a torch.export program) for deployment."""

from __future__ import annotations

import argparse

HELP = "export a model to ONNX (preprocessing and config inside) or a torch.export program"
DESCRIPTION = """Export a model for runtimes without PyTorch (onnxruntime, TensorRT, OpenVINO).

The ONNX graph takes 'images' (B, 3, H, W), RGB, resized to the model's input size: uint8 0-255
(--input uint8, the default; normalised inside the graph with the model's mean/std) or float
already normalised (--input float). It returns 'embeddings' (B, D), float32, L2-normalised. The
batch axis is dynamic. The model name, input size, mean/std, embedding dim and input kind are
stored in the file's metadata (onnxruntime: session.get_modelmeta().custom_metadata_map).
--format pt2 writes a torch.export program instead (load with torch.export.load).
--init random exports randomly initialised weights (for testing a deployment pipeline)."""
EXAMPLES = """\
  isr-reid export --model isr_swin_base --format onnx -o isr_swin_base.onnx
  isr-reid export --model isr_resnet50 --weights run/ --format onnx --fp16 -o reid_fp16.onnx"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ._common import DeprecatedAlias, add_model_arguments

    add_model_arguments(p, required=False, device=False)
    p.add_argument("model", nargs="?", default=None, metavar="NAME", action=DeprecatedAlias, replacement="--model NAME",
                   help=argparse.SUPPRESS)  # deprecated: the model as a positional argument
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx", help="output format (default onnx)")
    p.add_argument("--output", "-o", required=True, help="file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (18 or newer; default: the exporter's)")
    p.add_argument("--fp16", action="store_true", help="float16 weights and compute (output stays float32)")
    p.add_argument("--input", choices=("uint8", "float"), default="uint8",
                   help="uint8 images normalised in the graph (default), or float images already normalised")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis to 1 instead of dynamic")
    p.add_argument("--verify", action="store_true",
                   help="run the ONNX file in onnxruntime on a random batch and compare it to PyTorch "
                        "(fails above 1e-4 max abs difference, 2e-2 with --fp16)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.set_defaults(device="cpu")


def run(args: argparse.Namespace) -> int:
    from ..export import check_onnx, export_onnx, export_pt2
    from ._common import model_from_args

    if args.format == "pt2" and (args.opset is not None or args.verify):
        raise ValueError("--opset and --verify apply to --format onnx only")
    model = model_from_args(args)  # a missing file's error names --weights and --init random
    dynamic = not args.static_batch
    if args.format == "onnx":
        path = export_onnx(model, args.output, input=args.input, opset=args.opset, fp16=args.fp16,
                           dynamic_batch=dynamic)
    else:
        path = export_pt2(model, args.output, input=args.input, fp16=args.fp16, dynamic_batch=dynamic)
    h, w = model.cfg.input_size
    if args.verify:
        tolerance = 2e-2 if args.fp16 else 1e-4
        diff = check_onnx(model, path)
        if not diff <= tolerance:
            raise RuntimeError(f"{path}: onnxruntime differs from PyTorch by {diff:.3g} (> {tolerance:g})")
        print(f"verified in onnxruntime: max abs difference to PyTorch {diff:.2e}")
    print(f"wrote {path}: {model.cfg.name}, input {args.input} (B,3,{h},{w}), "
          f"{model.cfg.embed_dim}-d embeddings, {'fp16' if args.fp16 else 'fp32'}")
    return 0
