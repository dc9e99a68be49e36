"""The command line as one tool: extract -> search -> evaluate on a temporary folder, one flag convention,
errors in flag terms, and every --help ending with examples that parse (and run, where cheap)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from _market_reference import naive_market_metrics
from _people_folder import write_people_folder
from PIL import Image

from isr_reid.cli import build_parser, main
from isr_reid.data.features import load_features, save_features

N_IDS, N_CAMS, PER_CAM = 4, 2, 2
MODEL = ["--model", "isr_resnet18", "--init", "random", "--input-size", "64", "32", "--device", "cpu"]
QUIET = ["--no-progress", "--batch-size", "4"]


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """<root>/{query,gallery}/<pid>/c<cam>_<k>.png: a colour per person plus noise."""
    return write_people_folder(tmp_path_factory.mktemp("chain") / "data", N_IDS, N_CAMS, PER_CAM, ".png")


def _labels(paths):
    """pid, camera and split of <root>/<split>/<pid>/c<cam>_<k>.png, read from the path."""
    ps = [Path(p) for p in paths]
    return (np.array([int(p.parent.name) for p in ps]), np.array([int(p.name[1]) - 1 for p in ps]),
            np.array([p.parent.parent.name == "query" for p in ps]))


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_extract_then_search_then_evaluate(data, tmp_path, capsys, suffix):
    feats = tmp_path / f"f{suffix}"
    assert main(["extract", str(data), "-o", str(feats), *MODEL, *QUIET]) == 0
    f = load_features(feats)
    assert len(f.paths) == N_IDS * N_CAMS * PER_CAM and f.config["input_size"] == [64, 32]

    # search: the features file is the gallery as it is; --model and --input-size come from it.
    queries = sorted(str(p) for p in (data / "query").rglob("*.png"))
    out = tmp_path / "s.json"
    assert main(["search", "--gallery", str(feats), "--query", str(data / "query"), "--init", "random",
                 "-k", "3", "--json", str(out), "--device", "cpu", *QUIET]) == 0
    res = json.loads(out.read_text())
    assert res["model"] == "isr_resnet18" and [e["query"] for e in res["queries"]] == queries
    emb = f.embeddings.astype(np.float64)
    row = {p: i for i, p in enumerate(f.paths)}
    for entry in res["queries"]:
        sim = emb[row[entry["query"]]] @ emb.T  # the query was embedded again: same seeded random weights
        ref = np.argsort(-sim, kind="stable")[:3]
        assert [h["path"] for h in entry["results"]] == [f.paths[j] for j in ref]
        np.testing.assert_allclose([h["score"] for h in entry["results"]], sim[ref], atol=1e-5)
        assert entry["results"][0]["path"] == entry["query"]  # itself, in the gallery
        assert entry["person"] == str(int(Path(entry["query"]).parent.name))
        for h in entry["results"]:
            assert h["person"] == str(int(Path(h["path"]).parent.name))

    # evaluate: the same file, labelled by the dataset, against a loop over queries.
    pids, cams, is_q = _labels(f.paths)
    gal = ~is_q
    r1, m_ap, nv = naive_market_metrics(f.embeddings[is_q], f.embeddings[gal], pids[is_q], pids[gal], cams[is_q], cams[gal])
    e1 = tmp_path / "e1.json"
    assert main(["evaluate", "--features", str(feats), "--dataset", "folder", "--root", str(data),
                 "--json", str(e1), "--no-progress"]) == 0
    r = json.loads(e1.read_text())
    assert r["num_valid"] == nv == N_IDS and r["num_gallery"] == gal.sum()
    assert r["R1"] == pytest.approx(r1, abs=1e-6) and r["mAP"] == pytest.approx(m_ap, abs=1e-6)
    assert r["model"] == "isr_resnet18" and r["features"] == str(feats)

    # Embedding the images now gives the same numbers, and --save-features keeps labels that a
    # later --features run uses without --dataset.
    e2, labelled = tmp_path / "e2.json", tmp_path / f"labelled{suffix}"
    assert main(["evaluate", *MODEL, "--dataset", "folder", "--root", str(data), "--json", str(e2),
                 "--save-features", str(labelled), *QUIET]) == 0
    e3 = tmp_path / "e3.json"
    assert main(["evaluate", "--features", str(labelled), "--json", str(e3), "--no-progress"]) == 0
    for other in (e2, e3):
        o = json.loads(other.read_text())
        assert o["R1"] == pytest.approx(r["R1"], abs=1e-6) and o["mAP"] == pytest.approx(r["mAP"], abs=1e-6)
    capsys.readouterr()


def test_features_of_other_images_or_models_are_refused_by_name(data, tmp_path, capsys):
    feats = tmp_path / "q.npz"
    assert main(["extract", str(data / "query"), "-o", str(feats), *MODEL, *QUIET]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--features", str(feats), "--dataset", "folder", "--root", str(data)]) == 1
    err = capsys.readouterr().err
    assert "--features" in err and "gallery" in err and "c1_1.png" in err
    assert main(["evaluate", "--features", str(feats)]) == 1
    assert "--dataset" in capsys.readouterr().err  # no labels in an extract file
    assert main(["search", "--gallery", str(feats), "--query", str(data / "query"), "--model", "isr_resnet50",
                 "--init", "random"]) == 1
    assert "isr_resnet18" in capsys.readouterr().err
    assert main(["search", "--gallery", str(feats), "--query", str(data / "query"), "--init", "random",
                 "--input-size", "128", "64"]) == 1
    assert "--input-size 64 32" in capsys.readouterr().err


def test_search_pids_are_unique_per_sequence(tmp_path, capsys):
    rng = np.random.default_rng(1)
    crops = tmp_path / "crops"
    for seq in ("MOT17-02", "MOT17-04"):
        for track in (1, 2):
            for k in range(2):
                _write(crops / seq / str(track) / f"{k}.png", rng.integers(0, 255, (32, 16, 3), dtype=np.uint8))
    query = str(crops / "MOT17-02" / "1" / "0.png")
    out = tmp_path / "s.json"
    assert main(["search", "--gallery", str(crops), "--query", query, "-k", "8", "--json", str(out),
                 "--save-png", str(tmp_path / "hits.png"), *MODEL, *QUIET]) == 0
    res = json.loads(out.read_text())["queries"][0]
    assert res["person"] == "MOT17-02/1"
    persons = {h["path"]: h["person"] for h in res["results"]}
    assert len(persons) == 8
    for path, person in persons.items():
        p = Path(path)
        assert person == f"{p.parent.parent.name}/{p.parent.name}"
    # Track 1 of the other sequence is another person.
    assert persons[str(crops / "MOT17-04" / "1" / "0.png")] != res["person"]
    # A features file of the same folder gives the same persons.
    feats = tmp_path / "f.npz"
    assert main(["extract", str(crops), "-o", str(feats), *MODEL, *QUIET]) == 0
    out2 = tmp_path / "s2.json"
    assert main(["search", "--gallery", str(feats), "--query", query, "-k", "8", "--json", str(out2),
                 "--init", "random", "--device", "cpu", *QUIET]) == 0
    res2 = json.loads(out2.read_text())["queries"][0]
    assert res2["person"] == "MOT17-02/1" and {h["path"]: h["person"] for h in res2["results"]} == persons
    # --model given without --input-size: the query is still embedded at the file's 64x32 (score 1 to itself).
    assert main(["search", "--gallery", str(feats), "--query", query, "-k", "1", "--json", str(out2),
                 "--model", "isr_resnet18", "--init", "random", "--device", "cpu", *QUIET]) == 0
    top = json.loads(out2.read_text())["queries"][0]["results"][0]
    assert top["path"] == query and top["score"] == pytest.approx(1.0, abs=1e-5)
    # --metric euclidean reports distances: ||q - g|| of the file's rows (the query is one of them).
    out3 = tmp_path / "s3.json"
    assert main(["search", "--gallery", str(feats), "--query", query, "-k", "8", "--json", str(out3), "--metric",
                 "euclidean", "--init", "random", "--device", "cpu", *QUIET]) == 0
    res3 = json.loads(out3.read_text())
    f = load_features(feats)
    emb = f.embeddings.astype(np.float64)
    d = np.linalg.norm(emb - emb[f.paths.index(query)], axis=1)
    hits = res3["queries"][0]["results"]
    assert res3["metric"] == "euclidean" and [h["path"] for h in hits] == [f.paths[j] for j in np.argsort(d, kind="stable")]
    np.testing.assert_allclose([h["distance"] for h in hits], np.sort(d), atol=1e-3)
    capsys.readouterr()


def test_evaluate_metric_scl_on_a_features_file(tmp_path):
    """--metric scl ranks by 0.5||g-g'|| + 0.5 mean_k ||s_k-s_k'||, checked by a loop over pairs."""
    rng = np.random.default_rng(2)
    n_q, n_g = 6, 18

    def unit(*shape):
        x = rng.normal(size=shape)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def at_cos(base, c):
        """Unit vectors at cosine ``c`` (per row) to the unit rows of ``base``."""
        r = unit(*base.shape)
        r -= (r * base).sum(-1, keepdims=True) * base
        r /= np.linalg.norm(r, axis=-1, keepdims=True)
        return c[..., None] * base + np.sqrt(1 - c[..., None] ** 2) * r

    qg, qs = unit(n_q, 2048), unit(n_q, 8, 256)
    gg, gs, gp = [], [], []
    for i in range(n_q):
        for _ in range(2):  # two true matches: a weak global, closer stripes
            gg.append(at_cos(qg[i:i + 1], rng.uniform(0.2, 0.6, 1))[0])
            gs.append(at_cos(qs[i], rng.uniform(0.6, 0.9, 8)))
            gp.append(i)
        gg.append(qg[i])  # another person with this query's global embedding and unrelated stripes
        gs.append(unit(8, 256))
        gp.append((i + 1) % n_q)
    gg, gs, gp = np.array(gg), np.array(gs), np.array(gp)
    cat = lambda g, s: np.concatenate([g / np.sqrt(2)] + [s[:, k] / 4 for k in range(8)], 1)  # noqa: E731
    emb = np.concatenate([cat(qg, qs), cat(gg, gs)]).astype(np.float32)
    qp = np.arange(n_q)
    qc, gc = np.zeros(n_q, int), np.ones(n_g, int)
    feats = tmp_path / "scl.npz"
    save_features(feats, emb, [f"#{i}" for i in range(len(emb))], model="scl_resnet50", config={},
                  extra={"pids": np.r_[qp, gp], "camids": np.r_[qc, gc], "is_query": np.r_[np.ones(n_q), np.zeros(n_g)]})
    dist = np.array([[0.5 * np.linalg.norm(qg[i] - gg[j])
                      + 0.5 * np.mean([np.linalg.norm(qs[i, k] - gs[j, k]) for k in range(8)])
                      for j in range(n_g)] for i in range(n_q)])
    r1, m_ap, _ = naive_market_metrics(emb[:n_q], emb[n_q:], qp, gp, qc, gc, dist=dist)
    out = tmp_path / "e.json"
    assert main(["evaluate", "--features", str(feats), "--metric", "scl", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["metric"] == "scl" and r["mAP"] == pytest.approx(m_ap, abs=1e-6) and r["R1"] == pytest.approx(r1)
    cos_map = naive_market_metrics(emb[:n_q], emb[n_q:], qp, gp, qc, gc)[1]
    assert cos_map != pytest.approx(m_ap, abs=1e-6)  # the two metrics rank these differently
    assert main(["evaluate", "--features", str(feats), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == pytest.approx(cos_map, abs=1e-6)


def test_mot_evaluation_holds_out_near_frames(mot17_root, tmp_path, capsys):
    from isr_reid.commands.evaluate import MOT_MIN_FRAME_GAP as CLI_DEFAULT
    from isr_reid.data.datasets import MOT_MIN_FRAME_GAP, load_dataset

    assert CLI_DEFAULT == MOT_MIN_FRAME_GAP
    seq = mot17_root / "MOT17-05-FRCNN"  # 6 frames, 9 tracks
    base = ["evaluate", *MODEL, "--dataset", "mot", "--root", str(seq), *QUIET]
    out, feats = tmp_path / "e.json", tmp_path / "f.npz"
    assert main([*base, "--min-frame-gap", "3", "--json", str(out), "--save-features", str(feats)]) == 0
    r = json.loads(out.read_text())
    f = load_features(feats)
    ds = load_dataset("mot", seq, min_frame_gap=0)
    recs = ds.query + ds.gallery  # the rows of the file, in order
    is_q = f.extra["is_query"].astype(bool)
    assert is_q.sum() == len(ds.query) and np.array_equal(f.extra["pids"], [x.pid for x in recs])
    q, g = f.embeddings[is_q], f.embeddings[~is_q]
    qr, gr = ds.query, ds.gallery
    d = 1 - q.astype(np.float64) @ g.astype(np.float64).T
    r1, aps = [], []
    for i, qi in enumerate(qr):  # a track's crops under 3 frames from its query crop do not count
        keep = np.array([not (x.pid == qi.pid and abs(x.frame - qi.frame) < 3) for x in gr])
        order = np.argsort(d[i][keep], kind="stable")
        hits = np.array([x.pid == qi.pid for x in gr])[keep][order]
        if hits.any():
            r1.append(float(hits[0]))
            pos = np.flatnonzero(hits)
            aps.append(np.mean((np.arange(len(pos)) + 1) / (pos + 1)))
    assert 0 < r["num_valid"] == len(aps) < len(qr) + 1
    assert r["min_frame_gap"] == 3
    assert r["R1"] == pytest.approx(np.mean(r1), abs=1e-6) and r["mAP"] == pytest.approx(np.mean(aps), abs=1e-6)
    # The default gap (30 frames) leaves no match in a 6-frame clip: a clear error naming the flag.
    capsys.readouterr()
    assert main(base) == 1
    assert "--min-frame-gap 30" in capsys.readouterr().err


def test_one_convention_and_deprecated_spellings(data, tmp_path, capsys):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["extract", str(data / "query"), "-o", str(a), *MODEL, *QUIET]) == 0
    assert "deprecated" not in capsys.readouterr().err
    old = ["--model", "isr_resnet18", "--random-init", "--input-size", "64", "32", "--device", "cpu"]
    assert main(["extract", str(data / "query"), "-o", str(b), *old, *QUIET]) == 0
    err = capsys.readouterr().err
    assert "--random-init is deprecated" in err and "use --init random" in err
    np.testing.assert_array_equal(load_features(a).embeddings, load_features(b).embeddings)
    p = build_parser()
    for cmd in ("extract x -o f.npz", "search --gallery g --query q", "evaluate --dataset mot --root r", "export -o m.onnx",
                "train --videos v --output o", "finetune --dataset folder --root r --output o"):
        args = p.parse_args([*shlex.split(cmd), "--model", "isr_resnet18"])
        assert args.model == "isr_resnet18" and args.weights is None
        assert args.init == ("auto" if cmd.split()[0] in ("train", "finetune") else "pretrained")
        assert "--init" in p._subparsers._group_actions[0].choices[cmd.split()[0]].format_help()
    assert p.parse_args(["train", "--videos", "v", "--output", "o", "--model", "m", "--pretrained"]).init == "pretrained"
    args = p.parse_args(["export", "isr_resnet18", "-o", "m.onnx"])
    assert args.model == "isr_resnet18"
    assert "positional NAME is deprecated" in capsys.readouterr().err
    assert main(["extract", str(data), "-o", str(a), "--model", "isr_resnet18", "--init", "random",
                 "--weights", str(tmp_path)]) == 1
    assert "--init random and --weights" in capsys.readouterr().err


def test_errors_speak_in_flags(data, tmp_path, capsys):
    # isr_resnet18 has no published weights: the message names --weights and --init, not Python.
    assert main(["extract", str(data), "-o", str(tmp_path / "f.npz"), "--model", "isr_resnet18"]) == 1
    err = capsys.readouterr().err
    assert "--weights PATH" in err and "--init random" in err
    assert "weights=" not in err and "pretrained=" not in err and "load_model" not in err
    assert main(["search", "--gallery", str(tmp_path / "missing.npz"), "--query", str(data / "query")]) == 1
    err = capsys.readouterr().err
    assert "missing.npz" in err and ".safetensors" not in err
    assert main(["search", "--gallery", str(data), "--query", str(data / "query"), "-k", "0", *MODEL]) == 1
    assert "--topk" in capsys.readouterr().err
    # Library parameter names in errors become the command's flags.
    out = str(tmp_path / "g.npz")
    assert main(["extract", str(data), "-o", out, *MODEL, "--batch-size", "0", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--batch-size" in err and "batch_size" not in err
    assert main(["extract", str(data), "-o", out, *MODEL, "--workers", "-1", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--workers" in err and "num_workers" not in err
    assert main(["extract", str(data), "-o", out, *MODEL[:4], "--input-size", "0", "0"]) == 1
    assert "--input-size: expected a positive height and width, got 0 0" in capsys.readouterr().err


def _examples(help_text: str) -> list[str]:
    """The command lines of the 'examples:' block that ends a --help, continuation lines joined."""
    block = help_text.rstrip().split("\nexamples:\n")
    assert len(block) == 2, "the help has no examples: block"
    lines, current = [], ""
    for line in block[1].splitlines():
        current += " " + line.strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        lines.append(current.strip())
        current = ""
    return lines


def test_every_help_ends_with_examples_that_parse(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) >= {"models", "extract", "search", "evaluate", "train", "finetune", "convert", "push",
                             "export", "demo"}
    for name, sub in commands.items():
        text = sub.format_help()
        examples = _examples(text)
        assert examples, name
        assert text.rstrip().endswith(examples[-1].split()[-1])  # the help ends with the last example
        for line in examples:
            argv = shlex.split(line)
            assert argv[:2] == ["isr-reid", name], line
            args = build_parser().parse_args(argv[1:])  # SystemExit on a flag that does not exist
            assert args.command == name
        assert "deprecated" not in capsys.readouterr().err, name  # examples use the current spellings
    for line in _examples(commands["models"].format_help()):  # the cheap ones run as written
        assert main(shlex.split(line)[1:]) == 0
        assert "isr_resnet18" in capsys.readouterr().out


def test_model_option_reaches_the_checkpoint_converter(tmp_path, capsys):
    """A fine-tuned TransReID ViT-S with SIE camera embeddings: the CLI error names --model-option,
    and --model-option sie_camera=K loads it as load_model(..., extra={"sie_camera": K}) does."""
    import torch
    from reference_nets import rand_state, transreid_vit_shapes

    from isr_reid import load_model

    flat = rand_state(transreid_vit_shapes(384, 12, False), seed=3)
    sd = {f"base.{k}": v for k, v in flat.items()}
    sd["base.sie_embed"] = 0.3 * torch.randn(3, 1, 384, generator=torch.Generator().manual_seed(4))
    ckpt = tmp_path / "transformer_120.pth"
    torch.save(sd, ckpt)
    rng = np.random.default_rng(5)
    paths = [tmp_path / "crops" / f"{i}.png" for i in range(2)]
    for p in paths:
        _write(p, rng.integers(0, 255, (64, 32, 3), dtype=np.uint8))
    out = tmp_path / "f.npz"
    base = ["extract", str(tmp_path / "crops"), "-o", str(out), "--model", "transreid_ssl_vit_small", "--weights",
            str(ckpt), "--device", "cpu", "--no-progress"]
    capsys.readouterr()
    assert main(base) == 1
    err = capsys.readouterr().err
    assert "--model-option sie_camera=K" in err and "--model-option sie_camera=drop" in err
    assert "sie_camera='drop'" not in err
    assert main([*base, "--model-option", "sie_camera=1"]) == 0
    got = load_features(out).embeddings
    api = load_model("transreid_ssl_vit_small", weights=ckpt, extra={"sie_camera": 1}, device="cpu")
    np.testing.assert_allclose(got, api.extract([str(p) for p in paths], progress=False), atol=1e-5)
    assert main([*base, "--model-option", "sie_camera"]) == 1
    assert "--model-option: expected KEY=VALUE" in capsys.readouterr().err
