"""The weights manifest validates: configs the zoo can build, sources that can be resolved, honest metadata."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from isr_reid.commands.models import weights_availability
from isr_reid.convert import FORMATS
from isr_reid.weights import UPSTREAM_SUFFIXES
from isr_reid.zoo import list_architectures, list_models, read_manifest

MANIFEST = read_manifest()
# pyproject's optional-dependencies, one line per extra (tomllib is Python >= 3.11)
_EXTRAS = dict(re.findall(r"^(\w+) = (\[.*\])$", (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(), re.M))
MODELS = MANIFEST["models"]
HEX64 = re.compile(r"[0-9a-f]{64}")
HEX40 = re.compile(r"[0-9a-f]{40}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def test_every_zoo_name_has_an_entry_and_every_entry_is_a_zoo_name():
    assert sorted(MODELS) == list_models()
    assert MANIFEST["format_version"] == 1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_entry_config_fields(name):
    e = MODELS[name]
    assert e["architecture"] in list_architectures(), f"{name}: unregistered architecture {e['architecture']}"
    h, w = e["input_size"]
    assert isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
    assert len(e["mean"]) == 3 and all(0.0 <= m <= 1.0 for m in e["mean"])
    assert len(e["std"]) == 3 and all(s > 0 for s in e["std"])
    assert isinstance(e["embed_dim"], int) and e["embed_dim"] > 0
    assert e["description"].strip()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_entry_license_citation_results(name):
    e = MODELS[name]
    assert isinstance(e["license"], str) and e["license"]
    if e["license"] == "unknown":
        assert e["license_note"].strip(), f"{name}: an unknown license needs a note"
    assert e["citation"].strip()
    for r in e["published_results"]:
        assert set(r) == {"dataset", "metric", "value", "setting", "source"}, r
        assert r["metric"] in ("mAP", "Rank-1") and 0 < r["value"] <= 100
        assert r["source"].strip() and r["setting"].strip()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_sources_are_resolvable_descriptions(name):
    e = MODELS[name]
    for s in e["sources"]:
        assert s["type"] in ("hub", "url", "manual", "package"), s
        assert s["sha256"] is None or HEX64.fullmatch(s["sha256"]), s
        if s["type"] == "hub":
            assert REPO_ID.fullmatch(s["repo_id"]) and s["filename"] == "model.safetensors"
            assert HEX40.fullmatch(s["revision"]), f"{name}: a hub source must pin a commit, got {s['revision']!r}"
        elif s["type"] == "package":
            # an installed package's file: pinned, in a known format, installed by a declared extra
            assert HEX64.fullmatch(s["sha256"] or ""), f"{name}: a package source must pin its sha256"
            assert s["module"].isidentifier() and not s["path"].startswith("/") and ".." not in s["path"]
            assert s["format"] in FORMATS and e["architecture"] in FORMATS[s["format"]], s
            assert s["extra"] in _EXTRAS and f'"{s["distribution"]}' in _EXTRAS[s["extra"]], s
        else:
            assert s["url"].startswith("https://"), s
            assert s["filename"].endswith((*UPSTREAM_SUFFIXES, ".safetensors")), s
            assert "/" not in s["filename"]
            assert s["format"] in FORMATS and e["architecture"] in FORMATS[s["format"]], s
        if s["type"] == "manual":
            assert s["instructions"].strip()
    if not e["sources"]:
        assert weights_availability(e) == "-"


def test_planned_hub_repos_are_not_claimed_as_sources():
    for name, e in MODELS.items():
        planned = e.get("planned_hub_repo")
        if planned:
            assert REPO_ID.fullmatch(planned)
            assert all(s.get("repo_id") != planned for s in e["sources"]), f"{name}: planned repo listed as a source"
            assert weights_availability(e) != "hub", name


def test_release_facts_match_the_authors():
    isr = MODELS["isr_swin_base"]["sources"][0]
    assert (isr["type"], isr["filename"]) == ("url", "swin_base_patch4_window7_224.pth")
    assert isr["url"] == "https://cloud.tsinghua.edu.cn/f/facfc952bee74940b106/?dl=1"
    files = {n: MODELS[n]["sources"][0]["filename"] for n in
             ("transreid_ssl_vit_small", "transreid_ssl_vit_small_ics", "transreid_ssl_vit_base_ics")}
    assert files == {
        "transreid_ssl_vit_small": "vit_small_cfs_lup.pth",
        "transreid_ssl_vit_small_ics": "vit_small_ics_cfs_lup.pth",
        "transreid_ssl_vit_base_ics": "vit_base_ics_cfs_lup.pth",
    }
    for n in files:
        s = MODELS[n]["sources"][0]
        assert s["type"] == "manual" and s["url"].startswith("https://drive.google.com/")
    r1 = {(r["dataset"], r["setting"]): r["value"] for r in MODELS["isr_swin_base"]["published_results"]}
    assert r1[("Market-1501", "no fine-tuning (direct transfer)")] == 87.0
    assert r1[("MSMT17", "no fine-tuning (direct transfer)")] == 56.4
