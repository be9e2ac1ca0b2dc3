"""The one exception type the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations


class I2NQError(Exception):
    """A user-facing error: bad input, a missing file, an unsupported option.

    The message is a single line that says what is wrong and, where it helps, what to do.
    """
