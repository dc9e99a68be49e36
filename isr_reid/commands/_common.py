"""What the commands share: the model arguments (one convention for every command), run control of
the training commands, deprecated spellings, and library errors re-worded in the command line's flags.

The convention, the same in every command that loads a model:

  --model NAME                          a zoo name ('isr-reid models')
  --weights PATH|hf-hub:owner/repo@rev  weights to load instead of the model's published ones
  --init pretrained|random|auto         where the weights come from when --weights is not given:
                                        the published weights, a random init, or (auto) the
                                        published weights when the model has any, else random
  --input-size H W, --device DEV
  --model-option KEY=VALUE              an architecture or conversion option (load_model's extra=)

Each command states its --init default in its --help: the embedding commands (extract, search,
evaluate, export) default to 'pretrained', since random embeddings are meaningless; the training
commands (train, finetune) to 'auto'.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.base import ReIDModel

__all__ = [
    "INIT_CHOICES",
    "DeprecatedAlias",
    "add_model_arguments",
    "add_model_option_argument",
    "add_training_run_arguments",
    "cli_terms",
    "model_from_args",
    "model_name",
    "model_options",
]

INIT_CHOICES = ("pretrained", "random", "auto")
DEPRECATION = "is deprecated and will be removed in the next release"


class DeprecatedAlias(argparse.Action):
    """An old spelling: stores ``const`` into ``dest`` (or the value given) and prints what to write instead."""

    def __init__(self, option_strings: list[str], dest: str, *, replacement: str, nargs: Any = 0,
                 const: Any = None, **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not option_string and values in (None, []):  # an optional positional that was not given
            return
        spelling = option_string or f"the positional {self.metavar or self.dest}"
        print(f"{parser.prog}: warning: {spelling} {DEPRECATION}; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add_model_arguments(p: argparse.ArgumentParser, *, default_init: str = "pretrained", required: bool = True,
                        device: bool = True) -> None:
    """--model, --weights, --init (default ``default_init``), --input-size, --device, and the deprecated
    --random-init / --pretrained (hidden from --help)."""
    g = p.add_argument_group("model (the same flags in every command)")
    g.add_argument("--model", "-m", required=required, default=None, metavar="NAME",
                   help="zoo name (see 'isr-reid models')")
    g.add_argument("--weights", "-w", default=None, metavar="PATH",
                   help="weights to load: a .safetensors file, a folder written by save_pretrained, train or "
                        "convert, an upstream .pth checkpoint, or hf-hub:owner/repo[@rev]")
    init_help = {
        "pretrained": "default pretrained: the model's published weights (an error names what to fetch when "
                      "they are not available)",
        "auto": "default auto: the published weights when the model has any, else a random init",
    }[default_init]
    g.add_argument("--init", choices=INIT_CHOICES, default=default_init,
                   help=f"weights when --weights is not given: pretrained, random or auto; {init_help}")
    # Old spellings, accepted for one release with a warning; left out of --help.
    g.add_argument("--random-init", dest="init", action=DeprecatedAlias, const="random",
                   replacement="--init random", help=argparse.SUPPRESS)
    g.add_argument("--pretrained", dest="init", action=DeprecatedAlias, const="pretrained",
                   replacement="--init pretrained", help=argparse.SUPPRESS)
    g.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="override the model's input size")
    add_model_option_argument(g)
    if device:
        g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")


def add_model_option_argument(g: Any) -> None:
    """--model-option KEY=VALUE (repeatable): architecture and conversion options, load_model's ``extra``."""
    g.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an architecture or checkpoint-conversion option, repeatable: e.g. sie_camera=0, "
                        "neck_feat=after or jpm=global for fine-tuned TransReID checkpoints (values read as "
                        "JSON numbers/true/false when they parse, else as text)")


def model_options(items: list[str] | None) -> dict[str, Any]:
    """The ``--model-option KEY=VALUE`` list as a dict; values are JSON when they parse, else text."""
    import json

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--model-option: expected KEY=VALUE, e.g. sie_camera=0, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def model_name(args: argparse.Namespace) -> str:
    """The --model of ``args``, or a usage error in the command's terms when it is missing."""
    if not getattr(args, "model", None):
        raise ValueError("--model NAME is required (see 'isr-reid models')")
    return str(args.model)


def _has_published_weights(name: str) -> bool:
    from ..weights import weights_sources

    return bool(weights_sources(name))


