"""Progress of the long commands: a bar with a total and an ETA on a terminal, one line per file elsewhere.

``progress_bar(total, desc=..., unit=...)`` gives a tqdm bar when stderr is a terminal. Written to a log
file (no terminal) a bar's carriage-return updates are thousands of lines of noise, so there it gives
:class:`LineProgress` instead: nothing per update, one INFO line per finished file (``file_done``) and
one at the end (:func:`quiet` holds loggers back inside a block). While a bar is shown, log records are written above it (tqdm's
``logging_redirect_tqdm``), never into it.

``count_events(paths, max_events)`` is the total of a bar: ROOT and Parquet files know their entry
counts without reading them; a CSV file does not (None: a bar without a total, still with a rate).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet(*names: str, level: int = logging.ERROR):
    """The loggers ``names`` held at ``level`` inside the block (what the user has seen already or
    need not see: a warm-up read, deliberate edge cases, a third party's passes), restored after."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, before in zip(loggers, levels):
            lg.setLevel(before)


def on_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def count_events(paths, max_events: int | None = None) -> int | None:
    """Entries of ``paths`` where the files say so without being read (ROOT, Parquet); None for CSV."""
    total = 0
    for path in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        n = _entries(path)
        if n is None:
            return max_events
        total += n
    return total if max_events is None else min(total, max_events)


def _entries(path: Path) -> int | None:
    name = path.name.lower()
    try:
        if name.endswith(".root"):
            import uproot

            with uproot.open(path) as f:
                for key in ("Events", "CollectionTree", "EventData"):
                    if key in f:
                        return int(f[key].num_entries)
            return None
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # noqa: BLE001 - only a bar's total: the reader reports a bad file properly
        return None
    return None


class LineProgress:
    """A progress 'bar' for a log file: one INFO line per finished file and one at the end."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self._file_start = 0
        self._t0 = self._file_t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def file_done(self, path) -> None:
        now = time.perf_counter()
        n = self.n - self._file_start
        of = f" ({self.n} of {self.total})" if self.total else ""
        log.info("%s %s: %d %ss in %.1f s%s", self.desc, Path(path).name, n, self.unit, now - self._file_t0, of)
        self._file_start, self._file_t0 = self.n, now

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar:
    """tqdm with ``file_done`` (a no-op: the bar shows it) and log records written above the bar."""

    def __init__(self, total, desc, unit, leave):
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()
        self._bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=leave)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def file_done(self, path) -> None:
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(LineProgress):
    def file_done(self, path) -> None:
        pass


def progress_bar(total: int | None, *, desc: str, unit: str = "event", enabled: bool = True,
                 leave: bool = True, stream=None):
    """A bar on a terminal, :class:`LineProgress` elsewhere, nothing when ``enabled`` is False."""
    if not enabled:
        return _Silent(total, desc, unit)
    if on_terminal(stream):
        return _Bar(total, desc, unit, leave)
    return LineProgress(total, desc, unit)
