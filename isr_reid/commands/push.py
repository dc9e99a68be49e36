"""isr-reid push: upload a hub-layout folder to the Hugging Face hub."""

from __future__ import annotations

import argparse

HELP = "upload a hub-layout folder (from 'isr-reid convert' or save_pretrained) to the Hugging Face hub"
DESCRIPTION = """Upload DIR (model.safetensors, config.json, README.md) to the hub repo REPO_ID in one commit,
creating the repo if needed. Authenticate with 'hf auth login', $HF_TOKEN or --token; $HF_ENDPOINT
selects another hub. Prints the manifest source to pin: repo id, file, commit and sha256.
--dry-run checks DIR and shows what would be pinned, uploading nothing."""
EXAMPLES = """\
  isr-reid push isr_swin_base_hub/ my-org/isr_swin_base --dry-run
  isr-reid push isr_swin_base_hub/ my-org/isr_swin_base"""

REQUIRED = ("model.safetensors", "config.json", "README.md")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", metavar="DIR", help="a hub-layout folder")
    p.add_argument("repo_id", metavar="REPO_ID", help="hub repo, 'owner/name'")
    p.add_argument("--revision", default=None, help="branch to commit to (default: the repo's default branch)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="hub token (default: the logged-in one or $HF_TOKEN)")
    p.add_argument("--dry-run", action="store_true", help="check DIR and print what would be pinned; upload nothing")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def check_folder(directory: str) -> dict[str, str]:
    """Check that ``directory`` is a loadable hub-layout folder; returns its config's name and architecture."""
    import json
    from pathlib import Path

    from safetensors import SafetensorError, safe_open

    from ..zoo import ModelConfig

    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    missing = [n for n in REQUIRED if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not in hub layout: missing {', '.join(missing)} (write it with 'isr-reid convert')")
    try:
        cfg = ModelConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{folder / 'config.json'} is not a valid isr_reid config: {e}") from e
    try:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{folder / 'model.safetensors'} is not a readable safetensors file: {e}") from e
    if metadata.get("architecture") not in (None, cfg.architecture):
        raise ValueError(
            f"{folder}: config.json says architecture {cfg.architecture!r}, "
            f"model.safetensors holds {metadata['architecture']!r}"
        )
    return {"name": cfg.name, "architecture": cfg.architecture}


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .._cache import sha256_file
    from .._hub import hub_upload, parse_hub_spec

    parse_hub_spec(f"hf-hub:{args.repo_id}")  # validates owner/name
    info = check_folder(args.directory)
    source = {
        "type": "hub",
        "repo_id": args.repo_id,
        "filename": "model.safetensors",
        "revision": None,
        "sha256": sha256_file(Path(args.directory) / "model.safetensors"),
    }
    if args.dry_run:
        print(f"would upload {args.directory} ({info['name']}, {info['architecture']}) to {args.repo_id}")
    else:
        source["revision"] = hub_upload(
            args.directory, args.repo_id, revision=args.revision, private=args.private, token=args.token
        )
        print(f"uploaded {args.directory} to {args.repo_id} at commit {source['revision']}")
    print(f"manifest source for {info['name']} (add it first in 'sources' of weights_manifest.json):")
    print(json.dumps(source, indent=2))
    return 0
