"""The offline demo: synthetic multi-camera pedestrians -> ISR training on unlabeled video -> search -> metrics and a picture.

Runs on a CPU with no network in a few minutes: it draws its own data (see
:mod:`isr_reid.data.synthetic`), uses the small ``isr_resnet18`` model from random init, measures
cross-camera retrieval, trains with ISR on unlabeled synthetic videos (no identity labels), and
measures again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_path

__all__ = ["DEMO_TRAIN_OPTIONS", "DemoResult", "run_demo"]

# Sized for 2 CPU cores. The demo's cameras differ in colour cast and exposure while ISR's pairs
# come from one camera, so each crop gets an independent photometric jitter. From a random init
# the online network changes fast; in a handful of trial runs (lr 1e-3 / 3.5e-4 / 1e-4, margin or
# uniform weights, with or without a momentum encoder) mining with a momentum encoder at lr 1e-4
# was the only setting that raised mAP and mINP without a large rank-1 drop.
DEMO_TRAIN_OPTIONS: dict[str, Any] = {
    "batch_size": 32, "videos_per_batch": 4, "color_jitter": 0.3, "lr": 1e-4, "momentum": 0.99,
}


@dataclass
class DemoResult:
    """Metrics before and after training, and the files written."""

    before: dict[str, float]
    after: dict[str, float] | None
    picture: Path
    metrics_file: Path
    train_history: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(model: Any, data: Any, batch_size: int) -> tuple[dict[str, float], np.ndarray]:
    from .retrieval import evaluate_rank, pairwise_distance

    q = model.extract([p for p, _, _ in data.query], batch_size=batch_size, progress=False)
    g = model.extract([p for p, _, _ in data.gallery], batch_size=batch_size, progress=False)
    dist = np.asarray(pairwise_distance(q, g, metric="cosine"))
    res = evaluate_rank(
        dist,
        np.array([pid for _, pid, _ in data.query]),
        np.array([pid for _, pid, _ in data.gallery]),
        np.array([cam for _, _, cam in data.query]),
        np.array([cam for _, _, cam in data.gallery]),
        max_rank=10,
    )
    metrics = {"rank1": float(res.cmc[0]), "rank5": float(res.cmc[4]), "mAP": float(res.mAP), "mINP": float(res.mINP)}
    return metrics, dist


def run_demo(
    output: str | Path = "demo_output",
    *,
    train_steps: int = 80,
    num_train_ids: int = 40,
    num_test_ids: int = 40,
    num_cameras: int = 3,
    input_size: tuple[int, int] = (128, 64),
    top_k: int = 6,
    shown_queries: int = 8,
    seed: int = 0,
    progress: bool | None = None,
    log: Any = print,
    train_options: dict[str, Any] | None = None,
) -> DemoResult:
    """Generate data into ``output``, evaluate, train with ISR for ``train_steps`` (0: skip), evaluate, draw.

    ``train_options`` go to :func:`isr_reid.train.train_isr` over the demo's defaults
    (:data:`DEMO_TRAIN_OPTIONS`).
    """
    from .data.synthetic import make_cameras, make_identities, write_reid_set, write_videos
    from .retrieval.visualize import draw_ranked_results
    from .zoo import load_model

    output = Path(output)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cameras = make_cameras(num_cameras, seed=seed + 100)
    train_ids = make_identities(num_train_ids, seed=seed + 1, first_pid=1000)
    test_ids = make_identities(num_test_ids, seed=seed + 2, first_pid=1)
    log(f"[1/4] drawing {num_test_ids} test identities x {num_cameras} cameras and "
        f"{num_cameras * 3} unlabeled training videos of {num_train_ids} other identities into {output}/data")
    data = write_reid_set(output / "data" / "reid", test_ids, cameras, seed=seed + 3)
    videos_root = output / "data" / "videos"
    # 4 persons per clip: a training step keeps 4 crops per frame (batch 32 over 4 frame pairs), so
    # every person of one frame is still there in the other and the matching is not forced to err.
    write_videos(videos_root, train_ids, cameras, clips_per_camera=3, persons_per_clip=4, seed=seed + 4)

    model = load_model("isr_resnet18", pretrained=False, device="cpu", input_size=input_size)
    log(f"[2/4] model isr_resnet18 (random init, {input_size[0]}x{input_size[1]}); "
        f"{len(data.query)} queries (camera 0) vs {len(data.gallery)} gallery crops (cameras 1-{num_cameras - 1})")
    before, dist = _evaluate(model, data, batch_size=64)

    after = None
    history: list[dict[str, Any]] = []
    if train_steps > 0:
        from .train import train_isr

        log(f"[3/4] ISR training for {train_steps} steps on the unlabeled videos (no identity labels used)")
        options = {**DEMO_TRAIN_OPTIONS, **(train_options or {})}
        result = train_isr(model, videos_root, max_steps=train_steps, progress=progress, seed=seed, **options)
        history = [dict(h) for h in getattr(result, "history", [])]
        model.eval()
        after, dist = _evaluate(model, data, batch_size=64)
    else:
        log("[3/4] training skipped (--train-steps 0)")

    order = np.argsort(dist, axis=1, kind="stable")[:shown_queries, :top_k]
    q_pids = np.array([pid for _, pid, _ in data.query[:shown_queries]])
    g_pids = np.array([pid for _, pid, _ in data.gallery])
    picture = draw_ranked_results(
        [p for p, _, _ in data.query[:shown_queries]],
        [p for p, _, _ in data.gallery],
        order,
        scores=1.0 - np.take_along_axis(dist[:shown_queries], order, axis=1),
        correct=g_pids[order] == q_pids[:, None],
        out_path=output / "ranked_results.png",
    )
    metrics_file = output / "metrics.json"
    with atomic_path(metrics_file) as tmp:
        tmp.write_text(json.dumps({"before_training": before, "after_training": after, "train_steps": train_steps,
                                   "history": history}, indent=2) + "\n")

    log("[4/4] cross-camera retrieval (Market-1501 protocol)")
    log(f"{'':16}{'rank-1':>8}{'rank-5':>8}{'mAP':>8}{'mINP':>8}")
    for label, m in (("before training", before), ("after training", after)):
        if m is not None:
            log(f"{label:16}{m['rank1']:8.1%}{m['rank5']:8.1%}{m['mAP']:8.1%}{m['mINP']:8.1%}")
    log(f"picture of the top-{top_k} results of {shown_queries} queries: {picture}")
    log(f"metrics: {metrics_file}   ({time.perf_counter() - t0:.0f} s)")
    return DemoResult(before, after, picture, metrics_file, history)
