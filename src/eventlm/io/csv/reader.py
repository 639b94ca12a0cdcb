"""Parsing blocks of CSV lines into events: the scan's result converted, validated and built into
the event model, and bad lines found, described and reported (or skipped).

The reader never loops over lines in Python. Numbers the compiled scan could not convert exactly
(long event weights, anything odd) are converted by one Arrow string-to-number cast, which also
validates them. Only when something is wrong are the offending lines described one by one
(:func:`diagnose_line`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventlm.errors import EventFormatError
from eventlm.events import DARKMACHINES_CODES, empty_events, make_events, make_particles, string_array
from eventlm.io.csv.blocks import iter_piece_blocks
from eventlm.io.csv.scan import CODES, FB_INT, MEV_PER_GEV, ScanResult, join, scan_block, scan_piece

_NL, _CR = ord("\n"), ord("\r")


class _BadLines(Exception):
    """Internal: the block has malformed lines (indices within the block)."""

    def __init__(self, lines: np.ndarray):
        super().__init__(f"{len(lines)} bad lines")
        self.lines = np.unique(lines)


def iter_csv(path: Path, max_lines: int | None = None, *, on_error: str = "raise", report=None) -> Iterator[ak.Array]:
    """The events of a CSV file in blocks of at most ``max_lines`` lines (of up to
    :data:`eventlm.io.csv.MAX_BLOCK_BYTES` of text when None); the pieces of a ``.csv.gz`` block
    are scanned while the next ones are inflated."""
    for line0, pieces in iter_piece_blocks(path, max_lines):
        yield parse_pieces(pieces, path, line0=line0, on_error=on_error, report=report)


def parse_pieces(pieces: Iterable[np.ndarray], path, *, line0: int = 0, on_error: str = "raise", report=None) -> ak.Array:
    """:func:`parse_block` of the lines of consecutive ``pieces`` (each of whole lines), scanning
    each piece as soon as it comes, on two threads."""
    pieces = iter(pieces)
    first = next(pieces, None)
    if first is None:
        return empty_events()
    second = next(pieces, None)
    if second is None:
        return parse_block(first, path, line0=line0, on_error=on_error, report=report)
    kept, futures = [], []
    with ThreadPoolExecutor(min(2, os.cpu_count() or 1), thread_name_prefix="eventlm-csv-scan") as pool:
        for piece in itertools.chain((first, second), pieces):
            kept.append(_normalized(piece))
            futures.append(pool.submit(scan_piece, kept[-1]))
        results = [f.result() for f in futures]
    try:
        return _build(join(results))
    except _BadLines:  # describe, report or skip them: on the joined text, as for one block
        return parse_block(np.concatenate(kept), path, line0=line0, on_error=on_error, report=report)


def _normalized(buf: np.ndarray) -> np.ndarray:
    """``buf`` without carriage returns (Windows line ends) and ending with a newline."""
    from eventlm.io.csv.kernel import count_byte

    if buf.size and count_byte(buf, _CR):
        buf = buf[buf != _CR]
    if buf.size and buf[-1] != _NL:
        buf = np.concatenate([buf, np.array([_NL], dtype=np.uint8)])
    return buf


def parse_block(data, path, *, line0: int = 0, on_error: str = "raise", report=None) -> ak.Array:
    """Parse whole CSV lines (``data``: bytes or a ``uint8`` array; the first is line ``line0 + 1``
    of ``path``) into events.

    ``on_error="raise"`` raises :class:`EventFormatError` for the first bad line; ``"skip"`` drops bad
    lines, recording them in ``report`` (a :class:`eventlm.io.ReadReport`).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    buf = _normalized(buf)
    # 1-based file line of each line of ``buf``; materialized only once lines are dropped
    line_numbers: np.ndarray | None = None
    # A block with bad lines is cut down to its good lines and parsed again (once: the scan finds
    # every bad line of a block in one go, the loop is a safety net).
    skipped: list[tuple[int, str]] = []
    try:
        for _ in range(16):
            try:
                return _build(scan_block(buf)) if buf.size else empty_events()
            except _BadLines as bad:
                starts, ends = _line_bounds(buf)
                if line_numbers is None:
                    line_numbers = np.arange(line0 + 1, line0 + 1 + len(ends), dtype=np.int64)
                if on_error != "skip":
                    i = int(bad.lines[0])
                    raw = bytes(buf[starts[i]:ends[i]])
                    raise EventFormatError(path, diagnose_line(raw), line=int(line_numbers[i])) from None
                for i in bad.lines:
                    skipped.append((int(line_numbers[i]), diagnose_line(bytes(buf[starts[i]:ends[i]]))))
                keep = np.ones(len(starts), dtype=bool)
                keep[bad.lines] = False
                line_numbers = line_numbers[keep]
                buf = _select_lines(buf, starts, ends, keep)
        raise AssertionError("CSV validation did not converge")  # pragma: no cover
    finally:
        if report is not None:
            for line, problem in sorted(skipped):
                report.add(path, problem, line=line)


def _line_bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ends = np.flatnonzero(buf == _NL)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    return starts, ends


