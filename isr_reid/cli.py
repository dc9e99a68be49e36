"""The ``isr-reid`` command: one subcommand per module in :mod:`isr_reid.commands`.

Each command module defines ``HELP`` (one line), ``DESCRIPTION`` (optional, for ``--help``),
``EXAMPLES`` (the command lines that end its ``--help``; each runs as written), ``add_arguments(parser)``
and ``run(args) -> int``, and imports heavy libraries inside ``run`` only, so that ``isr-reid --help``
is instant. ``PARAM_FLAGS`` (optional) maps library parameter names to the command's flags, so that a
library error shown by the command names the flag.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import __version__, commands

__all__ = ["build_parser", "main"]

# The order in `isr-reid --help`; any other module found in isr_reid.commands follows.
ORDER = ["models", "extract", "search", "evaluate", "train", "finetune", "convert", "push", "export", "demo"]


def _command_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``isr-reid`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="isr-reid",
        description=(
            "Person re-identification with self-supervised ReID backbones (ISR, TransReID-SSL, SCL): "
            "embed person crops, search galleries, evaluate, train and export. "
            "Run 'isr-reid COMMAND --help' for each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"isr-reid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        mod = importlib.import_module(f"{commands.__name__}.{name}")
        examples = getattr(mod, "EXAMPLES", "")
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=getattr(mod, "DESCRIPTION", mod.HELP),
            epilog=f"examples:\n{examples.rstrip()}" if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _flags={**_flags_of(p), **getattr(mod, "PARAM_FLAGS", {})})
    return parser


def _flags_of(p: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its long flag, for every option of ``p`` (to re-word library errors)."""
    out = {}
    for action in p._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest not in ("help", "version") and action.dest not in out:
            out[action.dest] = longs[0]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``isr-reid`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output was piped into a reader that stopped (| head): no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 141
    except ImportError as e:
        if getattr(args, "debug", False):
            raise
        print(f"isr-reid {args.command}: error: {e} (an optional dependency is missing: "
              "pip install 'isr-reid[train,faiss,onnx]' installs them all)", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError, KeyError, TypeError, RuntimeError) as e:
        if getattr(args, "debug", False):
            raise
        from .commands._common import cli_terms

        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"isr-reid {args.command}: error: {cli_terms(str(msg), args._flags)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