def model_from_args(args: argparse.Namespace, *, device: str | None = None) -> ReIDModel:
    """Load the model that ``add_model_arguments`` described (on ``device``, default ``--device``).

    Library errors about weights are re-worded with the command's flags (--weights, --init).
    """
    from ..weights import WeightsNotFoundError
    from ..zoo import get_config, load_model

    name = model_name(args)
    get_config(name)  # an unknown name fails here, with suggestions
    init = args.init
    if init == "random" and args.weights:
        raise ValueError("--init random and --weights exclude each other")
    if init == "auto":
        init = "pretrained" if args.weights or _has_published_weights(name) else "random"
        if init == "random":
            print(f"{name} has no published weights: starting from a random init (--init auto)", file=sys.stderr)
    if args.input_size and min(args.input_size) < 1:
        raise ValueError(f"--input-size: expected a positive height and width, got {args.input_size[0]} "
                         f"{args.input_size[1]}")
    overrides: dict[str, Any] = {"input_size": tuple(args.input_size)} if args.input_size else {}
    options = model_options(getattr(args, "model_option", None))
    if options:
        overrides["extra"] = options
    if init == "random":
        import torch

        # Seeded (--seed, else 0): every command builds the same random weights, so the features of
        # 'extract --init random' can be searched with 'search --init random'.
        torch.manual_seed(getattr(args, "seed", 0) or 0)
    try:
        return load_model(name, pretrained=init == "pretrained", weights=args.weights,
                          device=device if device is not None else getattr(args, "device", None), **overrides)
    except WeightsNotFoundError as e:
        if args.weights is None and not _has_published_weights(name):
            raise WeightsNotFoundError(
                f"{name} has no published weights: pass --weights PATH (a .safetensors file, a saved model "
                "folder, an upstream checkpoint, or hf-hub:owner/repo@rev), or --init random for a random "
                "init (a pipeline check: its embeddings are meaningless)") from None
        raise WeightsNotFoundError(cli_terms(str(e)) + "\n- or pass --init random for a random init") from None


# Options of upstream-checkpoint conversion (isr_reid.convert.VIT_OPTIONS, not imported: it imports torch).
MODEL_OPTION_KEYS = ("neck_feat", "sie_camera", "sie_coe", "jpm")
_OPTION = "|".join(MODEL_OPTION_KEYS)

# Library (Python) spellings -> command-line flags, for error messages shown by the command line.
_TERMS = [
    (re.compile(rf"(?<![\w-])(?<!--model-option )({_OPTION})='([^']*)'"), r"--model-option \1=\2"),
    (re.compile(rf"(?<![\w-])(?<!--model-option )({_OPTION})=(?=[\w<])"), r"--model-option \1="),
    (re.compile(r"\binput_size=\(H, W\)"), "--input-size H W"),
    (re.compile(r"\bpass weights=PATH to load_model\b"), "pass --weights PATH"),
    (re.compile(r"\bweights=PATH\b"), "--weights PATH"),
    (re.compile(r"\bpretrained=False\b"), "--init random"),
    (re.compile(r"\bpretrained=True\b"), "--init pretrained"),
    (re.compile(r"\bload_model\(weights=([^)]*)\)"), r"--weights \1"),
    (re.compile(r"\bweights=(?=['\"/\w])"), "--weights "),
]


def cli_terms(message: str, flags: dict[str, str] | None = None) -> str:
    """``message`` with the library's parameter spellings replaced by command-line flags.

    ``flags`` maps further parameter names to flags (``{"input_size": "--input-size"}``): ``name=`` and
    a leading ``name:`` become the flag.
    """
    for pattern, repl in _TERMS:
        message = pattern.sub(repl, message)
    for param, flag in (flags or {}).items():
        message = re.sub(rf"(?<![\w-]){re.escape(param)}=", f"{flag} ", message)
        message = re.sub(rf"^{re.escape(param)}:", f"{flag}:", message)
        if "_" in param:  # an identifier, never an English word: batch_size -> --batch-size anywhere
            message = re.sub(rf"(?<![\w-]){re.escape(param)}\b", flag, message)
    return message


def add_training_run_arguments(p: argparse.ArgumentParser, *, checkpoint_every: int, log_every: int) -> None:
    """Run control shared by the training commands: checkpoints, resume, seed, AMP, logging.

    (--input-size and --device come with :func:`add_model_arguments`.)
    """
    p.add_argument("--checkpoint-every", type=int, default=checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-amp", action="store_true", help="train in float32 on CUDA")
    p.add_argument("--log-every", type=int, default=log_every)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