def _select_lines(buf: np.ndarray, starts, ends, keep: np.ndarray) -> np.ndarray:
    """The bytes of the kept lines (newline included), vectorized."""
    lengths = (ends - starts + 1)[keep]
    if not len(lengths):
        return buf[:0]
    first = starts[keep]
    offsets = np.repeat(first - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return buf[np.arange(int(lengths.sum())) + offsets]


def _build(scan: ScanResult) -> ak.Array:
    """The events of a scan: fallback numbers converted (by Arrow) and scattered into the columns,
    or :class:`_BadLines` if any line is bad."""
    bad = scan.bad
    if len(scan.fb_col):  # numbers the scan left to Arrow: convert, validate, scatter
        fb_col, fb_row, fb_line = scan.fb_col, scan.fb_row, scan.fb_line
        strings = pa.LargeStringArray.from_buffers(
            len(fb_col), pa.py_buffer(scan.fb_off), pa.py_buffer(scan.fb_chars))
        is_int = fb_col == FB_INT
        bad_values = []
        targets = (scan.weight, scan.met, scan.met_phi, scan.E, scan.pt, scan.eta, scan.phi, scan.event_id)
        for type_, mask in ((pa.int64(), is_int), (pa.float64(), ~is_int)):
            if not mask.any():
                continue
            values, wrong = _cast(strings if mask.all() else strings.filter(pa.array(mask)), type_)
            if wrong is not None:
                bad_values.append(fb_line[mask][wrong])
                continue
            cols, rows = fb_col[mask], fb_row[mask]
            for col, target in enumerate(targets):
                sel = cols == col
                if sel.any():
                    v = values[sel]
                    with np.errstate(over="ignore"):  # beyond float32: inf, as in the scan (sanity rules decide)
                        target[rows[sel]] = v / MEV_PER_GEV if col in (1, 3, 4) else v
        if bad_values:
            bad = np.concatenate([bad, *bad_values])
    if len(bad):
        raise _BadLines(bad)
    particles = make_particles(scan.kind, scan.charge, scan.pt, scan.eta, scan.phi, scan.E, scan.counts)
    return make_events(
        event_id=scan.event_id, process=string_array(scan.proc_off, scan.proc_chars), weight=scan.weight,
        met=scan.met, met_phi=scan.met_phi, particles=particles,
    )


def _cast(strings: pa.Array, type_: pa.DataType) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(values, None)``, or ``(None, indices of the strings that are not finite numbers)``."""
    if pa.types.is_integer(type_):  # Arrow reads no '+' sign on integers (Python's int() does)
        strings = pc.replace_substring_regex(strings, r"^\+", "")
    try:
        values = pc.cast(strings, type_).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pattern = r"^-?\d+$" if pa.types.is_integer(type_) else r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
        ok = pc.match_substring_regex(strings, pattern).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(~ok)
        if not len(wrong):  # the pattern and Arrow disagree: ask Arrow string by string
            wrong = np.array([i for i, s in enumerate(strings) if not _casts(s, type_)], dtype=np.int64)
        return None, wrong
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            return None, np.flatnonzero(~finite)
    return values, None


def _casts(string: pa.Scalar, type_: pa.DataType) -> bool:
    try:
        value = pc.cast(pa.array([string.as_py()], pa.large_string()), type_)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def diagnose_line(raw: bytes) -> str:
    """Describe what is wrong with one CSV line (only called on lines that failed validation)."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    if not text.strip():
        return "empty line"
    if not text.endswith(";"):
        return "line does not end with ';' (truncated line or missing trailing ';')"
    fields = text[:-1].split(";")
    if len(fields) < 5:
        return f"expected 5 event fields (event_id;process;weight;MET;METphi), found {len(fields)}"
    names = ("event_id", "process", "weight", "MET", "METphi")
    for name, value in zip(names, fields[:5]):
        if name == "process":
            if not value:
                return "empty process label"
            continue
        problem = _number_problem(value, integer=name == "event_id")
        if problem:
            return f"{name}: {problem}"
    for k, obj in enumerate(fields[5:], start=1):
        values = obj.split(",")
        if len(values) != 5:
            return f"object {k} ({obj!r}) has {len(values)} values, expected 5 (code,E,pt,eta,phi)"
        if values[0] not in DARKMACHINES_CODES:
            return f"object {k}: unknown object code {values[0]!r} (known: {', '.join(CODES)})"
        for name, value in zip(("E", "pt", "eta", "phi"), values[1:]):
            problem = _number_problem(value)
            if problem:
                return f"object {k} {name}: {problem}"
    return "malformed line"  # pragma: no cover - validation and diagnosis disagree


def _number_problem(value: str, *, integer: bool = False) -> str | None:
    if not value.isascii() or "_" in value:  # Python's int() and float() take these, the reader does not
        return (f"not a{'n integer' if integer else ' number'}: {value!r} (ASCII digits only: no '_' "
                "separators, no other scripts' digits)")
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        return f"not a{'n integer' if integer else ' number'}: {value!r}"
    if integer and not -(2**63) <= number < 2**63:
        return f"integer out of the 64-bit range: {value!r}"
    if not math.isfinite(number):
        return f"non-finite value {value!r}"
    return None
