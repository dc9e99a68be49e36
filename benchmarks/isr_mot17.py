"""ISR on real video (MOT17 frames): pair mining, cross-frame retrieval and reliability, before and after training.

    python benchmarks/isr_mot17.py --data ../shared/data/mot17-mini [--steps 40] [--json out.json]

Training uses the public detections (``det``) of the training sequences only, without labels.
Scoring uses the held-out sequences: detections are matched to ground-truth boxes (IoU >= 0.5,
one-to-one) for scoring only.

- pair-mining precision: over all frame pairs (t, t + d), d = 1..7, detections with score >= 0.3 and height >= 20 px, the share of matched detection pairs
  (both scorable) whose ground-truth track ids agree;
- AUROC of the reliability for telling right from wrong matched pairs;
- the same figures on the training sequences (``*_in_domain``): ISR's use case is self-training on the
  very videos it will be applied to, so the mining on them matters too (their labels are never used);
- cross-frame retrieval: ground-truth crops of each track in the first frame are queries, crops of the
  last frame the gallery (rank-1, mAP with :func:`isr_reid.retrieval.evaluate_rank`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
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


def _embed(model: Any, seq: Any, idx: np.ndarray) -> np.ndarray:
    images = []
    frames: dict[int, Image.Image] = {}
    for i in idx:
        f = int(seq.frames[i])
        if f not in frames:
            frames[f] = Image.open(seq.image_path(f)).convert("RGB")
        images.append(crop_image(frames[f], tuple(seq.boxes[i])))
    return model.extract(images, batch_size=64, progress=False)


def evaluate(model: Any, data: Path, sequences: tuple[str, ...] = HELD_OUT, *, max_gap: int = 7, min_score: float | None = 0.3, min_size: float = 20) -> dict[str, float]:
    """Mining precision, reliability AUROC and cross-frame retrieval on ``sequences`` (default: the held-out ones)."""
    from scipy.stats import rankdata

    correct, reliab, sims = [], [], []
    unscorable = 0
    q_feats, g_feats, q_pids, g_pids = [], [], [], []
    for k, name in enumerate(sequences):
        root = data / "train" / name
        det = read_mot_sequence(root, "det", min_score=min_score, min_size=min_size)
        gt = read_mot_sequence(root, "gt", min_size=40)
        emb = _embed(model, det, np.arange(len(det)))
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
                sims += sim[rows, cols][ok].tolist()
        # retrieval: first frame -> last frame, ground-truth crops; pids made global per sequence
        first, last = gt.image_frames[0], gt.image_frames[-1]
        qi, gi = gt.indices(first), gt.indices(last)
        ge = _embed(model, gt, np.concatenate([qi, gi]))
        q_feats.append(ge[: len(qi)])
        g_feats.append(ge[len(qi):])
        q_pids.append(gt.track_ids[qi] + 100000 * k)
        g_pids.append(gt.track_ids[gi] + 100000 * k)
    c = np.asarray(correct, dtype=bool)
    r = np.asarray(reliab)
    auroc = float("nan")
    if c.any() and (~c).any():
        ranks = rankdata(r)  # Mann-Whitney U with mid-ranks for ties
        auroc = float((ranks[c].sum() - c.sum() * (c.sum() + 1) / 2) / (c.sum() * (~c).sum()))
    q, g = np.concatenate(q_feats), np.concatenate(g_feats)
    qp, gp = np.concatenate(q_pids), np.concatenate(g_pids)
    dist = 1.0 - q @ g.T
    res = evaluate_rank(dist, qp, gp, np.zeros(len(qp), dtype=np.int64), np.ones(len(gp), dtype=np.int64), max_rank=10)
    return {
        "mining_precision": float(c.mean()),
        "scored_pairs": len(c),
        "wrong_pairs": int((~c).sum()),
        "unscorable_pairs": unscorable,
        "reliability_auroc": auroc,
        "mean_reliability_right": float(r[c].mean()) if c.any() else float("nan"),
        "mean_reliability_wrong": float(r[~c].mean()) if (~c).any() else float("nan"),
        "rank1": float(res.cmc[0]),
        "mAP": float(res.mAP),
        "queries": int(res.num_valid),
        "gallery": len(gp),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the mot17-mini folder (holds train/MOT17-*)")
    p.add_argument("--model", default="isr_resnet18")
    p.add_argument("--input-size", type=int, nargs=2, default=(128, 64))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3.5e-4)
    p.add_argument("--reliability", choices=("margin", "uniform"), default="margin")
    p.add_argument("--margin-scale", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=None, help="mine with a momentum encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", default=None, help="where the trained model goes (default: a temporary folder)")
    p.add_argument("--json", default=None, help="write the figures here")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "train").is_dir():
        p.error(f"--data: {data}/train not found")
    torch.manual_seed(args.seed)
    model = load_model(args.model, pretrained=False, input_size=tuple(args.input_size), device=args.device)
    train_seqs = tuple(sorted(p.name for p in (data / "train").iterdir() if p.is_dir() and p.name not in HELD_OUT))
    t0 = time.perf_counter()
    before = evaluate(model, data)
    eval_s = time.perf_counter() - t0
    before_in_domain = evaluate(model, data, train_seqs)

    # training videos: the other sequences, through a temporary folder of links (det only, no labels)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        vids = Path(tmp) / "videos"
        vids.mkdir()
        for seq in sorted((data / "train").iterdir()):
            if seq.is_dir() and seq.name not in HELD_OUT:
                (vids / seq.name).symlink_to(seq.resolve())
        out = Path(args.output) if args.output else Path(tmp) / "run"
        t0 = time.perf_counter()
        result = train_isr(
            model, vids, max_steps=args.steps, batch_size=args.batch_size, videos_per_batch=4, lr=args.lr,
            reliability=args.reliability, margin_scale=args.margin_scale, momentum=args.momentum,
            min_score=0.5, min_size=40, delta=(1, 3), seed=args.seed,
            output_dir=out, checkpoint_every=max(args.steps, 1), device=args.device, progress=None,
        )
        train_s = time.perf_counter() - t0
    after = evaluate(model, data)
    after_in_domain = evaluate(model, data, train_seqs)
    hist = result.history
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}",
        "model": args.model, "input_size": list(args.input_size), "steps": args.steps, "batch_size": args.batch_size,
        "reliability": args.reliability, "margin_scale": args.margin_scale, "momentum": args.momentum,
        "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "images_per_s": float(np.median([h["images_per_s"] for h in hist])),
        "loss_first5": float(np.mean([h["loss"] for h in hist[:5]])),
        "loss_last5": float(np.mean([h["loss"] for h in hist[-5:]])),
        "pairs_per_batch": float(np.mean([h["pairs"] for h in hist])),
        "held_out": HELD_OUT, "before": before, "after": after,
        "training_sequences": train_seqs, "before_in_domain": before_in_domain, "after_in_domain": after_in_domain,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
