"""Atomic file writes: the one way eventlm puts a file in place.

Every file is written to a temporary name beside its target and renamed onto it
(:func:`os.replace`), so a crash, a full disk or a kill never leaves half a checkpoint, tokenizer,
calibration or output file under the final name; on an error the temporary file is removed.

::

    from eventlm.atomic import atomic_path, write_json

    with atomic_path("runs/lut/best.pt") as tmp:
        torch.save(state, tmp)
    write_json("runs/lut/metrics.json", metrics)
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "commit", "temporary_path", "write_bytes", "write_json", "write_text"]


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
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
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
