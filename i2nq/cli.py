"""`i2nq` command line: a thin layer of subcommands, each one library call.

Subcommands live next to the code they drive: every module in `COMMAND_MODULES` has
`add_commands(subparsers)` that registers its subcommands with a `func(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from i2nq import __version__
from i2nq.errors import I2NQError

COMMAND_MODULES = (
    "i2nq.calib.commands",
    "i2nq.export.commands",
    "i2nq.runtime.commands",
    "i2nq.plugins.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="i2nq", description="I²NQ super-resolution: quantize, export, upscale.")
    parser.add_argument("--version", action="version", version=f"i2nq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not installed/written yet must not break the others
            if exc.name and exc.name.startswith("i2nq"):
                continue
            raise
        module.add_commands(sub)
    return parser


def _note(message, category, filename, lineno, line=None) -> str:
    return f"i2nq: note: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _note  # the library's warnings (e.g. an audio stream re-encoded) as one line each
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except I2NQError as exc:
        print(f"i2nq: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"i2nq: error: this command needs the Python package {exc.name!r}; install it "
              f"(e.g. pip install 'i2nq[torch]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("i2nq: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
