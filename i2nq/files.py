"""Safe file handling shared by every command: check inputs and outputs up front, write outputs to a temp
file next to the target and publish it under its name only when complete, so no partial output ever appears
and no file is replaced unless the caller allowed it. Standard library only.

Guarantees (docs/reliability.md tells users):

- an output appears under its name complete, or not at all: it is written to `.{stem}.{8 hex}.part{suffix}`
  beside it, flushed to disk (fsync of the file, then of the folder) and then published;
- publishing never replaces a file that another run or user created meanwhile unless replacing was allowed
  (`--overwrite`): the name is created with a hard link, which fails when the name exists; the finished result
  is then kept under a visible name (`{stem}.i2nq-{8 hex}{suffix}`) and the error says where;
- a temp file is locked (flock) by its writer for as long as it exists; temp files of our naming left behind by a
  run that was killed (SIGKILL, power loss) are removed by the next run that writes into that folder, once it
  sees that their writer is gone (the lock is free) and that they are older than itself.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from i2nq.errors import I2NQError, option

try:  # POSIX: the temp-file locks; elsewhere temp files are neither locked nor cleaned up
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Temp files of atomic_output: `.{stem}.{8 hex}.part{suffix}`.
TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{8}\.part(\.[^./]*)?$")
#: When this process started using i2nq: temp files modified since then are never taken for leftovers.
RUN_START = time.time()

_verdicts: dict[str, bool] = {}  # output path -> whether check_destination() allowed replacing it
_scanned_folders: set[str] = set()  # folders already cleaned of leftovers by this process
_lock = threading.Lock()

_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EXDEV}


def check_source(path: str | Path) -> Path:
    """The input path, or I2NQError when it does not exist or is neither a regular file nor a folder.

    FIFOs, devices and sockets are refused without being opened (opening a FIFO would block)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        raise I2NQError(f"input not found: {path}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise I2NQError(f"input {path} is not a regular file (it is {_kind(mode)}); give an image, a video or a folder")
    return path


def check_destination(dst: str | Path, src: str | Path | None = None, overwrite: bool = False) -> Path:
    """The output path, or I2NQError when its folder is missing or read-only, it is the input, or it exists.

    With `overwrite`, an existing regular file may be replaced (atomic_output then replaces it); anything else
    under that name (a folder, a FIFO, a device) never is."""
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
    try:
        mode = dst.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not overwrite:
        raise I2NQError(f"output {dst} exists; pass {option('--overwrite', 'overwrite=True')} to replace it")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise I2NQError(f"output {dst} exists and is {_kind(mode)}, not a regular file; it is never replaced")
    with _lock:
        _verdicts[os.path.abspath(dst)] = overwrite
    return dst


@contextmanager
def atomic_output(dst: str | Path, overwrite: bool | None = None) -> Iterator[Path]:
    """Yield a temp path next to `dst` (same suffix, so formats are guessed right) for the caller to write; when
    the block ends normally, flush it to disk and publish it as `dst`; on any error or interrupt delete it.

    overwrite: whether an existing `dst` may be replaced. None: as check_destination() decided when it last
    checked this path (a path it found free is only ever created, never replaced); a path it never checked is
    replaced only if it existed when the block started (a file the caller keeps up to date, like a training
    state). Without it, a `dst` that appears while the block runs is left alone: the finished result is kept
    under a visible name beside it and I2NQError says where. Write errors (a full disk included) are one-line
    I2NQErrors and leave nothing behind."""
    dst = Path(dst)
    if overwrite is None:
        with _lock:
            overwrite = _verdicts.pop(os.path.abspath(dst), None)
        if overwrite is None:
            overwrite = os.path.lexists(dst)
    clean_stale_temps(dst.parent)
    tmp, lock_fd = _create_temp(dst)
    try:
        yield tmp
        _sync(tmp)
        # some writers (safetensors) create private 0600 files: give the output the mode a plainly created file
        # would have, or keep the mode of the file it replaces
        os.chmod(tmp, dst.stat().st_mode & 0o7777 if overwrite and dst.is_file() else 0o666 & ~_umask())
        _publish(tmp, dst, overwrite)
        _sync_folder(dst.parent)
    except OSError as exc:
        raise I2NQError(f"cannot write {dst}: {_reason(exc)}") from None
    except Exception as exc:  # a writer's own error type for a full disk (safetensors raises its own)
        if _no_space(exc):
            raise I2NQError(f"cannot write {dst}: no space left on device") from None
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # releases the lock, after the temp file is gone


def keep_aside(tmp: Path, name: Path) -> Path:
    """Publish a copy of the (finished) temp file `tmp` of an atomic_output block under `name`, or, when that
    name is taken, `{stem}.{8 hex}{suffix}` beside it; never replaces anything. Returns the name it got. The
    block's own output is unaffected (an error raised next still deletes `tmp`). Used to keep the finished part
    of a job that failed midway."""
    try:
        _sync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        for attempt in range(100):
            kept = name if attempt == 0 else name.with_name(f"{name.stem}.{uuid.uuid4().hex[:8]}{name.suffix}")
            try:
                os.link(tmp, kept, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                if os.path.lexists(kept):
                    continue
                import shutil

                shutil.copyfile(tmp, kept)  # no hard links here: a copy (the temp file is deleted next)
            _sync_folder(kept.parent)
            return kept
    except OSError as exc:
        raise I2NQError(f"cannot write {name}: {_reason(exc)}") from None
    raise I2NQError(f"cannot find a free name beside {name}")  # pragma: no cover


@contextmanager
def scratch_file(dst: str | Path) -> Iterator[Path]:
    """A temp file beside `dst`, named and locked like atomic_output's (so a leftover is cleaned up the same way),
    that is always deleted at the end: for trial writes."""
    tmp, lock_fd = _create_temp(Path(dst))
    try:
        yield tmp
    finally:
        try:
            tmp.unlink(missing_ok=True)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)


def _create_temp(dst: Path) -> tuple[Path, int | None]:
    """Create `.{stem}.{8 hex}.part{suffix}` beside dst exclusively and lock it for as long as it lives."""
    for _ in range(100):
        tmp = dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.part{dst.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise I2NQError(f"cannot write {dst}: {_reason(exc)}") from None
        if fcntl is None:
            os.close(fd)
            return tmp, None
        fcntl.flock(fd, fcntl.LOCK_EX)  # never contended: the name is new
        return tmp, fd
    raise I2NQError(f"cannot create a temp file beside {dst}")  # pragma: no cover


def _sync(path: Path) -> None:
    """Flush the file's data to disk (any descriptor of the file flushes all of it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of a published file; some file systems cannot fsync a folder (ignored there)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Give the finished temp file its final name: replace `dst` only with `overwrite`, else create it."""
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst, follow_symlinks=False)  # fails with EEXIST if the name exists, atomically
    except FileExistsError:
        raise _taken(tmp, dst) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # no hard links on this file system (FAT, some network file systems): check, then rename. The
        # guarantee weakens here to a window of microseconds between the check and the rename.
        if os.path.lexists(dst):
            raise _taken(tmp, dst) from None
        os.rename(tmp, dst)
        return
    tmp.unlink()


def _taken(tmp: Path, dst: Path) -> I2NQError:
    """The error for a `dst` another run or user created first; this run's result is kept beside it."""
    token = tmp.name.rsplit(".part", 1)[0][-8:]
    for attempt in range(100):
        kept = dst.with_name(f"{dst.stem}.i2nq-{token if attempt == 0 else uuid.uuid4().hex[:8]}{dst.suffix}")
        try:
            os.link(tmp, kept, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS or os.path.lexists(kept):
                break
            os.rename(tmp, kept)
        return I2NQError(f"{dst} was created by another run or user while this run was writing it; it was left "
                         f"as it is, and this run's result is in {kept}")
    return I2NQError(f"{dst} was created by another run or user while this run was writing it; it was left as it "
                     "is, and this run's result was discarded")


def clean_stale_temps(folder: str | Path, force: bool = False) -> list[Path]:
    """Remove the temp files of our naming in `folder` whose writer is gone (their lock is free), that are older
    than this run and that belong to this user; once per folder and process unless `force`. Returns them.

    A live run's temp file is never touched: its writer holds its lock until it is published or deleted."""
    key = os.path.abspath(folder)
    with _lock:
        if fcntl is None or (key in _scanned_folders and not force):
            return []
        _scanned_folders.add(key)
    removed = []
    try:
        entries = [e.name for e in os.scandir(folder) if TEMP_NAME.match(e.name)]
    except OSError:
        return []
    for name in entries:
        path = Path(folder) / name
        if _remove_if_stale(path):
            removed.append(path)
    if removed:
        shown = ", ".join(p.name for p in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        warnings.warn(f"removed {len(removed)} unfinished temp file(s) that an interrupted run left in "
                      f"{folder}: {shown}", stacklevel=3)
    return removed


def _remove_if_stale(path: Path) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_mtime >= RUN_START or st.st_uid != os.geteuid():
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not os.path.samestat(os.fstat(fd), st):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its writer is alive
        if not os.path.samestat(path.lstat(), st):
            return False
        path.unlink()
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device"
    return exc.strerror or str(exc)


def _no_space(exc: BaseException) -> bool:
    """Whether an exception from a writer library means the disk (or quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return any(s in text for s in ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded"))


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask both sets and returns it)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask
