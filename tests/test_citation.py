"""CITATION.cff stays in step with the package and names the method papers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import isr_reid

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]


def test_citation_cff_matches_package():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == isr_reid.__version__
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "(.+)"$', pyproject, re.M).group(1) == cff["license"]
    titles = {ref["title"] for ref in cff["references"]}
    assert any(t.startswith("Identity-Seeking Self-Supervised") for t in titles)
    assert any(t.startswith("Self-Supervised Pre-Training for Transformer-Based") for t in titles)
    assert any("Selective Contrastive Learning" in t for t in titles)
    for ref in cff["references"]:
        assert ref["authors"] and all("family-names" in a for a in ref["authors"]), ref["title"]
