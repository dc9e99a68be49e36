"""Embed every image in a folder and save the embeddings with their file paths.

Shows: ``load_model``, streamed extraction (``extract_features``: batches decoded in worker
processes, a progress bar on a terminal), and the features file (``save_features`` /
``load_features``: .npz or .safetensors, written atomically).

    python examples/extract_folder.py crops/ -o features.npz --model isr_swin_base
    python -c "from isr_reid.data.features import load_features; f = load_features('features.npz'); print(f.embeddings.shape)"
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Embed every image in a folder and save the embeddings.")
    p.add_argument("folder", help="a directory of images (searched recursively, sorted by path)")
    p.add_argument("--output", "-o", required=True, help="features file to write (.npz or .safetensors)")
    p.add_argument("--model", default="isr_swin_base", help="zoo name (see 'isr-reid models')")
    p.add_argument("--weights", default=None, help="local weights (.safetensors, saved model dir, upstream .pth)")
    p.add_argument("--random-init", action="store_true", help="random weights (to try the pipeline offline)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--flip", action="store_true", help="average with the mirrored image's embedding")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    from isr_reid import load_model
    from isr_reid.data import extract_features
    from isr_reid.data.features import save_features

    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)
    result = extract_features(model, args.folder, batch_size=args.batch_size, flip=args.flip)
    save_features(args.output, result.embeddings, result.labels, model=model.cfg.name, config=model.cfg.to_dict())
    print(f"embedded {len(result.embeddings)} images ({result.embeddings.shape[1]}-d) -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
