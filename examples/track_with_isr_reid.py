"""Track people with deep-sort-realtime or boxmot, using an isr_reid model for their appearance.

The lines a tracker user adds (OpenCV frames are BGR, so the channel order is named):

    model = load_model("isr_mobilenetv2")
    embedder = DeepSortEmbedder(model, channel_order="bgr")
    tracks = tracker.update_tracks(detections, embeds=embedder(frame, detections))

or, with boxmot (its ``Frame`` is RGB by contract):

    model = load_model("isr_mobilenetv2")
    pipeline = TrackingPipeline(detector=None, tracker=create_tracker(TrackerSpec("botsort")), reid=BoxMOTEncoder(model))
    result = pipeline.step_detections(frame, detections)

This script runs either tracker over a MOT-format sequence (img1/ frames, det/det.txt boxes) and
prints the tracks of each frame. Needs ``pip install 'isr-reid[trackers]'``.

    python examples/track_with_isr_reid.py MOT17-09-FRCNN --json tracks.json
    python examples/track_with_isr_reid.py MOT17-09-FRCNN --tracker boxmot
"""

from __future__ import annotations

import argparse
import json
import sys


def track_deepsort(seq, model, min_hits: int) -> dict[int, list]:
    """deep-sort-realtime with our embeddings; {frame: [(track id, [left, top, w, h]), ...]}."""
    import cv2
    from deep_sort_realtime.deepsort_tracker import DeepSort

    from isr_reid.integrations import DeepSortEmbedder

    tracker = DeepSort(n_init=min_hits, embedder=None)
    embedder = DeepSortEmbedder(model, channel_order="bgr")  # cv2.imread gives BGR
    out = {}
    for f in seq.image_frames:
        frame = cv2.imread(str(seq.image_path(f)))
        detections = [(box.tolist(), float(score), "person") for box, score in
                      zip(seq.boxes[seq.indices(f)], seq.scores[seq.indices(f)])]
        tracks = tracker.update_tracks(detections, embeds=embedder(frame, detections))
        # tracks matched on this frame and seen min_hits times (deep-sort confirms a track at its 2nd hit at the
        # earliest, so is_confirmed() alone would hide every person on the first frame)
        out[f] = [(str(t.track_id), [round(float(v), 1) for v in t.to_ltwh()]) for t in tracks
                  if t.time_since_update == 0 and t.hits >= min_hits]
    return out


def track_boxmot(seq, model) -> dict[int, list]:
    """boxmot BoT-SORT with our embeddings; {frame: [(track id, [left, top, w, h]), ...]}."""
    import numpy as np
    import torch
    from boxmot import create_tracker
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.structures import Boxes, Detections, Frame
    from boxmot.trackers.specs import TrackerSpec
    from PIL import Image

    from isr_reid.integrations import BoxMOTEncoder

    pipeline = TrackingPipeline(detector=None, tracker=create_tracker(TrackerSpec("botsort")), reid=BoxMOTEncoder(model))
    out = {}
    for f in seq.image_frames:
        rgb = np.array(Image.open(seq.image_path(f)).convert("RGB"))
        rows = seq.indices(f)
        xyxy = np.concatenate([seq.boxes[rows, :2], seq.boxes[rows, :2] + seq.boxes[rows, 2:]], 1)
        frame = Frame(image=torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), sample_id=str(f), frame_index=f)
        detections = Detections(geometry=Boxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4)),
                                scores=torch.tensor(np.clip(seq.scores[rows], 0, 1), dtype=torch.float32),
                                class_ids=torch.zeros(len(rows), dtype=torch.int64), sample_id=str(f))
        tracks = pipeline.step_detections(frame, detections).tracks
        out[f] = [(str(t), [round(float(b[0]), 1), round(float(b[1]), 1), round(float(b[2] - b[0]), 1),
                            round(float(b[3] - b[1]), 1)])
                  for t, b in zip(tracks.track_ids.tolist(), tracks.geometry.values)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Track the detections of a MOT sequence with isr_reid appearance.")
    p.add_argument("sequence", help="a MOT sequence folder (seqinfo.ini, img1/, det/det.txt)")
    p.add_argument("--tracker", choices=["deepsort", "boxmot"], default="deepsort")
    p.add_argument("--min-score", type=float, default=None, help="drop detections scored below this")
    p.add_argument("--min-hits", type=int, default=1, help="deep-sort n_init: detections before a track is shown (default 1)")
    p.add_argument("--json", default=None, help="write {frame: [[track id, [l, t, w, h]], ...]} here")
    p.add_argument("--model", default="isr_mobilenetv2", help="zoo name (see 'isr-reid models')")
    p.add_argument("--weights", default=None, help="local weights (.safetensors, saved model dir, upstream .pth)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    from isr_reid import load_model
    from isr_reid.data.video import read_mot_sequence

    seq = read_mot_sequence(args.sequence, "det", min_score=args.min_score)
    model = load_model(args.model, weights=args.weights, device=args.device)
    out = track_deepsort(seq, model, args.min_hits) if args.tracker == "deepsort" else track_boxmot(seq, model)
    for f, tracks in out.items():
        print(f"frame {f}: " + ", ".join(f"#{t} at {box}" for t, box in tracks))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({str(f): tracks for f, tracks in out.items()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
