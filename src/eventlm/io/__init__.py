"""Reading and writing events: Dark Machines CSV (``.csv``, ``.csv.gz``), ROOT (``.root``), Parquet.

The format follows the file suffix. Every reader returns, and every writer takes, the event model of
:mod:`eventlm.events` (GeV inside; the CSV's MeV are converted in :mod:`eventlm.io.csv`).

Reading::

    events = read_events("data/background.csv.gz", max_events=20_000)
    events, report = read_events(paths, on_error="skip", return_report=True)
    for chunk in iter_events(paths, step_size=50_000):   # bounded memory, any file size
        ...

``paths`` is one path or a list; files are read in order and concatenated. ``.root`` input is told
apart by what it holds, TTree or RNTuple alike:

- ``Events`` with ``Particle_pt`` (or an RNTuple field ``Particle``): an eventlm ntuple;
- ``Events`` with NanoAOD collections (``Jet_pt``, ``Muon_pt``, ``MET_pt`` ...): CMS NanoAOD, mapped by
  :mod:`eventlm.io.nanoaod` (options: ``nanoaod=NanoAODOptions(...)``);
- ``CollectionTree`` (or the RNTuple ``EventData``) with ``AnalysisJets`` ...: ATLAS PHYSLITE, mapped
  by :mod:`eventlm.io.physlite` (options: ``physlite=PHYSLITEOptions(...)``).

ROOT and Parquet files that carry extra columns (e.g. ``anomaly_score``, ``token_nll``) come back with
them as extra event fields.

Bad input raises :class:`eventlm.errors.EventFormatError` naming the file, the line (CSV, 1-based) or
entry (ROOT/Parquet, 0-based) and the problem. With ``on_error="skip"`` bad lines/entries are dropped,
logged (``logging`` warning, one per file) and recorded in a :class:`ReadReport`; good events are never
dropped, duplicated or reordered. File-level problems (empty file, truncated gzip, missing tree or
branches, unknown suffix) always raise.

Writing::

    write_events(events, "scores.root", extra_columns={"anomaly_score": scores, "token_nll": nll})

    with EventWriter("scores.root") as out:             # streaming, bounded memory
        for chunk in iter_events("big.csv.gz"):
            out.write(chunk, extra_columns={"anomaly_score": score(chunk)})

Both write to a temporary file in the destination directory and rename it into place on success, so
a crash never leaves a half-written file under the final name. ``extra_columns`` maps a name to a flat
or jagged array with one entry per event; event fields beyond the model's are written as extra columns
too. Every chunk written to one :class:`EventWriter` must carry the same extra columns. CSV cannot hold
extra columns: writing them to ``.csv``/``.csv.gz`` raises ``ValueError``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union, overload

import awkward as ak

from eventlm.atomic import commit, faults_named, temporary_path
from eventlm.errors import EventFormatError, OutputError
from eventlm.events import EVENT_FIELDS, empty_events

#: One event file or several (read in order).
PathsLike = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]]]

log = logging.getLogger(__name__)

#: Event fields beyond the model that the experiment readers add: the event identity (NanoAOD's
#: ``run``/``luminosityBlock``; PHYSLITE's ``runNumber``/``lumiBlock`` under those names, and
#: ``mcChannelNumber``) and what the MET is (``met_flavour``: :data:`eventlm.io.selection.MET_FLAVOURS`).
#: Written to ROOT and Parquet, read back; the CSV cannot hold them.
IDENTITY_FIELDS = ("run", "luminosityBlock", "mcChannelNumber", "met_flavour")
#: Events per chunk yielded by :func:`iter_events` unless told otherwise.
DEFAULT_STEP_SIZE = 100_000

__all__ = [
    "DEFAULT_STEP_SIZE",
    "as_events",
    "EventWriter",
    "ReadReport",
    "Skipped",
    "detect_format",
    "extra_fields",
    "iter_events",
    "read_events",
    "write_events",
]


@dataclass(frozen=True)
class Skipped:
    """One bad line (CSV, 1-based) or entry (ROOT/Parquet, 0-based) that ``on_error="skip"`` dropped."""

    path: str
    problem: str
    line: int | None = None
    entry: int | None = None


@dataclass
class ReadReport:
    """What a read with ``on_error="skip"`` left out."""

    skipped: list[Skipped] = field(default_factory=list)

    def add(self, path, problem: str, *, line: int | None = None, entry: int | None = None) -> None:
        self.skipped.append(Skipped(str(path), problem, line, entry))
        log.debug("skipped %s%s: %s", path, f", line {line}" if line is not None else f", entry {entry}", problem)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def lines(self, path=None) -> list[int]:
        """1-based line numbers of skipped CSV lines (of one file if ``path`` is given)."""
        return [s.line for s in self.skipped if s.line is not None and (path is None or s.path == str(path))]

    def entries(self, path=None) -> list[int]:
        return [s.entry for s in self.skipped if s.entry is not None and (path is None or s.path == str(path))]

    def __str__(self) -> str:
        if not self.skipped:
            return "no bad lines or entries"
        return "\n".join(
            f"{s.path}, {'line ' + str(s.line) if s.line is not None else 'entry ' + str(s.entry)}: {s.problem}"
            for s in self.skipped
        )


def detect_format(path) -> str:
    """``"csv"``, ``"root"`` or ``"parquet"`` from the file name's suffix."""
    name = str(path).lower()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "csv"
    if name.endswith(".root"):
        return "root"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    raise EventFormatError(path, "unknown file format (expected .csv, .csv.gz, .root or .parquet)")


