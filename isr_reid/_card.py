"""The model card (``README.md`` with YAML front matter) written beside weights in hub layout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .config import ModelConfig

__all__ = ["model_card"]


def _yaml_str(value: str) -> str:
    # JSON strings are valid YAML scalars and escape everything that needs it.
    return json.dumps(value, ensure_ascii=False)


def _front_matter(cfg: ModelConfig, entry: Mapping[str, Any]) -> str:
    license_id = str(entry.get("license") or "unknown")
    tags = ["isr_reid", "person-reid", "re-identification", "image-feature-extraction", cfg.architecture]
    lines = ["---", "library_name: isr_reid", f"license: {_yaml_str(license_id)}"]
    lines.append("tags:")
    lines += [f"- {_yaml_str(t)}" for t in tags]
    datasets = list(entry.get("training_data") or [])
    if datasets:
        lines.append("datasets:")
        lines += [f"- {_yaml_str(d)}" for d in datasets]
    lines += ["pipeline_tag: image-feature-extraction", "---", ""]
    return "\n".join(lines)


def _results_table(results: list[Mapping[str, Any]]) -> str:
    if not results:
        return "No published results for these weights.\n"
    rows = ["| Dataset | Metric | Value (%) | Setting | Source |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        rows.append(f"| {r['dataset']} | {r['metric']} | {r['value']} | {r['setting']} | {r['source']} |")
    return "\n".join(rows) + "\n"


def model_card(
    cfg: ModelConfig,
    entry: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """The ``README.md`` text for weights of ``cfg``; ``entry`` is its manifest entry (license, citation, results)."""
    entry = entry or {}
    spec = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    h, w = cfg.input_size
    parts = [
        _front_matter(cfg, entry),
        f"# {cfg.name}\n",
        f"{cfg.description or entry.get('description', '')}\n",
        "Weights in [isr_reid](https://github.com/isr-reid/isr_reid) hub layout: `model.safetensors` "
        "(the state dict) and `config.json` (the model config: architecture, input size, normalisation).\n",
        "## Usage\n",
        "```python\nfrom isr_reid import load_model\n\n"
        f'model = load_model("{cfg.name}", weights="{spec}")\n'
        'embeddings = model.extract("crops/")  # numpy float32 (N, '
        f"{cfg.embed_dim}), L2-normalised rows\n```\n",
        f"Input: RGB, resized to {h}x{w} (H x W), scaled to [0, 1], normalised with mean {list(cfg.mean)} "
        f"and std {list(cfg.std)}. Output: {cfg.embed_dim}-d embeddings; cosine similarity is a dot product.\n",
        "## Published results\n",
        _results_table(list(entry.get("published_results") or [])),
    ]
    if entry.get("paper") or entry.get("code"):
        parts.append("## Origin\n")
        if entry.get("paper"):
            parts.append(f"Paper: {entry['paper']}.\n")
        if entry.get("code"):
            parts.append(f"Authors' code: {entry['code']}\n")
    if provenance:
        parts.append("Converted by isr_reid from " + ", ".join(f"{k}: `{v}`" for k, v in provenance.items()) + ".\n")
    parts.append("## License\n")
    parts.append(f"`{entry.get('license') or 'unknown'}`. {entry.get('license_note', '')}".rstrip() + "\n")
    if entry.get("citation"):
        lang = "bibtex" if str(entry["citation"]).lstrip().startswith("@") else "text"
        parts += ["## Citation\n", f"```{lang}\n{entry['citation']}\n```\n"]
    return "\n".join(parts)
