"""Safe file handling shared by every command: check inputs and outputs up front, write outputs to a temp
file next to the target and rename it, so no partial output ever appears. Standard library only."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from i2nq.errors import I2NQError


def check_source(path: str | Path) -> Path:
    """The input path, or I2NQError when it does not exist."""
    path = Path(path)
    if not path.exists():
        raise I2NQError(f"input not found: {path}")
    return path


def check_destination(dst: str | Path, src: str | Path | None = None, overwrite: bool = False) -> Path:
    """The output path, or I2NQError when its folder is missing or read-only, it is the input, or it exists."""
    dst = Path(dst)
    if src is not None and Path(src).resolve() == dst.resolve():
        raise I2NQError(f"output {dst} is the input; choose another output path")
    folder = dst.parent
    if not folder.is_dir():
        raise I2NQError(f"output folder {folder} does not exist or is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise I2NQError(f"output folder {folder} is not writable")
    if dst.is_dir():
        raise I2NQError(f"output {dst} is a folder; give a file name")
    if dst.exists() and not overwrite:
        raise I2NQError(f"output {dst} exists; pass --overwrite (overwrite=True) to replace it")
    return dst


@contextmanager
def atomic_output(dst: Path) -> Iterator[Path]:
    """Yield a temp path next to `dst` (same suffix, so formats are guessed right); rename it to `dst`
    on success, delete it on any error or interrupt, so a partial output never appears."""
    tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.part{dst.suffix}")
    try:
        yield tmp
        # some writers (safetensors) create private 0600 files: give the output the mode a plainly created file
        # would have, or keep the mode of the file it replaces
        os.chmod(tmp, dst.stat().st_mode & 0o7777 if dst.exists() else 0o666 & ~_umask())
        os.replace(tmp, dst)
    except OSError as exc:
        raise I2NQError(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask both sets and returns it)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask
