"""Use the embeddings in a tracker: crop the detections of a video frame and match them to known people.

Shows: reading a MOT-format sequence (``read_mot_sequence``), cropping boxes from a frame
(``crop_image``), embedding the crops in one batch, building one prototype per known identity
(the re-normalised mean of its gallery embeddings), and a one-to-one assignment of detections to
identities by the Hungarian algorithm on cosine similarity (``scipy.optimize.linear_sum_assignment``,
the ``train`` extra), with a similarity floor below which a detection stays unknown. A tracker
runs the same step on every frame, with its active tracks as the gallery.

The gallery is a folder of ``<identity>/<image>.jpg``: the folder name is the identity.

    python examples/tracker_gallery_matching.py MOT17-02-FRCNN --frame 1 --gallery known_people/ --draw frame1.jpg
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Match the detections of a video frame to a gallery of known people.")
    p.add_argument("sequence", help="a MOT sequence folder (seqinfo.ini, img1/, det/det.txt)")
    p.add_argument("--frame", type=int, required=True, help="frame number (MOT numbers frames from 1)")
    p.add_argument("--gallery", required=True, help="folder of <identity>/<image> crops of known people")
    p.add_argument("--min-similarity", type=float, default=0.5,
                   help="cosine similarity below which a detection is left unknown (default 0.5)")
    p.add_argument("--min-score", type=float, default=None, help="drop detections scored below this")
    p.add_argument("--draw", default=None, help="write the frame with labelled boxes here")
    p.add_argument("--json", default=None, help="write the assignments as JSON here")
    p.add_argument("--model", default="isr_swin_base", help="zoo name (see 'isr-reid models')")
    p.add_argument("--weights", default=None, help="local weights (.safetensors, saved model dir, upstream .pth)")
    p.add_argument("--random-init", action="store_true", help="random weights (to try the pipeline offline)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="override the model's input size")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = p.parse_args(argv)

    from pathlib import Path

    import numpy as np
    from PIL import Image, ImageDraw
    from scipy.optimize import linear_sum_assignment

    from isr_reid import load_model
    from isr_reid.data import list_images
    from isr_reid.data.video import crop_image, read_mot_sequence

    seq = read_mot_sequence(args.sequence, "det", min_score=args.min_score)
    rows = seq.indices(args.frame)
    if len(rows) == 0:
        raise SystemExit(f"{args.sequence}: no detection on frame {args.frame}")
    frame = Image.open(seq.image_path(args.frame)).convert("RGB")
    boxes = seq.boxes[rows]
    crops = [crop_image(frame, tuple(b)) for b in boxes]

    overrides = {"input_size": tuple(args.input_size)} if args.input_size else {}
    model = load_model(args.model, pretrained=not args.random_init, weights=args.weights, device=args.device,
                       **overrides)
    det_emb = model.extract(crops, progress=False)

    gallery_root = Path(args.gallery)
    names = sorted(d.name for d in gallery_root.iterdir() if d.is_dir())
    if not names:
        raise SystemExit(f"{gallery_root}: expected one folder per identity, found none")
    protos = np.stack([model.extract(list_images(gallery_root / n), progress=False).mean(0) for n in names])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)

    sim = det_emb @ protos.T  # cosine: both sides have unit rows
    det_idx, id_idx = linear_sum_assignment(-sim)  # maximise total similarity, one identity per detection
    identity: list[str | None] = [None] * len(boxes)
    for d, i in zip(det_idx, id_idx):
        if sim[d, i] >= args.min_similarity:
            identity[d] = names[i]

    out = []
    for k, (box, who) in enumerate(zip(boxes, identity)):
        best = float(sim[k].max())
        out.append({"box": [round(float(v), 2) for v in box], "identity": who,
                    "similarity": round(float(sim[k, names.index(who)]) if who else best, 6)})
        print(f"box {k} {tuple(round(float(v)) for v in box)} -> {who or 'unknown'} ({out[-1]['similarity']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"frame": args.frame, "detections": out}, indent=2) + "\n",
                                   encoding="utf-8")
    if args.draw:
        draw = ImageDraw.Draw(frame)
        for (x, y, w, h), who in zip(boxes, identity):
            colour = (40, 200, 40) if who else (220, 40, 40)
            draw.rectangle([x, y, x + w, y + h], outline=colour, width=2)
            draw.text((x + 2, y + 2), who or "?", fill=colour)
        frame.save(args.draw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