def input_problem(path) -> str | None:
    """What makes ``path`` unreadable as an event file before it is opened, or None: missing, a
    symlink loop, a regular file in the way, a directory, a FIFO, socket or device (reading a FIFO
    that nobody writes to would wait for ever)."""
    import errno
    import stat

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symlink loop (or a path through one)"
        if err.errno == errno.ENOTDIR:
            above = next((p for p in path.parents if p.exists()), None)
            return f"{above} is a file, not a directory"
        if err.errno == errno.ENOENT:
            return "no such file"
        return os.strerror(err.errno or 0) or str(err)
    if stat.S_ISDIR(mode):
        return "is a directory, not an event file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, socket or device)"
    return None


def as_paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def extra_fields(events: ak.Array) -> list[str]:
    """Event fields beyond the event model (extra columns such as ``anomaly_score``)."""
    return [f for f in events.fields if f not in EVENT_FIELDS and f != "particles"]


# --------------------------------------------------------------------------------------------------
# reading


def iter_events(
    paths: PathsLike,
    *,
    step_size: int | None = DEFAULT_STEP_SIZE,
    max_events: int | None = None,
    on_error: str = "raise",
    report: ReadReport | None = None,
    **options,
) -> Iterator[ak.Array]:
    """Yield the events of ``paths`` (in order) in chunks of at most ``step_size`` events.

    Memory stays bounded by the chunk size whatever the file size. ``step_size=None`` lets each
    reader choose: a CSV file then comes in blocks of up to :data:`eventlm.io.csv.MAX_BLOCK_BYTES`
    of text, ROOT in chunks of about :data:`eventlm.io.rootfile.AUTO_STEP` and Parquet in chunks of
    :data:`DEFAULT_STEP_SIZE` events. ``report`` (a :class:`ReadReport`)
    collects what ``on_error="skip"`` dropped. ``options`` go to the experiment readers:
    ``nanoaod=`` a :class:`eventlm.io.nanoaod.NanoAODOptions`, ``physlite=`` a
    :class:`eventlm.io.physlite.PHYSLITEOptions` (each used only for files of its kind), and the
    shortcuts ``process=``, ``met=``, ``btag_branch=``, ``btag_wp=``, ``btag_era=`` (NanoAOD).
    """
    check_reader_options(options)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if step_size is not None and step_size < 1:
        raise ValueError("step_size must be positive")
    report = report if report is not None else ReadReport()
    remaining = max_events
    for path in as_paths(paths):
        if remaining is not None and remaining <= 0:
            return
        problem = input_problem(path)
        if problem == "no such file":
            raise FileNotFoundError(f"no such file: {path}")
        if problem:
            raise EventFormatError(path, problem)
        fmt = detect_format(path)
        before = report.n_skipped
        if fmt == "csv":
            from eventlm.io.csv import iter_csv

            chunks = iter_csv(path, step_size if step_size is not None else remaining, on_error=on_error, report=report)
        elif fmt == "root":
            from eventlm.io.rootfile import AUTO_STEP, iter_root

            step = step_size or remaining or AUTO_STEP
            chunks = iter_root(path, step_size=step, on_error=on_error, report=report, **options)
        else:
            from eventlm.io.parquet import iter_parquet

            step = step_size or min(remaining or DEFAULT_STEP_SIZE, DEFAULT_STEP_SIZE)
            chunks = iter_parquet(path, step_size=step, on_error=on_error, report=report)
        from eventlm.sanity import checked_chunks

        for chunk in checked_chunks(chunks, path, fmt, on_error=on_error, report=report):
            if remaining is not None:
                if len(chunk) > remaining:
                    chunk = chunk[:remaining]
                remaining -= len(chunk)
            if len(chunk):
                yield chunk
            if remaining is not None and remaining <= 0:
                break
        _log_skipped(path, report.skipped[before:])


