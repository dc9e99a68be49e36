"""isr-reid convert: an upstream checkpoint (or any weights load_model accepts) -> a hub-layout folder."""

from __future__ import annotations

import argparse

HELP = "convert an upstream checkpoint into a hub-layout folder (model.safetensors, config.json, README.md)"
DESCRIPTION = """Convert weights into isr_reid's hub layout, ready for 'isr-reid push' or load_model(weights=DIR).

SRC is an upstream checkpoint in a recognised format (the ISR release's swin_base_patch4_window7_224.pth,
TransReID-SSL's vit_*_lup.pth, an SCL resnet50_model_*.pth), a .safetensors file, a hub-layout folder,
or 'hf-hub:owner/repo@rev'. The pickle is read with weights_only=True, converted key by key, and
loaded strictly into --model's architecture, so a file of another architecture is an error.
The folder it writes works as --weights DIR in every command."""
EXAMPLES = """\
  isr-reid convert swin_base_patch4_window7_224.pth --model isr_swin_base -o isr_swin_base_hub/"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="upstream checkpoint, .safetensors, hub-layout folder, or hf-hub:owner/repo@rev")
    from ._common import add_model_option_argument

    p.add_argument("--model", required=True, metavar="NAME", help="zoo model name (see 'isr-reid models')")
    add_model_option_argument(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write (created if missing)")
    p.add_argument("--repo-id", default=None, help="hub repo id to show in the model card's usage example")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._cache import sha256_file
    from ..weights import WEIGHTS_NAME, save_pretrained
    from ..zoo import load_model, read_manifest

    # converts and checks the architecture before any build; the config is fitted to the weights
    # (e.g. a fine-tuned ViT's position grid and input size)
    from ._common import model_options

    options = model_options(args.model_option)
    model = load_model(args.model, weights=args.src, device="cpu", **({"extra": options} if options else {}))
    cfg = model.cfg
    provenance: dict[str, str] = {"source": Path(args.src).name if not args.src.startswith("hf-hub:") else args.src}
    src_path = Path(args.src)
    if src_path.is_file():
        digest = sha256_file(src_path)
        provenance["source sha256"] = digest
        pinned = {s.get("sha256") for s in read_manifest()["models"][args.model].get("sources", [])} - {None}
        if pinned and digest not in pinned:
            print(f"warning: {src_path} has sha256 {digest}, not the one pinned in the manifest ({', '.join(sorted(pinned))})")
    out = save_pretrained(model, args.output, repo_id=args.repo_id, provenance=provenance)
    print(f"wrote {out}/ ({WEIGHTS_NAME}, config.json, README.md) for {args.model} [{cfg.architecture}]")
    if "source sha256" in provenance:
        print(f"source sha256: {provenance['source sha256']}")
    print(f"{WEIGHTS_NAME} sha256: {sha256_file(out / WEIGHTS_NAME)}")
    return 0
