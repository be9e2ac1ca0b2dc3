"""The one exception type the CLI turns into a one-line error and a non-zero exit, and the wording of options in
messages: the CLI's (`--overwrite`) when the CLI runs, the Python API's (`overwrite=True`) otherwise."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_CLI = contextvars.ContextVar("i2nq_cli", default=False)


class I2NQError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option.

    The message is a single line that says what is wrong and, where it helps, what to do.
    """


def option(cli: str, api: str) -> str:
    """How a message names an option: `cli` (e.g. "--overwrite") inside the `i2nq` command, `api` (e.g.
    "overwrite=True") for callers of the Python API."""
    return cli if _CLI.get() else api


def setting(cli: str, api: str, value: object) -> str:
    """An option with a value as the user would write it: `--tile 256` in the CLI, `tile=256` in the API."""
    return f"{cli} {value}" if _CLI.get() else f"{api}={value!r}" if isinstance(value, str) else f"{api}={value}"


@contextmanager
def cli_wording() -> Iterator[None]:
    """Messages made inside this block name options as the command line spells them."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)
