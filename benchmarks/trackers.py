"""Tracking with IoU only vs with isr_reid appearance embeddings, on the shared MOT17 frames.

Public detections (``det/det.txt``) go into the trackers frame by frame; their output is scored
against ``gt/gt.txt`` pedestrians (class 1, flag 1) with py-motmetrics: IDF1, MOTA, identity
switches, per sequence and overall. Runs:

- ``botsort_iou``: boxmot BoT-SORT with ``use_embeddings=False`` (motion + IoU association only);
- ``botsort_reid``: the same tracker and settings with ``use_embeddings=True`` and
  :class:`isr_reid.integrations.BoxMOTEncoder` (``--model``);
- ``deepsort_reid``: deep-sort-realtime with :class:`isr_reid.integrations.DeepSortEmbedder`
  (``n_init=1`` and every track matched on the frame is output, tentative ones included: on 4-8
  frames the default of 3 hits would hide every person for the first 2 frames of the clip).

    python benchmarks/trackers.py                                # isr_mobilenetv2 (ImageNet), every sequence
    python benchmarks/trackers.py --model isr_resnet18 --random-init --json out.json
    python benchmarks/trackers.py --frame-step 3                 # every 3rd frame: 10 fps, larger motion

Scoring: a hypothesis box matches a gt box when IoU >= 0.5 (the MOTChallenge threshold), one to
one by the Hungarian algorithm inside py-motmetrics' accumulator. The IoU matrix is computed here
because ``motmetrics.distances.iou_matrix`` (1.4.0) calls ``np.asfarray``, removed in numpy 2.
No MOTChallenge preprocessing: hypotheses on non-pedestrian or ignored gt boxes count as false
positives, the same for every run.

Needs the ``trackers`` extra: ``pip install -e '.[trackers]'`` (boxmot, deep-sort-realtime, motmetrics).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
METRICS = ["idf1", "mota", "num_switches", "num_false_positives", "num_misses", "num_objects",
           "num_unique_objects", "mostly_tracked"]
RUNS = ("botsort_iou", "botsort_reid", "deepsort_reid")

Boxes = Mapping[int, Sequence[tuple[object, Sequence[float]]]]  # frame -> [(id, [left, top, w, h]), ...]


def iou_distance(gt: np.ndarray, hyp: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU between ltwh boxes (rows: gt, columns: hypotheses); NaN (no match) where IoU < ``min_iou``."""
    gt, hyp = np.asarray(gt, np.float64).reshape(-1, 4), np.asarray(hyp, np.float64).reshape(-1, 4)
    lo = np.maximum(gt[:, None, :2], hyp[None, :, :2])
    hi = np.minimum(gt[:, None, :2] + gt[:, None, 2:], hyp[None, :, :2] + hyp[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    union = np.prod(gt[:, 2:], 1)[:, None] + np.prod(hyp[:, 2:], 1)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


def accumulate(gt: Boxes, hyp: Boxes):
    """A py-motmetrics accumulator over the frames of ``gt`` (frames absent from ``hyp`` have no hypotheses)."""
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    number: dict[object, int] = {}  # motmetrics wants numeric ids; deep-sort-realtime's are strings
    for frame in sorted(gt):
        g, h = list(gt[frame]), list(hyp.get(frame, []))
        dist = iou_distance([b for _, b in g], [b for _, b in h])
        acc.update([i for i, _ in g], [number.setdefault(i, len(number)) for i, _ in h], dist, frameid=frame)
    return acc


def score_sequence(gt: Boxes, hyp: Boxes) -> dict[str, float]:
    """IDF1, MOTA and counts of one sequence (see :data:`METRICS`)."""
    import motmetrics as mm

    summary = mm.metrics.create().compute(accumulate(gt, hyp), metrics=METRICS, name="seq")
    return {k: float(summary[k].iloc[0]) for k in METRICS}


def _read(seq_dir: Path, step: int = 1):
    """Detections, gt boxes {frame: [(id, ltwh)]} and the frames used: every ``step``-th frame with an image."""
    from isr_reid.data.video import read_mot_sequence

    det = read_mot_sequence(seq_dir, "det")
    gt = read_mot_sequence(seq_dir, "gt")
    frames = det.image_frames[::step]
    gt_boxes = {f: [(int(gt.track_ids[r]), gt.boxes[r].tolist()) for r in gt.indices(f)] for f in frames}
    return det, gt_boxes, frames


def _frames(det, frames):
    """(frame number, RGB uint8 array, detection ltwh (N, 4), scores (N,)) for each of ``frames``."""
    from PIL import Image

    for f in frames:
        rows = det.indices(f)
        rgb = np.array(Image.open(det.image_path(f)).convert("RGB"))
        yield f, rgb, det.boxes[rows], np.clip(det.scores[rows], 0.0, 1.0)


def run_botsort(det, model, use_embeddings: bool, frames: Sequence[int]) -> tuple[dict, int]:
    """BoT-SORT through boxmot's TrackingPipeline; returns {frame: [(track id, ltwh)]} and crops embedded."""
    import torch
    from boxmot import create_tracker
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.structures import Boxes as BoxmotBoxes
    from boxmot.structures import Detections, Frame
    from boxmot.trackers.specs import TrackerSpec

    from isr_reid.integrations import BoxMOTEncoder

    tracker = create_tracker(TrackerSpec("botsort", options=(("use_embeddings", use_embeddings),)))
    pipeline = TrackingPipeline(detector=None, tracker=tracker,
                                reid=BoxMOTEncoder(model) if use_embeddings else None)
    out, crops = {}, 0
    for f, rgb, ltwh, scores in _frames(det, frames):
        sid = f"{det.name}/{f}"
        frame = Frame(image=torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), sample_id=sid,
                      sequence_id=det.name, frame_index=int(f))
        xyxy = np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], 1)
        dets = Detections(geometry=BoxmotBoxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)),
                          scores=torch.tensor(scores, dtype=torch.float32),
                          class_ids=torch.zeros(len(scores), dtype=torch.int64), sample_id=sid)
        tracks = pipeline.step_detections(frame, dets).tracks
        crops += len(scores) if use_embeddings else 0
        boxes = tracks.geometry.values.numpy().astype(np.float64)
        out[f] = [(int(t), [b[0], b[1], b[2] - b[0], b[3] - b[1]])
                  for t, b in zip(tracks.track_ids.tolist(), boxes)]
    return out, crops


