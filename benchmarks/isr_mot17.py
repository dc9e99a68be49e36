"""ISR on real video (MOT17 frames) from a pretrained start: ISR vs the start, the uniform-reliability
ablation, and plain instance contrast; pair mining, reliability and cross-frame retrieval.

    python benchmarks/isr_mot17.py --data ../shared/data/mot17-mini [--steps 30] [--seeds 0 1 2] [--json out.json]

Methods (``--methods``; each trained from the same start, ``--model``, ImageNet ``isr_mobilenetv2``
by default; ``--random-init`` for no weights):

- ``start``: the start itself, no training;
- ``isr``: ISR, pairs mined across frames, margin reliability (:func:`isr_reid.train.train_isr`);
- ``uniform``: the same with every mined pair weighted 1 (the reliability ablation);
- ``instance``: plain instance contrast, a crop and its augmented copy as the only positive, no
  inter-frame mining (``train_isr(positives="instance")``);
- diagnostics, not run by default: ``start_bnneck_stats`` (the start with its BNNeck's running
  statistics set to those of the training detections, i.e. the standardisation a train-mode BNNeck
  applies, no training) and ``start_adabn`` (the trunk's BatchNorm statistics re-estimated on the
  training detections too, as train-mode BatchNorm drifts towards them).

Training uses the public detections (``det``) of the training sequences only, without labels.
Scoring uses ground truth only to score: detections are matched to gt boxes (IoU >= 0.5, one-to-one).

- mining precision: over all frame pairs (t, t + d), d = 1..7, of the held-out sequences, detections
  with score >= 0.3 and height >= 20 px matched by the model's similarities (maximum-weight bipartite
  matching), the share of matched pairs (both scorable) whose gt track ids agree;
- reliability AUROC: how well the margin reliability tells right from wrong matched pairs;
- retrieval: every gt crop (height >= 40 px) of a held-out sequence is a query; its gallery is the gt
  crops of the same sequence on frames at least ``--min-gap`` (3) frames away, plus every gt crop of
  the other held-out sequences (distractors); rank-1 and mAP with :func:`isr_reid.retrieval.evaluate_rank`;
- the same on the training sequences (``*_in_domain``; their labels are used for scoring only): ISR's
  use case is self-training on the very videos it will be applied to.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from isr_reid import load_model
from isr_reid.data.video import crop_image, read_mot_sequence
from isr_reid.retrieval import evaluate_rank
from isr_reid.train import match_pairs, pair_reliability, train_isr

HELD_OUT = ("MOT17-02-FRCNN", "MOT17-05-FRCNN", "MOT17-11-FRCNN")
METHODS = ("start", "isr", "uniform", "instance")
DIAGNOSTICS = ("start_bnneck_stats", "start_adabn")
METRICS = ("mining_precision", "reliability_auroc", "rank1", "mAP")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def _det_track_ids(det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """The gt track of each detection (one-to-one, IoU >= 0.5), -1 where none."""
    out = np.full(len(det_boxes), -1, dtype=np.int64)
    if len(det_boxes) and len(gt_boxes):
        iou = _iou(det_boxes, gt_boxes)
        rows, cols = match_pairs(iou)
        ok = iou[rows, cols] >= 0.5
        out[rows[ok]] = gt_ids[cols[ok]]
    return out


_CROPS: dict[tuple[Any, ...], tuple[Any, list[Image.Image]]] = {}


def _sequence(data: Path, name: str, source: str, min_score: float | None, min_size: float) -> tuple[Any, list[Image.Image]]:
    """A sequence and its crops (PIL), decoded once per process: every model is scored on the same crops."""
    key = (name, source, min_score, min_size)
    if key not in _CROPS:
        seq = read_mot_sequence(data / "train" / name, source, min_score=min_score, min_size=min_size)
        frames = {int(f): Image.open(seq.image_path(int(f))).convert("RGB") for f in seq.image_frames}
        _CROPS[key] = (seq, [crop_image(frames[int(f)], tuple(b)) for f, b in zip(seq.frames, seq.boxes)])
    return _CROPS[key]


def _auroc(correct: np.ndarray, score: np.ndarray) -> float:
    from scipy.stats import rankdata

    if not (correct.any() and (~correct).any()):
        return float("nan")
    ranks = rankdata(score)  # Mann-Whitney U with mid-ranks for ties
    pos, neg = correct.sum(), (~correct).sum()
    return float((ranks[correct].sum() - pos * (pos + 1) / 2) / (pos * neg))


def evaluate(model: Any, data: Path, sequences: tuple[str, ...] = HELD_OUT, *, max_gap: int = 7, min_gap: int = 3) -> dict[str, float]:
    """Mining precision, reliability AUROC and retrieval (frames >= ``min_gap`` apart) on ``sequences``."""
    correct, reliab = [], []
    unscorable = 0
    feats, pids, seq_ids, frames_of = [], [], [], []
    for k, name in enumerate(sequences):
        det, det_crops = _sequence(data, name, "det", 0.3, 20)
        gt, gt_crops = _sequence(data, name, "gt", None, 40)
        emb = model.extract(det_crops, batch_size=64, progress=False)
        frames = list(det.image_frames)
        tracks = np.full(len(det), -1)
        for f in frames:
            di, gi = det.indices(f), gt.indices(f)
            tracks[di] = _det_track_ids(det.boxes[di], gt.boxes[gi], gt.track_ids[gi])
        for a in range(len(frames)):
            for b in range(a + 1, min(a + max_gap, len(frames) - 1) + 1):
                ia, ib = det.indices(frames[a]), det.indices(frames[b])
                if not len(ia) or not len(ib):
                    continue
                sim = emb[ia] @ emb[ib].T
                rows, cols = match_pairs(sim)
                rel = pair_reliability(sim, rows, cols)
                ta, tb = tracks[ia[rows]], tracks[ib[cols]]
                ok = (ta >= 0) & (tb >= 0)
                unscorable += int((~ok).sum())
                correct += (ta[ok] == tb[ok]).tolist()
                reliab += rel[ok].tolist()
        feats.append(model.extract(gt_crops, batch_size=64, progress=False))
        pids.append(gt.track_ids + 100000 * k)
        seq_ids.append(np.full(len(gt), k))
        frames_of.append(gt.frames)
    c = np.asarray(correct, dtype=bool)
    r = np.asarray(reliab)
    # retrieval: queries grouped by (sequence, frame); each group's gallery excludes its sequence's near frames
    x, pid, sq, fr = (np.concatenate(v) for v in (feats, pids, seq_ids, frames_of))
    dist = 1.0 - x @ x.T
    hits = ap_sum = 0.0
    n_valid = 0
    for k in np.unique(sq):
        for f in np.unique(fr[sq == k]):
            q = np.flatnonzero((sq == k) & (fr == f))
            g = np.flatnonzero((sq != k) | (np.abs(fr - f) >= min_gap))
            if not len(g) or not np.isin(pid[q], pid[g]).any():
                continue
            res = evaluate_rank(dist[np.ix_(q, g)], pid[q], pid[g], np.zeros(len(q), np.int64), np.ones(len(g), np.int64), max_rank=1)
            hits += float(res.cmc[0]) * res.num_valid
            ap_sum += float(res.mAP) * res.num_valid
            n_valid += int(res.num_valid)
    return {
        "mining_precision": float(c.mean()),
        "scored_pairs": len(c),
        "wrong_pairs": int((~c).sum()),
        "unscorable_pairs": unscorable,
        "reliability_auroc": _auroc(c, r),
        "rank1": hits / max(n_valid, 1),
        "mAP": ap_sum / max(n_valid, 1),
        "queries": n_valid,
    }


@torch.no_grad()
def recalibrate_bn(model: Any, crops: list[Image.Image], *, trunk: bool, batch_size: int = 32) -> Any:
    """Re-estimate BatchNorm statistics on ``crops`` without training: the BNNeck's running mean/var set
    to the pooled features' mean/var, and with ``trunk`` the trunk's BatchNorms (cumulative average over
    shuffled batches of ``batch_size``, as train mode would see them) re-estimated first."""
    from isr_reid.data.images import resize_image
    from isr_reid.kernels import normalize_images

    size = tuple(model.cfg.input_size)

    def batch(cs: list[Image.Image]) -> torch.Tensor:
        x = torch.from_numpy(np.stack([resize_image(np.asarray(c), size) for c in cs])).permute(0, 3, 1, 2)
        return normalize_images(x.contiguous().to(model.device), model.cfg.mean, model.cfg.std)

    if trunk:
        bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        order = np.random.default_rng(0).permutation(len(crops))
        model.train()
        for i in range(0, len(crops), batch_size):
            model.forward_features(batch([crops[j] for j in order[i : i + batch_size]]))
        model.eval()
        for m in bns:
            m.momentum = 0.1
    pooled = torch.cat([model.head.pool_features(model.forward_features(batch(crops[i : i + 64])))
                        for i in range(0, len(crops), 64)])
    model.head.bn.running_mean.copy_(pooled.mean(0))
    model.head.bn.running_var.copy_(pooled.var(0))
    return model


def _machine() -> str:
    try:
        load = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        load = "uptime unavailable"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {load}")


def _fresh_model(args: argparse.Namespace) -> Any:
    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    return load_model(args.model, pretrained=not args.random_init, device=args.device, **overrides)


def _summary(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    v = np.array([r[key] for r in runs], dtype=float)
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def markdown(report: dict[str, Any]) -> str:
    """The results as a Markdown table: median over seeds (min-max where several)."""

    def cell(s: dict[str, float]) -> str:
        if s["min"] == s["max"]:
            return f"{s['median']:.3f}"
        return f"{s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"

    names = {"mining_precision": "mining precision", "reliability_auroc": "reliability AUROC", "rank1": "rank-1", "mAP": "mAP"}
    head = ["method", *(f"held-out {names[m]}" for m in METRICS), "in-domain mining precision", "in-domain rank-1", "in-domain mAP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, res in report["results"].items():
        row = [method, *(cell(res["held_out"][m]) for m in METRICS)]
        row += [cell(res["in_domain"][m]) for m in ("mining_precision", "rank1", "mAP")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the mot17-mini folder (holds train/MOT17-*)")
    p.add_argument("--model", default="isr_mobilenetv2")
    p.add_argument("--random-init", action="store_true", help="start from random weights instead of the model's pretrained ones")
    p.add_argument("--input-size", type=int, nargs=2, default=None, help="H W (default: the model's)")
    p.add_argument("--methods", nargs="+", choices=METHODS + DIAGNOSTICS, default=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--videos-per-batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--margin-scale", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=None, help="mine with a momentum encoder")
    p.add_argument("--color-jitter", type=float, default=0.0)
    p.add_argument("--freeze-bn", action="store_true", help="keep every BatchNorm in eval mode while training")
    p.add_argument("--delta", type=int, nargs=2, default=(1, 3))
    p.add_argument("--min-gap", type=int, default=3, help="retrieval: query and gallery frames at least this far apart")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "train").is_dir():
        p.error(f"--data: {data}/train not found")
    train_seqs = tuple(sorted(s.name for s in (data / "train").iterdir() if s.is_dir() and s.name not in HELD_OUT))
    machine_before = _machine()
    t_all = time.perf_counter()

    def score(model: Any) -> tuple[dict[str, float], dict[str, float]]:
        return (evaluate(model, data, HELD_OUT, min_gap=args.min_gap),
                evaluate(model, data, train_seqs, min_gap=args.min_gap))

    runs: dict[str, list[dict[str, Any]]] = {}
    t0 = time.perf_counter()
    start_scores = score(_fresh_model(args))
    eval_s = time.perf_counter() - t0
    if "start" in args.methods:
        runs["start"] = [{"held_out": start_scores[0], "in_domain": start_scores[1]}]
        print(f"start: {start_scores[0]}", file=sys.stderr)
    for method in (m for m in args.methods if m in DIAGNOSTICS):
        crops = [c for name in train_seqs for c in _sequence(data, name, "det", 0.5, 40)[1]]  # what training sees
        model = recalibrate_bn(_fresh_model(args), crops, trunk=method == "start_adabn")
        held, dom = score(model)
        runs[method] = [{"held_out": held, "in_domain": dom}]
        print(f"{method}: {held}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        vids = Path(tmp) / "videos"  # training videos: links to the other sequences (det only, no labels used)
        vids.mkdir()
        for name in train_seqs:
            (vids / name).symlink_to((data / "train" / name).resolve())
        for method in (m for m in args.methods if m in METHODS and m != "start"):
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = _fresh_model(args)
                t0 = time.perf_counter()
                result = train_isr(
                    model, vids, max_steps=args.steps, batch_size=args.batch_size,
                    videos_per_batch=args.videos_per_batch, lr=args.lr, warmup_steps=args.warmup_steps,
                    reliability="uniform" if method == "uniform" else "margin", margin_scale=args.margin_scale,
                    momentum=args.momentum, color_jitter=args.color_jitter, freeze_bn=args.freeze_bn,
                    positives="instance" if method == "instance" else "mined",
                    min_score=0.5, min_size=40, delta=tuple(args.delta), seed=seed,
                    output_dir=Path(tmp) / f"{method}-{seed}", checkpoint_every=args.steps, device=args.device,
                    progress=False,
                )
                train_s = time.perf_counter() - t0
                held, dom = score(model)
                hist = result.history
                runs.setdefault(method, []).append({
                    "seed": seed, "held_out": held, "in_domain": dom, "train_seconds": round(train_s, 1),
                    "images_per_s": float(np.median([h["images_per_s"] for h in hist])),
                    "loss_first5": float(np.mean([h["loss"] for h in hist[:5]])),
                    "loss_last5": float(np.mean([h["loss"] for h in hist[-5:]])),
                    "pairs_per_step": float(np.mean([h["pairs"] for h in hist])),
                    "mean_reliability": float(np.mean([h["reliability"] for h in hist])),
                })
                print(f"{method} seed {seed}: {train_s:.0f} s; held-out {held}", file=sys.stderr)
    results = {
        m: {
            part: {k: _summary([r[part] for r in rs], k) for k in (*METRICS, "wrong_pairs")}
            for part in ("held_out", "in_domain")
        }
        for m, rs in runs.items()
    }
    report = {
        "command": " ".join(["python benchmarks/isr_mot17.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine_at_start": machine_before, "machine_at_end": _machine(),
        "total_seconds": round(time.perf_counter() - t_all, 1), "eval_seconds_per_model": round(eval_s, 1),
        "model": args.model, "pretrained": not args.random_init,
        "input_size": list(args.input_size) if args.input_size else None,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "json", "methods")},
        "held_out": HELD_OUT, "training_sequences": train_seqs,
        "start_counts": {"held_out_scored_pairs": start_scores[0]["scored_pairs"],
                         "held_out_wrong_pairs": start_scores[0]["wrong_pairs"],
                         "held_out_queries": start_scores[0]["queries"],
                         "in_domain_wrong_pairs": start_scores[1]["wrong_pairs"],
                         "in_domain_queries": start_scores[1]["queries"]},
        "results": results, "runs": runs,
    }
    print(json.dumps(report, indent=2))
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