#: The reader keywords of :func:`iter_events` and :func:`read_events` (for NanoAOD and PHYSLITE files;
#: see :mod:`eventlm.io.nanoaod` and :mod:`eventlm.io.physlite`).
READER_OPTIONS = ("nanoaod", "physlite", "process", "met", "btag_branch", "btag_wp", "btag_era")


def check_reader_options(options: dict) -> None:
    """A keyword that no reader takes is a typo: a ``TypeError`` that names it and the closest
    known keyword, before any file is opened (it was "not a readable ROOT file" for a ROOT file, and
    silently ignored for a CSV file)."""
    import difflib

    for name in sorted(set(options) - set(READER_OPTIONS)):
        close = difflib.get_close_matches(name, READER_OPTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"unknown reader option {name!r}{hint}; the reader options are {', '.join(READER_OPTIONS)}")


def _log_skipped(path, skipped: list[Skipped]) -> None:
    if not skipped:
        return
    where = [s.line if s.line is not None else s.entry for s in skipped]
    what = "lines" if skipped[0].line is not None else "entries"
    shown = ", ".join(map(str, where[:20])) + (", ..." if len(where) > 20 else "")
    log.warning("%s: skipped %d bad %s (%s)", path, len(skipped), what, shown)


@overload
def read_events(paths: PathsLike, *, max_events: int | None = ..., on_error: str = ...,
                return_report: Literal[False] = ..., step_size: int | None = ..., **options) -> ak.Array: ...
@overload
def read_events(paths: PathsLike, *, max_events: int | None = ..., on_error: str = ...,
                return_report: Literal[True], step_size: int | None = ...,
                **options) -> tuple[ak.Array, ReadReport]: ...
def read_events(
    paths: PathsLike,
    *,
    max_events: int | None = None,
    on_error: str = "raise",
    return_report: bool = False,
    step_size: int | None = None,
    **options,
) -> ak.Array | tuple[ak.Array, ReadReport]:
    """All events of ``paths`` (one path or a list, concatenated in order), at most ``max_events``.

    ``step_size`` is the size of the chunks read and then joined (see :func:`iter_events`); the
    default lets each reader choose, which for a CSV file means few, large blocks and no joining.

    Returns the event array, or ``(events, report)`` with ``return_report=True`` (a
    :class:`ReadReport` listing the lines/entries that ``on_error="skip"`` dropped).
    """
    report = ReadReport()
    chunks = list(
        iter_events(paths, step_size=step_size, max_events=max_events, on_error=on_error, report=report, **options)
    )
    if not chunks:
        events = empty_events()
    elif len(chunks) == 1:
        events = chunks[0]
    else:
        events = ak.concatenate(chunks)
    return (events, report) if return_report else events


