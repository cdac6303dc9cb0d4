"""The `unimask` command line.

Each subcommand lives in the module that owns its job and exposes `add_parser(subparsers)`, which registers the
subcommand and sets `func` on it. The modules are imported lazily by name so `unimask --help` stays fast and an
optional extra that is not installed only breaks the commands that need it.

Every command checks its options (and a config file its values) before any work starts. A refused input, from
there or later, is an `unimask.InputError`: it is printed as `error: <message>` (the message names the setting, the
value, what is allowed and the fix) and the command exits with status 2, without a traceback; `unimask --debug
COMMAND ...` shows the traceback too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Modules that register subcommands, in the order `--help` lists them.
COMMAND_MODULES = [
    "unimask.tokenizers.text",
    "unimask.training.fit_actions",
    "unimask.training.vq_trainer",
    "unimask.training.builtin_tokenizers",
    "unimask.training.data.cli",
    "unimask.training.launch",
    "unimask.training.evaluation.cli",
    "unimask.training.quickstart",
    "unimask.training.report",
    "unimask.demos.app",
]


def build_parser() -> argparse.ArgumentParser:
    from unimask import __version__

    parser = argparse.ArgumentParser(
        prog="unimask",
        description="One masked discrete-diffusion Transformer for text, images and robot actions.",
    )
    parser.add_argument("--version", action="version", version=f"unimask {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a refused input")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            stub = subparsers.add_parser(name.rsplit(".", 1)[-1], help=f"(unavailable: {err})")
            stub.set_defaults(func=lambda args, err=err: _missing_extra(err))
            continue
        module.add_parser(subparsers)
    return parser


def _missing_extra(err: ImportError) -> int:
    print(f"unimask: this command needs a package that is not installed ({err}). "
          "Install the extras with: pip install 'unimask[all]'", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from unimask.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
