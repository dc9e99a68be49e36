"""Fused kernels vs the eager code they replace (and ``torch.compile`` of it), against the bandwidth floor.

Cases, at the shapes of real use: the GeM + BN + L2 head on ResNet-50 maps (2048x16x8, NCHW and
channels_last), the mean + BN + L2 head on Swin-B maps (1024x7x7) and ViT-S tokens (129x384), ISR's
Swin head before its Linear (LayerNorm + mean over 49x1024 tokens), and uint8 NHWC 256x128 images ->
normalised NCHW floats; B = 64 and 256; float32, float16, bfloat16.

On CUDA: medians of ``triton.testing.do_bench`` (L2 flushed between runs) for the Triton op, eager
PyTorch and ``torch.compile`` of the eager code; bytes moved (each input read once, each output
written once), achieved GB/s, and the floor = bytes / device-to-device copy bandwidth measured in
the same run. On CPU (no Triton): the library's PyTorch path vs the eager code, the median and the
minimum of ``--repeats`` alternating timed runs, both checked to agree first.

    python benchmarks/kernels.py                    # CUDA if present, else CPU
    python benchmarks/kernels.py --device cpu --batch 64 --dtypes float32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isr_reid._io import atomic_path
from isr_reid.kernels import kernel_backend, ln_mean_tokens, normalize_images, pool_bn_l2

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# --- the eager code each op replaces (what the heads and extract() did before the fused ops) --------------


def eager_gem_bn_l2(x, p, scale, shift, eps=1e-6):
    # p is a tensor, as GeM's learnable parameter is in the models
    flat = x.flatten(2).float()
    y = flat.clamp(min=eps).pow(p).mean(2).pow(1.0 / p)
    return F.normalize(y * scale + shift, dim=1)


def eager_mean_bn_l2(x, scale, shift):
    flat = x.flatten(2).float() if x.dim() == 4 else x.float().transpose(1, 2)
    return F.normalize(flat.mean(2) * scale + shift, dim=1)


def eager_ln_mean(x, w, b, eps=1e-5):
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps).mean(1)


def eager_normalize(img_nhwc, out_dtype, mean, std):
    m = torch.tensor(mean, device=img_nhwc.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=img_nhwc.device).view(1, 3, 1, 1)
    out = (img_nhwc.permute(0, 3, 1, 2).float() / 255.0 - m) / s
    return out.to(dtype=out_dtype, memory_format=torch.contiguous_format)


# --- cases ----------------------------------------------------------------------------------------------


def make_cases(batch: int, dtype: torch.dtype, device: str) -> list[dict]:
    """Each case: name, inputs, the fused op, the eager code, bytes moved."""
    g = torch.Generator(device="cpu").manual_seed(0)
    es = torch.tensor([], dtype=dtype).element_size()
    cases = []

    def affine(c):
        return (torch.rand(c, generator=g) + 0.5).to(device), torch.randn(c, generator=g).to(device)

    for label, (c, h, w), layouts, mode in [
        ("ResNet-50 GeM", (2048, 16, 8), ("nchw", "channels_last"), "gem"),
        ("Swin-B mean", (1024, 7, 7), ("nchw",), "mean"),
    ]:
        for layout in layouts:
            x = torch.randn(batch, c, h, w, generator=g).abs_().to(device=device, dtype=dtype)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            scale, shift = affine(c)
            p = torch.tensor(3.0, device=device)
            if mode == "gem":
                fused = lambda x=x, p=p, s=scale, t=shift: pool_bn_l2(x, mode="gem", p=p, scale=s, shift=t)  # noqa: E731
                eager = lambda x=x, p=p, s=scale, t=shift: eager_gem_bn_l2(x, p, s, t)  # noqa: E731
            else:
                fused = lambda x=x, s=scale, t=shift: pool_bn_l2(x, mode="mean", scale=s, shift=t)  # noqa: E731
                eager = lambda x=x, s=scale, t=shift: eager_mean_bn_l2(x, s, t)  # noqa: E731
            cases.append(dict(name=f"head {label} {c}x{h}x{w} {layout}", fused=fused, eager=eager,
                              bytes=x.numel() * es + batch * c * 4 + 2 * c * 4))  # fmt: skip
    x = torch.randn(batch, 129, 384, generator=g).to(device=device, dtype=dtype)
    scale, shift = affine(384)
    cases.append(dict(name="head ViT-S mean 129x384 tokens",
                      fused=lambda x=x, s=scale, t=shift: pool_bn_l2(x, mode="mean", scale=s, shift=t),
                      eager=lambda x=x, s=scale, t=shift: eager_mean_bn_l2(x, s, t),
                      bytes=x.numel() * es + batch * 384 * 4 + 2 * 384 * 4))  # fmt: skip
    x = torch.randn(batch, 49, 1024, generator=g).to(device=device, dtype=dtype)
    w, b = affine(1024)
    cases.append(dict(name="LN+mean Swin-B 49x1024 tokens",
                      fused=lambda x=x, w=w, b=b: ln_mean_tokens(x, w, b),
                      eager=lambda x=x, w=w, b=b: eager_ln_mean(x, w, b),
                      bytes=x.numel() * es + batch * 1024 * 4 + 2 * 1024 * 4))  # fmt: skip
    img = torch.randint(0, 256, (batch, 256, 128, 3), dtype=torch.uint8, generator=g).to(device)
    cases.append(dict(name="normalize uint8 NHWC 256x128 -> NCHW",
                      fused=lambda img=img: normalize_images(img, MEAN, STD, layout="nhwc", out_dtype=dtype),
                      eager=lambda img=img: eager_normalize(img, dtype, MEAN, STD),
                      bytes=img.numel() * (1 + es)))  # fmt: skip
    return cases


def select(cases: list[dict], words: list[str] | None) -> list[dict]:
    """The cases whose name contains any of ``words`` (all when None)."""
    return [c for c in cases if not words or any(w.lower() in c["name"].lower() for w in words)]


# --- timing ---------------------------------------------------------------------------------------------


def cpu_median_ms(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    fn()  # warm-up: allocator, first-call dispatch
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def gpu_median_ms(fn: Callable[[], torch.Tensor]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=25, rep=200, return_mode="median"))  # flushes L2 before each run


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth (bytes read + written per second), measured now."""
    n = 1 << 28  # 256 Mi floats per side: far beyond L2
    src = torch.empty(n, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = gpu_median_ms(lambda: dst.copy_(src))
    return 2 * n * 4 / (ms * 1e-3) / 1e9


def check_close(a: torch.Tensor, b: torch.Tensor, name: str) -> float:
    err = (a.float() - b.float()).abs().max().item()
    tol = 2e-2 if a.dtype in (torch.float16, torch.bfloat16) else 1e-3
    if not err <= tol:
        raise AssertionError(f"{name}: fused and eager disagree by {err:.3g}")
    return err


def run_gpu(args: argparse.Namespace) -> list[dict]:
    bw = copy_bandwidth_gbs()
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth {bw:.0f} GB/s (read + write)")
    print("| case | dtype | B | MB moved | Triton ms | GB/s | floor ms | vs floor | eager ms | speed-up | compile ms | vs compile |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for dtype_name in args.dtypes:
        for batch in args.batch:
            for case in select(make_cases(batch, DTYPES[dtype_name], "cuda"), args.cases):
                with kernel_backend("triton"):
                    out = case["fused"]()
                    t_fused = gpu_median_ms(case["fused"])
                check_close(out, case["eager"](), case["name"])
                t_eager = gpu_median_ms(case["eager"])
                torch.compiler.reset()  # else dynamo's recompile limit silently leaves later cases eager
                compiled = torch.compile(case["eager"])
                compiled()
                t_compile = gpu_median_ms(compiled)
                floor = case["bytes"] / (bw * 1e9) * 1e3
                rows.append(dict(case=case["name"], dtype=dtype_name, batch=batch, bytes=case["bytes"],
                                 triton_ms=t_fused, eager_ms=t_eager, compile_ms=t_compile, floor_ms=floor,
                                 gbs=case["bytes"] / (t_fused * 1e-3) / 1e9))  # fmt: skip
                r = rows[-1]
                print(f"| {r['case']} | {dtype_name} | {batch} | {r['bytes'] / 1e6:.1f} | {t_fused:.3f} | "
                      f"{r['gbs']:.0f} | {floor:.3f} | {t_fused / floor:.2f}x | {t_eager:.3f} | "
                      f"{t_eager / t_fused:.2f}x | {t_compile:.3f} | {t_compile / t_fused:.2f}x |", flush=True)  # fmt: skip
    return rows


def run_cpu(args: argparse.Namespace) -> list[dict]:
    rows = []
    for dtype_name in args.dtypes:
        for batch in args.batch:
            for case in select(make_cases(batch, DTYPES[dtype_name], "cpu"), args.cases):
                with kernel_backend("torch"):
                    check_close(case["fused"](), case["eager"](), case["name"])
                    # alternate the two, first one then the other first, so that load from other
                    # processes and cache state after the previous call hit both alike
                    t_path, t_eager = [], []
                    for i in range(args.repeats):
                        order = [(t_path, case["fused"]), (t_eager, case["eager"])]
                        for times, fn in order if i % 2 == 0 else order[::-1]:
                            times.append(cpu_median_ms(fn, 1))
                r = dict(case=case["name"], dtype=dtype_name, batch=batch, bytes=case["bytes"],
                         torch_path_ms=statistics.median(t_path), eager_ms=statistics.median(t_eager),
                         torch_path_min_ms=min(t_path), eager_min_ms=min(t_eager))  # fmt: skip
                rows.append(r)
                print(f"| {r['case']} | {dtype_name} | {batch} | {r['bytes'] / 1e6:.1f} | {r['torch_path_ms']:.2f} | "
                      f"{r['eager_ms']:.2f} | {r['eager_ms'] / r['torch_path_ms']:.2f}x | {r['torch_path_min_ms']:.2f} | "
                      f"{r['eager_min_ms']:.2f} | {r['eager_min_ms'] / r['torch_path_min_ms']:.2f}x |", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--batch", type=int, nargs="+", default=None, help="default: 64 256 on CUDA, 64 on CPU")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                    help="default: all three on CUDA, float32 bfloat16 on CPU")  # fmt: skip
    ap.add_argument("--cases", nargs="+", default=None, help="only cases whose name contains one of these words")
    ap.add_argument("--repeats", type=int, default=15, help="CPU: timed runs per method (median reported)")
    ap.add_argument("--threads", type=int, default=None, help="CPU: torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() if args.device == "auto" else args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    args.batch = args.batch or ([64, 256] if cuda else [64])
    args.dtypes = args.dtypes or (list(DTYPES) if cuda else ["float32", "bfloat16"])
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}")
    if cuda:
        rows = run_gpu(args)
    else:
        # on a shared machine the minimum is the steadier figure; both are shown
        print("| case | dtype | B | MB moved | PyTorch path ms (median) | eager ms (median) | speed-up | "
              "PyTorch path ms (min) | eager ms (min) | speed-up (min) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        rows = run_cpu(args)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"device": "cuda" if cuda else "cpu", "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
