"""Retrieval benchmark on synthetic embeddings: evaluate_rank and re-ranking against the reference algorithms.

Each case runs in its own subprocess so that its peak RSS (``ru_maxrss``) is its own:

    python benchmarks/retrieval.py                       # every case at Market-1501 size + small re-ranking
    python benchmarks/retrieval.py --sizes market msmt17  # also MSMT17 size (needs ~10 GB free, minutes)
    python benchmarks/retrieval.py --case evaluate --size market   # one case, prints one JSON line
    python benchmarks/retrieval.py --sizes --dense-sizes small market  # dense rerank vs the reference (~9 GB)

Sizes: market (3,368 queries x 15,913 gallery), msmt17 (11,659 x 82,161), small (1,000 x 4,000, where
the dense reference re-ranking fits). The baselines are written here from the published algorithms:
the per-query ``eval_func`` loop of torchreid / fast-reid (full argsort, then a Python loop per query)
and the dense ``re_ranking`` of Zhong et al. (CVPR 2017).

Re-ranking cases: ``rerank`` is ``rerank_features`` (from the embeddings), ``rerank_dense`` is
``rerank`` on the three float32 Euclidean distance matrices, ``rerank_reference`` the dense reference
on the same matrices. ``peak_rss_gb`` is the subprocess's peak RSS (inputs, Python and torch
included); ``input_rss_gb`` the RSS once the inputs exist, just before the timed call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = {"small": (1000, 4000, 250), "market": (3368, 15913, 750), "msmt17": (11659, 82161, 3060)}
CASES = ("evaluate", "evaluate_reference", "rerank", "rerank_dense", "rerank_reference")


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def synthetic(size: str, dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Unit embeddings around per-identity centres, with ids and cameras, at a benchmark's size."""
    nq, ng, n_ids = SIZES[size]
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim)).astype(np.float32)
    q_pids = rng.integers(1, n_ids, nq)
    g_pids = rng.integers(0, n_ids, ng)  # pid 0: distractors
    n_cams = 6 if size != "msmt17" else 15

    def embed(pids: np.ndarray) -> np.ndarray:
        x = centres[pids] + 3.0 * rng.standard_normal((len(pids), dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return {"qf": embed(q_pids), "gf": embed(g_pids), "q_pids": q_pids, "g_pids": g_pids,
            "q_cams": rng.integers(0, n_cams, nq), "g_cams": rng.integers(0, n_cams, ng)}


def reference_eval(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    """The per-query loop of the reference eval_func (Market-1501 protocol, mINP as in fast-reid)."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for i in range(distmat.shape[0]):
        order = indices[i]
        keep = ~((g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i]))
        raw = matches[i][keep]
        if not raw.any():
            continue
        cum = raw.cumsum()
        last = np.flatnonzero(raw).max()
        all_inp.append(cum[last] / (last + 1.0))
        cmc = np.minimum(cum, 1)
        all_cmc.append(cmc[:max_rank])
        precision = np.asarray([x / (j + 1.0) for j, x in enumerate(cum)]) * raw
        all_ap.append(precision.sum() / raw.sum())
    cmc = np.asarray(all_cmc).astype(np.float32).sum(0) / len(all_ap)
    return cmc, float(np.mean(all_ap)), float(np.mean(all_inp)), len(all_ap)


def reference_rerank(q_g, q_q, g_g, k1=20, k2=6, lam=0.3):
    """Dense k-reciprocal re-ranking as in the authors' code: (Nq+Ng)^2 float32 matrices, per-row loops."""
    nq = q_g.shape[0]
    dist = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    dist = np.power(dist, 2).astype(np.float32)
    dist = np.transpose(dist / np.max(dist, axis=0))
    n = dist.shape[0]
    v = np.zeros_like(dist, dtype=np.float32)
    rank = np.argsort(dist).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    def recip(i, k):
        fwd = rank[i, : k + 1]
        back = rank[fwd, : k + 1]
        return fwd[np.where(back == i)[0]]

    for i in range(n):
        r = recip(i, k1)
        expanded = r
        for c in r:
            rc = recip(c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-dist[i, expanded])
        v[i, expanded] = w / np.sum(w)
    dist = dist[:nq]
    if k2 != 1:
        v = np.stack([np.mean(v[rank[i, :k2], :], axis=0) for i in range(n)])
    inv = [np.where(v[:, i] != 0)[0] for i in range(n)]
    jac = np.zeros_like(dist, dtype=np.float32)
    for i in range(nq):
        tmp = np.zeros((1, n), dtype=np.float32)
        nz = np.where(v[i] != 0)[0]
        for k in nz:
            tmp[0, inv[k]] += np.minimum(v[i, k], v[inv[k], k])
        jac[i] = 1 - tmp / (2.0 - tmp)
    return (jac * (1 - lam) + dist * lam)[:, nq:]


def run_case(case: str, size: str, dim: int, reference_queries: int | None) -> dict:
    """Run one case in this process: seconds and peak RSS of the timed call (inputs included), and its metrics."""
    import torch

    from isr_reid.retrieval import evaluate_rank, pairwise_distance, rerank, rerank_features

    data = synthetic(size, dim)
    out: dict = {"case": case, "size": size, "dim": dim, "threads": torch.get_num_threads(),
                 "num_query": len(data["qf"]), "num_gallery": len(data["gf"])}
    if case in ("evaluate", "evaluate_reference"):
        nq = len(data["qf"]) if case == "evaluate" or not reference_queries else min(reference_queries,
                                                                                     len(data["qf"]))
        t = time.perf_counter()
        dist = pairwise_distance(data["qf"][:nq], data["gf"], "cosine")
        out["distance_s"] = time.perf_counter() - t
        out["input_rss_gb"] = _rss_gb()
        args = (dist, data["q_pids"][:nq], data["g_pids"], data["q_cams"][:nq], data["g_cams"])
        t = time.perf_counter()
        if case == "evaluate":
            r = evaluate_rank(*args)
            cmc, m_ap, m_inp, nv = r.cmc, r.mAP, r.mINP, r.num_valid
        else:
            cmc, m_ap, m_inp, nv = reference_eval(*args)
        out["seconds"] = time.perf_counter() - t
        out["peak_rss_gb"] = _peak_gb()
        out["queries_timed"] = nq
        if nq < len(data["qf"]):
            out["seconds_extrapolated"] = out["seconds"] * len(data["qf"]) / nq
        out.update(R1=float(cmc[0]), mAP=m_ap, mINP=m_inp, num_valid=nv)
    elif case == "rerank":
        out["input_rss_gb"] = _rss_gb()
        t = time.perf_counter()
        final = rerank_features(data["qf"], data["gf"], progress=False)
        out["seconds"] = time.perf_counter() - t
        out["peak_rss_gb"] = _peak_gb()
        r = evaluate_rank(final, data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
        out.update(R1=float(r.cmc[0]), mAP=r.mAP)
        if size == "small":
            # rerank_features equals re-ranking on float64 distances: the reference gets float64 features
            f64 = [x.astype(np.float64) for x in (data["qf"], data["gf"])]
            ref = reference_rerank(*(pairwise_distance(a, b, "euclidean") for a, b in
                                     ((f64[0], f64[1]), (f64[0], f64[0]), (f64[1], f64[1]))))
            out["max_abs_diff_vs_reference"] = float(np.abs(ref - final).max())
            r_ref = evaluate_rank(ref, data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
            out["mAP_diff_vs_reference"] = abs(r_ref.mAP - r.mAP)
    elif case in ("rerank_dense", "rerank_reference"):
        dists = [pairwise_distance(a, b, "euclidean") for a, b in
                 ((data["qf"], data["gf"]), (data["qf"], data["qf"]), (data["gf"], data["gf"]))]
        out["input_rss_gb"] = _rss_gb()
        t = time.perf_counter()
        final = rerank(*dists, progress=False) if case == "rerank_dense" else reference_rerank(*dists)
        out["seconds"] = time.perf_counter() - t
        out["peak_rss_gb"] = _peak_gb()
        r = evaluate_rank(final, data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
        out.update(R1=float(r.cmc[0]), mAP=r.mAP)
        if case == "rerank_dense" and size == "small":
            ref = reference_rerank(*dists)
            out["max_abs_diff_vs_reference"] = float(np.abs(ref - final).max())
            r_ref = evaluate_rank(ref, data["q_pids"], data["g_pids"], data["q_cams"], data["g_cams"])
            out["mAP_diff_vs_reference"] = abs(r_ref.mAP - r.mAP)
    else:
        raise ValueError(f"--case: expected one of {CASES}, got {case!r}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=CASES, help="run one case in this process and print its JSON")
    p.add_argument("--size", choices=list(SIZES), default="market")
    p.add_argument("--sizes", nargs="*", choices=list(SIZES), default=["market"],
                   help="sizes for evaluate_rank and rerank_features (default: market)")
    p.add_argument("--dense-sizes", nargs="*", choices=list(SIZES), default=["small"],
                   help="sizes for dense rerank vs the dense reference (default: small; market needs ~10 GB free)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--reference-queries", type=int, default=None,
                   help="time the reference evaluation on this many queries and extrapolate (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, help="also write every result to this file")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.dim, args.reference_queries)), flush=True)
        return 0
    plan = [("rerank", "small")]
    for size in args.dense_sizes:
        plan += [("rerank_dense", size), ("rerank_reference", size)]
    for size in args.sizes:
        plan += [("evaluate", size), ("evaluate_reference", size), ("rerank", size)]
    results = []
    for case, size in plan:
        cmd = [sys.executable, __file__, "--case", case, "--size", size, "--dim", str(args.dim),
               "--threads", str(args.threads)]
        if args.reference_queries and case == "evaluate_reference" and size != "small":
            cmd += ["--reference-queries", str(args.reference_queries)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(f"{case} @ {size} failed:\n{proc.stderr}", file=sys.stderr)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
