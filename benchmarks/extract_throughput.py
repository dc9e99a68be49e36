"""Throughput and peak memory of ``model.extract`` against a naive per-image loop, on JPEG files on disk.

The naive loop is what a user writes without the library: PIL open, torchvision transforms
(Resize, ToTensor, Normalize), one forward per image, L2 normalisation. Both compute the same
embeddings (checked: minimum cosine printed). Each measurement runs in its own subprocess so that
peak RSS belongs to one method; methods alternate within each repeat and medians are reported.

    python benchmarks/extract_throughput.py --num-images 2000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` synthetic pedestrian JPEGs of varied sizes (written once, reused)."""
    from PIL import Image

    from isr_reid.data.synthetic import make_cameras, make_identities, render_crop

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    ids, cams = make_identities(50, seed=seed), make_cameras(3, seed=seed)
    for i, p in enumerate(paths):
        h = int(rng.integers(96, 320))
        crop = render_crop(ids[i % 50], cams[i % 3], phase=float(rng.uniform(0, 6.3)), position=float(rng.uniform()),
                           rng=rng, size=(h, max(32, h // 2 + int(rng.integers(-10, 10)))))
        Image.fromarray(crop).save(p, quality=90)
    return paths


def run_one(method: str, args: argparse.Namespace) -> dict:
    """Embed every image with one method in this process; returns timing, peak RSS and the embeddings' file."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from torchvision import transforms

    import isr_reid

    torch.manual_seed(0)
    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = isr_reid.load_model(args.model, pretrained=False, device=args.device, **overrides)
    paths = sorted(Path(args.images).glob("*.jpg"))[: args.num_images]
    cfg = model.cfg
    t0 = time.perf_counter()
    if method == "extract":
        emb = model.extract(paths, batch_size=args.batch_size, progress=False)
    else:
        tf = transforms.Compose([
            transforms.Resize(cfg.input_size),
            transforms.ToTensor(),
            transforms.Normalize(cfg.mean, cfg.std),
        ])
        rows = []
        with torch.inference_mode():
            for p in paths:
                x = tf(Image.open(p).convert("RGB"))[None].to(model.device)
                rows.append(F.normalize(model(x), dim=1).cpu())
        emb = torch.cat(rows).numpy()
    seconds = time.perf_counter() - t0
    out = Path(args.work) / f"{method}.npy"
    np.save(out, emb)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.device and args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    return {"method": method, "seconds": seconds, "images_per_s": len(paths) / seconds, "peak_mib": peak_mib,
            "embeddings": str(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="isr_resnet18")
    p.add_argument("--input-size", type=int, nargs=2, default=None)
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", default="/tmp/isr_reid_bench_images", help="folder for the generated JPEGs")
    p.add_argument("--work", default="/tmp/isr_reid_bench_work")
    p.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args._run:
        print(json.dumps(run_one(args._run, args)))
        return

    make_images(Path(args.images), args.num_images)
    results: dict[str, list[dict]] = {"naive": [], "extract": []}
    child = list(sys.argv[1:])
    for r in range(args.repeats):
        for method in ("naive", "extract"):
            out = subprocess.run([sys.executable, __file__, *child, "--_run", method], check=True,
                                 capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[method].append(res)
            print(f"repeat {r + 1}/{args.repeats} {method:8s} {res['images_per_s']:8.1f} img/s  "
                  f"peak {res['peak_mib']:7.0f} MiB", flush=True)

    a, b = np.load(results["naive"][0]["embeddings"]), np.load(results["extract"][0]["embeddings"])
    min_cos = float((a * b).sum(1).min())
    med = {m: statistics.median(r["images_per_s"] for r in rs) for m, rs in results.items()}
    mem = {m: statistics.median(r["peak_mib"] for r in rs) for m, rs in results.items()}
    ratios = [e["images_per_s"] / n["images_per_s"] for n, e in zip(results["naive"], results["extract"])]
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, device {args.device}")
    print(f"model {args.model} input {args.input_size or 'default'}, {args.num_images} JPEGs, batch {args.batch_size}")
    print(f"| method | images/s (median of {args.repeats}) | peak memory (MiB) |")
    print("|---|---|---|")
    for m in ("naive", "extract"):
        print(f"| {m} | {med[m]:.1f} | {mem[m]:.0f} |")
    print(f"speed-up extract/naive: median {statistics.median(ratios):.2f}x (per-repeat {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"same embeddings: min cosine naive vs extract = {min_cos:.6f}")


if __name__ == "__main__":
    main()
