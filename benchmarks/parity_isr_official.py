"""Parity with the official ISR model: timm 0.4.12 Swin-B + Linear + L2 vs ``isr_swin_base``.

Builds the official model exactly as ISR's demo does (``timm.create_model(
'swin_base_patch4_window7_224')``, ``forward_features`` then ``feat = Linear(1024, 512)``), fills it
with random weights (LayerNorm and bias terms too, so that no parameter is trivially 0 or 1), saves
it in the official file layout ``{'state_dict': {'model.*', 'feat.*'}}`` (366 entries, with timm's
``relative_position_index`` and ``attn_mask`` buffers), loads that file with
``isr_reid.load_model("isr_swin_base", weights=PATH)`` (or, with ``--load converter``,
``load_model(pretrained=False)`` + :func:`isr_reid.convert.convert_checkpoint`), and compares the
L2-normalised embeddings of random inputs. Passes when the minimum cosine is >= 0.99999.

timm 0.4.12 is not a dependency: install it in a scratch folder and put it on PYTHONPATH:

    .venv/bin/pip install --no-deps --target /tmp/timm0412 timm==0.4.12
    PYTHONPATH=/tmp/timm0412 .venv/bin/python benchmarks/parity_isr_official.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _official_model() -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old timm calls torch.jit.script, deprecated now
            import timm
    except ImportError:
        sys.exit(
            "timm 0.4.12 is needed: pip install --no-deps --target /tmp/timm0412 timm==0.4.12; PYTHONPATH=/tmp/timm0412"
        )
    if timm.__version__ != "0.4.12":
        sys.exit(f"this check needs timm 0.4.12 (ISR's version), found {timm.__version__}")

    class Official(nn.Module):
        # ISR's demo_A.py model, rebuilt: timm forward_features (final norm + token mean), then feat.
        def __init__(self) -> None:
            super().__init__()
            self.model = timm.create_model("swin_base_patch4_window7_224")
            self.feat = nn.Linear(1024, 512)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.feat(self.model.forward_features(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.meshgrid indexing warning from old timm
        return Official()


def _randomize(model: nn.Module, generator: torch.Generator) -> None:
    # LayerNorm scales away from 1 so that they count; small biases, because a large final-norm or
    # feat bias is shared by every input and would squeeze all embeddings together.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=generator))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=generator))
            elif "relative_position_bias_table" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(2.0 * torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="random 224x224 inputs to compare (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--load",
        choices=("weights", "converter"),
        default="weights",
        help="weights: load_model('isr_swin_base', weights=PATH) (default); converter: "
        "load_model(pretrained=False) + read_upstream_checkpoint + convert_checkpoint + strict load",
    )
    ap.add_argument("--threshold", type=float, default=0.99999)
    args = ap.parse_args()

    import isr_reid
    from isr_reid.convert import convert_checkpoint, detect_format, read_upstream_checkpoint
    from isr_reid.weights import load_state_dict_strict

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    official = _official_model().eval()
    _randomize(official, gen)
    state = official.state_dict()
    print(
        f"official checkpoint: {len(state)} entries, {sum(p.numel() for p in official.parameters()) / 1e6:.1f}M parameters"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "swin_base_patch4_window7_224.pth"
        torch.save({"state_dict": state}, path)
        if args.load == "weights":
            ours = isr_reid.load_model("isr_swin_base", weights=str(path), device="cpu")
        else:
            ckpt = read_upstream_checkpoint(path)
            print(f"detected format: {detect_format(ckpt)}")
            ours = isr_reid.load_model("isr_swin_base", pretrained=False, device="cpu")
            load_state_dict_strict(ours, convert_checkpoint(ckpt, "swin_base_isr"), source=str(path))
    ours.eval()

    x = torch.randn(args.batch, 3, 224, 224, generator=gen)
    with torch.no_grad():
        ref = F.normalize(official(x), dim=1)
        got = ours(x)
    cos = (ref * got).sum(1)
    print(f"inputs: {args.batch} random 3x224x224, seed {args.seed}")
    print(f"min cosine: {cos.min().item():.8f}   max abs diff: {(ref - got).abs().max().item():.3e}")
    # sanity: the random network must not map every input to the same point
    spread = (ref @ ref.t())[~torch.eye(len(ref), dtype=torch.bool)]
    print(f"cosine between different inputs' official embeddings: max {spread.max().item():.4f} (spread check)")
    ok = bool(cos.min().item() >= args.threshold)
    print("PASS" if ok else f"FAIL (threshold {args.threshold})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
