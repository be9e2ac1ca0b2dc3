"""`i2nq` command line: a thin layer of subcommands, each one library call.

Subcommands live next to the code they drive: every module in `COMMAND_MODULES` has
`add_commands(subparsers)` that registers its subcommands with a `func(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings

from i2nq import __version__
from i2nq.errors import I2NQError, cli_wording

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


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) arrived: unwinds like Ctrl-C, so every temp file is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second one must not cut the clean-up short; main() restores it
    raise Terminated(signum)


def _install_handlers() -> dict[int, object]:
    """SIGTERM and SIGHUP raise Terminated in the main thread (unless ignored, as under nohup); returns the
    handlers they replace."""
    previous: dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, _terminate)
    return previous


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _note  # the library's warnings (e.g. an audio stream re-encoded) as one line each
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = _install_handlers()
    try:
        with cli_wording():  # messages name options as --overwrite, not overwrite=True
            return int(args.func(args) or 0)
    except I2NQError as exc:
        print(f"i2nq: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"i2nq: error: this command needs the Python package {exc.name!r}; install it "
              f"(e.g. pip install 'i2nq[torch]')", file=sys.stderr)
        return 2
    except MemoryError:
        print("i2nq: error: not enough memory; lower --tile or --batch, or use a smaller input", file=sys.stderr)
        return 2
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        print(f"i2nq: terminated by {name}; unfinished outputs were removed", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("i2nq: interrupted; unfinished outputs were removed", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