def run_deepsort(det, model, frames: Sequence[int]) -> tuple[dict, int]:
    """deep-sort-realtime with our embeds (BGR frames, as OpenCV gives); tracks matched on each frame are output."""
    from deep_sort_realtime.deepsort_tracker import DeepSort

    from isr_reid.integrations import DeepSortEmbedder

    tracker = DeepSort(n_init=1, embedder=None)
    embedder = DeepSortEmbedder(model, channel_order="bgr")
    out, crops = {}, 0
    for f, rgb, ltwh, scores in _frames(det, frames):
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        raw = [(b.tolist(), float(s), "person") for b, s in zip(ltwh, scores)]
        tracks = tracker.update_tracks(raw, embeds=embedder(bgr, raw))
        crops += len(raw)
        # matched on this frame; n_init=1 means shown from the first hit (deep-sort confirms at the 2nd at the earliest)
        out[f] = [(t.track_id, list(t.to_ltwh())) for t in tracks if t.time_since_update == 0]
    return out, crops


def _load_model(args):
    from isr_reid import load_model

    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    if args.random_init:
        import torch

        torch.manual_seed(0)
    return load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                      **overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_root = Path(os.environ.get("ISR_REID_DATA", REPO.parent / "shared" / "data")) / "mot17-mini" / "train"
    p.add_argument("--root", default=str(default_root), help="folder of MOT17 sequences (default: %(default)s)")
    p.add_argument("--sequences", nargs="*", default=None, help="sequence names (default: every one under --root)")
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    p.add_argument("--model", default="isr_mobilenetv2", help="zoo name for the embeddings (default %(default)s)")
    p.add_argument("--weights", default=None)
    p.add_argument("--random-init", action="store_true", help="random weights (a control: embeddings that know nothing)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--frame-step", type=int, default=1,
                   help="use every N-th frame (a lower frame rate: larger motion between frames, less overlap)")
    p.add_argument("--json", default=None, help="write every figure to this file")
    args = p.parse_args(argv)
    if args.frame_step < 1:
        p.error(f"--frame-step: expected a positive integer, got {args.frame_step}")

    import motmetrics as mm
    import torch

    from isr_reid.data.video import find_mot_sequences

    root = Path(args.root)
    seqs = find_mot_sequences(root)
    if args.sequences:
        seqs = [s for s in seqs if s.name in set(args.sequences)]
    if not seqs:
        raise SystemExit(f"--root {root}: no MOT sequence found")
    model = _load_model(args)
    header = {"model": args.model, "random_init": args.random_init, "input_size": list(model.cfg.input_size),
              "frame_step": args.frame_step,
              "device": args.device, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps(header))
    results: dict = {"setup": header, "runs": {}}
    for run in args.runs:
        accs, names, per_seq, seconds, crops = [], [], {}, 0.0, 0
        for seq_dir in seqs:
            det, gt, frames = _read(seq_dir, args.frame_step)
            t = time.perf_counter()
            if run == "deepsort_reid":
                hyp, n = run_deepsort(det, model, frames)
            else:
                hyp, n = run_botsort(det, model, run == "botsort_reid", frames)
            seconds += time.perf_counter() - t
            crops += n
            accs.append(accumulate(gt, hyp))
            names.append(det.name)
            per_seq[det.name] = score_sequence(gt, hyp)
            per_seq[det.name]["frames"] = len(frames)
        summary = mm.metrics.create().compute_many(accs, metrics=METRICS, names=names, generate_overall=True)
        overall = {k: float(summary.loc["OVERALL", k]) for k in METRICS}
        results["runs"][run] = {"overall": overall, "sequences": per_seq, "seconds": seconds, "crops_embedded": crops}
        print(json.dumps({"run": run, "seconds": round(seconds, 2), "crops_embedded": crops,
                          **{k: round(v, 4) for k, v in overall.items()}}), flush=True)
        for name, m in per_seq.items():
            print(f"  {name}: IDF1 {m['idf1']:.4f}  MOTA {m['mota']:.4f}  IDSW {m['num_switches']:.0f}  "
                  f"FP {m['num_false_positives']:.0f}  FN {m['num_misses']:.0f}  ({m['frames']} frames)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