# --------------------------------------------------------------------------------------------------
# writing


class EventWriter:
    """Write events chunk by chunk to one file (CSV, ROOT or Parquet by suffix), atomically.

    Use as a context manager; ``write(chunk, extra_columns=None)`` appends events. The file appears
    under its final name only when the ``with`` block ends without an exception (or on ``close()``);
    on an exception the temporary file is removed and nothing is left behind.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.format = detect_format(self.path)
        self.n_events = 0
        self._tmp = temporary_path(self.path)
        self._closed = False
        self._extra_names: list[str] | None = None  # fixed by the first chunk
        self._dropped_identity = False
        try:
            with faults_named(self.path):
                self._sink = self._open_sink()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def _open_sink(self):
        if self.format == "csv":
            from eventlm.io.csv import CSVSink

            return CSVSink(self._tmp, gz=str(self.path).lower().endswith(".gz"))
        if self.format == "root":
            from eventlm.io.root import RootSink

            return RootSink(self._tmp)
        from eventlm.io.parquet import ParquetSink

        return ParquetSink(self._tmp)

    def write(self, events: ak.Array, extra_columns: dict | None = None) -> None:
        """Append ``events`` (and their extra columns: one entry per event, flat or jagged)."""
        if self._closed:
            raise ValueError(f"EventWriter for {self.path} is closed")
        extra = {name: events[name] for name in extra_fields(events)}
        if self.format == "csv":  # the CSV has no place for the event identity the readers keep
            dropped = [k for k in extra if k in IDENTITY_FIELDS or k.startswith(("HLT_", "Flag_"))]
            if dropped and not self._dropped_identity:
                log.warning("%s: the Dark Machines CSV cannot hold %s; written without them (ROOT or Parquet "
                            "keep them)", self.path, ", ".join(dropped))
                self._dropped_identity = True
            extra = {k: v for k, v in extra.items() if k not in dropped}
        for name, values in (extra_columns or {}).items():
            values = ak.Array(values) if not isinstance(values, ak.Array) else values
            if len(values) != len(events):
                raise ValueError(f"extra column {name!r} has {len(values)} entries for {len(events)} events")
            if name in EVENT_FIELDS or name == "particles":
                raise ValueError(f"extra column {name!r} clashes with an event-model field")
            extra[name] = values
        events = events[[f for f in events.fields if f in EVENT_FIELDS or f == "particles"]]
        if self._extra_names is None:
            self._extra_names = sorted(extra)
        elif sorted(extra) != self._extra_names:
            differ = sorted(set(extra).symmetric_difference(self._extra_names))
            raise OutputError(self.path, f"its inputs differ in the columns {', '.join(differ)} (an experiment "
                              "file's events carry their run and lumi block, a Dark Machines CSV's do not): "
                              "write them to separate outputs")
        with faults_named(self.path):  # a full disk names the output, not the temporary file
            self._sink.write(ak.to_packed(events), {k: ak.to_packed(v) for k, v in extra.items()})
        self.n_events += len(events)

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        if self._closed:
            return
        self._closed = True
        try:
            with faults_named(self.path):
                self._sink.close()
                commit(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Discard everything written (the final name is left untouched)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sink.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away
            pass
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def as_events(source: ak.Array | PathsLike, max_events: int | None = None, **options) -> ak.Array:
    """An event array from ``source``: paths (read with :func:`read_events`, ``options`` the reader
    options) or an event array (returned as it is, cut to ``max_events`` when given)."""
    if isinstance(source, ak.Array):
        return source if not max_events else source[:max_events]
    return read_events(source, max_events=max_events or None, **options)


def write_events(events: ak.Array, path: str | os.PathLike[str], extra_columns: dict | None = None) -> Path:
    """Write ``events`` (plus ``extra_columns``) to ``path`` in the format of its suffix, atomically."""
    with EventWriter(path) as out:
        out.write(events, extra_columns)
    return out.path

