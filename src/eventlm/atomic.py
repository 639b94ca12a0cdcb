"""Atomic file writes: the one way eventlm puts a file in place.

Every file is written to a temporary name beside its target and renamed onto it
(:func:`os.replace`), so a crash, a full disk or a kill never leaves half a checkpoint, tokenizer,
calibration or output file under the final name; on an error the temporary file is removed.

The output contract of every command that writes: :func:`check_location` before any work (the
output exists as the wrong kind, a symlink loop, a path under a regular file, a missing or read-only
directory); a fault while writing (full disk, I/O error, read-only file system) becomes an
:class:`eventlm.errors.OutputError` naming the final name (:func:`faults_named`, inside
:func:`atomic_path`); a directory a command creates is removed again when it fails
(:func:`removed_on_error`).

::

    from eventlm.atomic import atomic_path, write_json

    with atomic_path("runs/lut/best.pt") as tmp:
        torch.save(state, tmp)
    write_json("runs/lut/metrics.json", metrics)
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from eventlm.errors import OutputError

__all__ = ["atomic_path", "check_location", "commit", "faults_named", "removed_on_error", "save_torch",
           "temporary_path", "write_bytes", "write_json", "write_text"]

#: errno values of a fault while writing (not of a wrong path): full disk, quota, file too large,
#: I/O error, read-only file system.
WRITE_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def write_fault(err: BaseException, path) -> OutputError | None:
    """``err`` as an :class:`OutputError` naming ``path`` when it is a fault while writing, else None."""
    if isinstance(err, OutputError):
        return err
    if isinstance(err, OSError) and err.errno in WRITE_FAULTS:
        return OutputError(path, f"cannot write it: {os.strerror(err.errno)}")
    return None


@contextlib.contextmanager
def faults_named(path) -> Iterator[None]:
    """A write fault inside the block (full disk, I/O error) raised as an :class:`OutputError`
    naming ``path`` (the final name, not the temporary file the fault happened in)."""
    try:
        yield
    except OSError as err:
        fault = write_fault(err, path)
        if fault is None:
            raise
        raise fault from err


def _stat(path: Path):
    """``os.stat(path)`` or None when nothing is there; a symlink loop or a regular file in the
    way is an :class:`OutputError`."""
    try:
        return os.stat(path)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        if err.errno == errno.ELOOP:
            raise OutputError(path, "is a symlink loop (or a path through one)") from None
        if err.errno == errno.ENOTDIR:
            above = next((p for p in path.parents if p.exists()), None)
            raise OutputError(path, f"{above} is a file, not a directory") from None
        raise OutputError(path, os.strerror(err.errno or 0) or str(err)) from None


def _not_writable(folder: Path) -> str | None:
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    return f"{folder} is not writable" + (" (a read-only file system)" if read_only else "")


def check_location(path, *, directory: bool = False) -> Path:
    """An output location checked before any work starts; raises :class:`OutputError` naming it.

    A file (``directory=False``) must be a regular file or absent, in an existing directory that
    can be written; a directory may be missing (it is created, parents too) but must not exist as
    anything else, and the nearest existing folder above it must be writable. Refused: a symlink
    loop, a path under a regular file, a FIFO, socket or device, a read-only file system.
    """
    path = Path(path)
    st = _stat(path)
    if st is not None:
        if directory and not stat.S_ISDIR(st.st_mode):
            raise OutputError(path, "exists and is not a directory")
        if not directory and stat.S_ISDIR(st.st_mode):
            raise OutputError(path, "output is a directory")
        if not directory and not stat.S_ISREG(st.st_mode):
            raise OutputError(path, "exists and is not a regular file (a FIFO, socket or device)")
        problem = _not_writable(path) if directory else None
        if problem is None and not directory and not os.access(path, os.W_OK):
            problem = "exists and is not writable"
        if problem:
            raise OutputError(path, problem)
    folder = path if st is not None and directory else (path.parent if str(path.parent) else Path("."))
    if directory:
        while _stat(folder) is None and folder != folder.parent:
            folder = folder.parent
    elif _stat(folder) is None:
        raise OutputError(path, f"directory {folder} does not exist")  # (not created: a typo is likelier)
    problem = _not_writable(folder)
    if problem:
        raise OutputError(path, problem)
    return path


@contextlib.contextmanager
def removed_on_error(path, *, keep_interrupted: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """A directory (or file) this block creates is removed again (parents it created too) when the
    block fails, so a failed command leaves nothing under the final name. What existed before is left
    as it is. ``keep_interrupted(path)``: keep it after Ctrl-C or SIGTERM when this says so (a training
    that ``--resume`` can continue)."""
    path = Path(path)
    top = None  # the highest folder that does not exist yet
    for folder in (path, *path.parents):
        if _stat(folder) is not None:
            break
        top = folder
    try:
        yield path
    except BaseException as err:
        interrupted = not isinstance(err, Exception)
        if top is not None and os.path.lexists(top) and not (interrupted and keep_interrupted
                                                              and keep_interrupted(path)):
            if top.is_dir() and not top.is_symlink():
                shutil.rmtree(top, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    top.unlink()
        raise


def temporary_path(path) -> Path:
    """A hidden name beside ``path``, unique to this process and call, keeping the suffix (numpy's
    ``savez`` appends ``.npz`` to a name without it): ``runs/a/best.pt`` -> ``runs/a/.best.tmp-1234-9f2c0a1b.pt``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def commit(tmp, path) -> Path:
    """Rename the finished ``tmp`` onto ``path`` (atomic on one file system); a file that is
    overwritten keeps its permissions."""
    path = Path(path)
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(path, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    if mkdir:
        with faults_named(path):
            path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with faults_named(path):
            yield tmp
            commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path, obj, *, indent: int = 1) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


def save_torch(obj, path) -> Path:
    """``torch.save(obj)`` to ``path``, atomically. Serialized in memory first: torch's own writer
    reports a full disk as an opaque ``RuntimeError`` ("unexpected pos ..."), a plain write as
    ``ENOSPC``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getvalue())
