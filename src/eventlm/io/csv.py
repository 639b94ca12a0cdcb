"""The Dark Machines CSV format (``.csv``, ``.csv.gz``): vectorized reader and writer.

One event per line, energies in MeV (converted to GeV here and nowhere else)::

    event_id;process_id;event_weight;MET;METphi;obj1,E1,pt1,eta1,phi1;...;

The reader never loops over lines in Python. A block of whole lines is handled as one byte array:
the separators (``;``, ``,``, newline) are located with numpy, the tokens between them become one
Arrow string array (the separators are squeezed out, so the token offsets stay contiguous), and the
numbers are converted by Arrow's string-to-float cast. Validation is in bulk too: the expected
separator at every token position is computed from the token's index within its line and compared
with the one found, the casts fail (or give non-finite values) on bad numbers, and unknown object
codes come back as nulls from ``index_in``. Only when something is wrong are the offending lines
located (still vectorized) and described one by one, with a small diagnosis of just those lines.

The writer formats with Arrow's float-to-string cast (shortest round-tripping text) and joins with
Arrow string kernels, so it is vectorized too. Extra columns cannot be written to CSV: the format
has no place for them (``ValueError``; write ``.root`` or ``.parquet`` instead).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventlm.errors import EventFormatError
from eventlm.events import (
    CODES_BY_KIND,
    DARKMACHINES_CODES,
    empty_events,
    make_events,
    make_particles,
)

MEV_PER_GEV = 1000.0
#: Bytes read from disk per block while streaming (whole lines are carried over between blocks).
BLOCK_BYTES = 8 << 20

_SEMI, _COMMA, _NL, _CR = ord(";"), ord(","), ord("\n"), ord("\r")
_CODES = list(DARKMACHINES_CODES)
_CODE_KIND = np.array([int(DARKMACHINES_CODES[c][0]) for c in _CODES], dtype=np.int8)
_CODE_CHARGE = np.array([DARKMACHINES_CODES[c][1] for c in _CODES], dtype=np.int8)
_CODE_SET = pa.array(_CODES, type=pa.string())


class _BadLines(Exception):
    """Internal: the block has malformed lines (indices within the block)."""

    def __init__(self, lines: np.ndarray):
        super().__init__(f"{len(lines)} bad lines")
        self.lines = np.unique(lines)


def is_csv(path) -> bool:
    name = str(path).lower()
    return name.endswith(".csv") or name.endswith(".csv.gz")


# --------------------------------------------------------------------------------------------------
# reading


def _open(path: Path):
    if str(path).lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_line_blocks(path: Path, max_lines: int, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_number_0based, bytes)`` blocks of at most ``max_lines`` whole lines.

    Reads ``block_bytes`` at a time; every byte is scanned for newlines once. Raises
    :class:`EventFormatError` for an empty file and a truncated or corrupt gzip stream.
    """
    carry = b""
    carry_nl = np.zeros(0, dtype=np.int64)  # newline positions within carry
    line0 = 0
    seen_any = False
    with _open(path) as fh:
        while True:
            try:
                data = fh.read(block_bytes)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
                raise EventFormatError(
                    path, f"truncated or corrupt gzip stream ({err})", line=line0 + len(carry_nl) + 1
                ) from None
            seen_any = seen_any or bool(data)
            if not data:
                if carry:
                    yield line0, carry
                break
            nl = np.concatenate([carry_nl, np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == _NL) + len(carry)])
            buf = carry + data
            start = 0
            n_full = len(nl) // max_lines
            for g in range(n_full):
                stop = int(nl[(g + 1) * max_lines - 1]) + 1
                yield line0, buf[start:stop]
                line0 += max_lines
                start = stop
            carry = buf[start:]
            carry_nl = nl[n_full * max_lines:] - start
    if not seen_any:
        raise EventFormatError(path, "empty file (no events)")


#: Bytes parsed at once: blocks of a few MB stay in cache (larger ones are parsed piece by piece).
PARSE_BYTES = 4 << 20


def parse_block(data: bytes, path, *, line0: int = 0, on_error: str = "raise", report=None) -> ak.Array:
    """Parse whole CSV lines (``data``; the first is line ``line0 + 1`` of ``path``) into events.

    ``on_error="raise"`` raises :class:`EventFormatError` for the first bad line; ``"skip"`` drops bad
    lines, recording them in ``report`` (a :class:`eventlm.io.ReadReport`).
    """
    if len(data) <= PARSE_BYTES:
        return _parse_block(data, path, line0=line0, on_error=on_error, report=report)
    pieces = []
    start = 0
    while start < len(data):
        stop = data.find(b"\n", min(start + PARSE_BYTES, len(data)) - 1)
        stop = len(data) if stop < 0 else stop + 1
        piece = data[start:stop]
        pieces.append(_parse_block(piece, path, line0=line0, on_error=on_error, report=report))
        line0 += piece.count(b"\n") + (0 if piece.endswith(b"\n") else 1)
        start = stop
    return pieces[0] if len(pieces) == 1 else ak.concatenate(pieces)


def _parse_block(data: bytes, path, *, line0: int = 0, on_error: str = "raise", report=None) -> ak.Array:
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size and _CR in data:  # Windows line ends: drop the carriage returns
        buf = buf[buf != _CR]
    if buf.size and buf[-1] != _NL:
        buf = np.concatenate([buf, np.array([_NL], dtype=np.uint8)])
    line_numbers = np.arange(line0 + 1, line0 + 1 + int(np.count_nonzero(buf == _NL)), dtype=np.int64)
    # A block that failed validation is cut down to its good lines and parsed again; bad lines are
    # found stage by stage (structure, then values), so this loops at most a few times.
    skipped: list[tuple[int, str]] = []
    try:
        for _ in range(16):
            try:
                return _parse_lines(buf)
            except _BadLines as bad:
                starts, ends = _line_bounds(buf)
                if on_error != "skip":
                    i = _first_bad_line(buf, ends, int(bad.lines[0]))
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


def _first_bad_line(buf: np.ndarray, ends: np.ndarray, candidate: int) -> int:
    """The first bad line: validation runs in stages, so earlier lines may fail a later stage."""
    while candidate > 0:
        try:
            _parse_lines(buf[: ends[candidate - 1] + 1])
            return candidate
        except _BadLines as bad:
            candidate = int(bad.lines[0])
    return candidate


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


def _parse_lines(buf: np.ndarray) -> ak.Array:
    if not buf.size:
        return empty_events()
    is_sep = (buf == _SEMI) | (buf == _COMMA) | (buf == _NL)
    sep_pos = np.flatnonzero(is_sep)
    n_tok = len(sep_pos)
    # Token t is the text between separator t-1 and separator t; "ends" are the tokens closed by
    # ';' or a newline. A good line has ends at within-line ranks 0..4 (the header fields), one per
    # object (whose 5 values are closed by ',,,,;', so 5 tokens after the previous end), and a last,
    # empty token closed by the newline right after the final ';'.
    sep_char = buf[sep_pos]
    ends = np.flatnonzero(sep_char != _COMMA)
    end_is_nl = sep_char[ends] == _NL
    nl_rank = np.flatnonzero(end_is_nl)  # rank (among ends) of each line's newline
    n_lines = len(nl_rank)
    first_rank = np.concatenate([[0], nl_rank[:-1] + 1])
    ends_per_line = nl_rank - first_rank + 1
    n_obj = ends_per_line - 6
    bad_line = n_obj < 0
    gap = np.diff(ends, prepend=-1)
    rank = np.arange(len(ends)) - np.repeat(first_rank, ends_per_line)
    is_obj_end = rank >= 5
    is_obj_end[nl_rank] = False
    wrong = gap != np.where(is_obj_end, 5, 1)
    nl_tok = ends[nl_rank]
    trailing = sep_pos[nl_tok] - sep_pos[np.maximum(nl_tok - 1, 0)] - 1  # text after the final ';'
    bad_line |= (nl_tok == 0) | (trailing != 0)
    if wrong.any():
        line_of_end = np.repeat(np.arange(n_lines), ends_per_line)
        bad_line[np.unique(line_of_end[wrong])] = True
    if bad_line.any():
        raise _BadLines(np.flatnonzero(bad_line))
    first = ends[first_rank]  # token index of each line's event_id
    obj_first = ends[is_obj_end] - 4  # token index of each object's code
    obj_line = np.repeat(np.arange(n_lines), n_obj)

    # --- tokens: squeeze the separators out so that token offsets are contiguous
    chars = buf[~is_sep]
    offsets = np.empty(n_tok + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = sep_pos - np.arange(n_tok)
    tokens = pa.LargeStringArray.from_buffers(n_tok, pa.py_buffer(offsets), pa.py_buffer(chars))

    lines = np.arange(n_lines)
    event_id = _numbers(tokens, first, pa.int64(), lines)
    header = _numbers(tokens, (first[:, None] + np.arange(2, 5)).ravel(), pa.float64(), lines, per=3)
    weight, met, met_phi = header.reshape(-1, 3).T
    values = _numbers(tokens, (obj_first[:, None] + np.arange(1, 5)).ravel(), pa.float64(), obj_line, per=4)
    E, pt, eta, phi = values.reshape(-1, 4).T
    code = pc.index_in(tokens.take(pa.array(obj_first)), value_set=_CODE_SET)
    if code.null_count:
        unknown = np.asarray(code.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        raise _BadLines(obj_line[unknown])
    code = code.to_numpy()

    # process labels: a string view of the (squeezed) character buffer, packed to its own copy
    proc_tok = first + 1
    if (offsets[proc_tok + 1] == offsets[proc_tok]).any():
        raise _BadLines(np.flatnonzero(offsets[proc_tok + 1] == offsets[proc_tok]))
    proc = ak.contents.ListArray(
        ak.index.Index64(offsets[proc_tok]),
        ak.index.Index64(offsets[proc_tok + 1]),
        ak.contents.NumpyArray(chars, parameters={"__array__": "char"}),
        parameters={"__array__": "string"},
    )
    process = ak.to_packed(ak.Array(proc))

    particles = make_particles(
        _CODE_KIND[code], _CODE_CHARGE[code],
        pt / MEV_PER_GEV, eta, phi, E / MEV_PER_GEV, n_obj,
    )
    return make_events(
        event_id=event_id, process=process, weight=weight,
        met=met / MEV_PER_GEV, met_phi=met_phi, particles=particles,
    )


def _numbers(tokens: pa.Array, index: np.ndarray, type_: pa.DataType, line_of: np.ndarray, per: int = 1) -> np.ndarray:
    """Cast the tokens at ``index`` to numbers; raise _BadLines naming the lines with bad values.

    ``line_of[i // per]`` is the line of the i-th token (``per`` tokens of one object or line).
    """
    strings = tokens.take(pa.array(index, type=pa.int64()))
    try:
        values = pc.cast(strings, type_).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pattern = r"^[+-]?\d+$" if pa.types.is_integer(type_) else r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
        ok = pc.match_substring_regex(strings, pattern).to_numpy(zero_copy_only=False)
        raise _BadLines(line_of[np.flatnonzero(~ok) // per]) from None
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            raise _BadLines(line_of[np.flatnonzero(~finite) // per])
    return values


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
            return f"object {k}: unknown object code {values[0]!r} (known: {', '.join(_CODES)})"
        for name, value in zip(("E", "pt", "eta", "phi"), values[1:]):
            problem = _number_problem(value)
            if problem:
                return f"object {k} {name}: {problem}"
    return "malformed line"  # pragma: no cover - validation and diagnosis disagree


def _number_problem(value: str, *, integer: bool = False) -> str | None:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        return f"not a{'n integer' if integer else ' number'}: {value!r}"
    if not math.isfinite(number):
        return f"non-finite value {value!r}"
    return None


# --------------------------------------------------------------------------------------------------
# writing


def format_block(events: ak.Array) -> bytes:
    """The CSV text (MeV) of ``events``, one line each with a trailing ``;``, vectorized with Arrow."""
    events = ak.to_packed(events)
    n = len(events)
    if n == 0:
        return b""
    process = _arrow_strings(events.process)
    bad = pc.match_substring_regex(process, r"[;,\n\r]|^$")
    if pc.any(bad).as_py():
        raise ValueError("process labels written to CSV must be non-empty and contain no ';', ',' or newline")
    parts = events.particles
    counts = ak.to_numpy(ak.num(parts, axis=1)).astype(np.int64)
    kind = ak.to_numpy(ak.flatten(parts.kind)).astype(np.int64)
    charge = ak.to_numpy(ak.flatten(parts.charge)).astype(np.int64)
    code_of = np.full((8, 3), -1, dtype=np.int64)  # (kind, charge + 1) -> index into _CODES
    for (k, q), c in CODES_BY_KIND.items():
        code_of[k, q + 1] = _CODES.index(c)
    if len(kind) and (kind.min() < 0 or kind.max() > 7 or charge.min() < -1 or charge.max() > 1):
        raise ValueError("particles with a kind or charge that has no Dark Machines code")
    code_idx = code_of[kind, charge + 1] if len(kind) else kind
    if (code_idx < 0).any():
        raise ValueError("particles with a (kind, charge) that has no Dark Machines code")
    codes = pa.array(np.array(_CODES, dtype=object)[code_idx], type=pa.string()) if len(kind) else pa.array([], pa.string())

    def fmt(values, dtype) -> pa.Array:
        return pc.cast(pa.array(np.asarray(values, dtype=dtype)), pa.string())

    f32 = np.float32
    E = ak.to_numpy(ak.flatten(parts.E)).astype(np.float64) * MEV_PER_GEV
    pt = ak.to_numpy(ak.flatten(parts.pt)).astype(np.float64) * MEV_PER_GEV
    objects = pc.binary_join_element_wise(
        codes, fmt(E, f32), fmt(pt, f32),
        fmt(ak.to_numpy(ak.flatten(parts.eta)), f32), fmt(ak.to_numpy(ak.flatten(parts.phi)), f32), ",",
    )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    per_event = pa.ListArray.from_arrays(pa.array(offsets), objects)
    joined = pc.binary_join(per_event, ";")  # "" for events without objects
    objs = pc.if_else(pa.array(counts > 0), pc.binary_join_element_wise(joined, pa.scalar(""), ";"), pa.scalar(""))
    met = ak.to_numpy(events.met).astype(np.float64) * MEV_PER_GEV
    header = pc.binary_join_element_wise(
        pc.cast(pa.array(ak.to_numpy(events.event_id).astype(np.int64)), pa.string()),
        process,
        pc.cast(pa.array(ak.to_numpy(events.weight).astype(np.float64)), pa.string()),
        fmt(met, f32), fmt(ak.to_numpy(events.met_phi), f32), pa.scalar(""), ";",
    )
    lines = pc.binary_join_element_wise(header, objs, pa.scalar("\n"), "")
    lines = lines.cast(pa.large_string())
    offs = np.frombuffer(lines.buffers()[1], dtype=np.int64, count=len(lines) + 1, offset=lines.offset * 8)
    return lines.buffers()[2].to_pybytes()[int(offs[0]):int(offs[-1])]


def _arrow_strings(process: ak.Array) -> pa.Array:
    arr = ak.to_arrow(ak.to_packed(process), extensionarray=False)
    return arr.cast(pa.string())


class CSVSink:
    """Streaming CSV writer used by :class:`eventlm.io.EventWriter` (writes to an open temp path)."""

    def __init__(self, path: Path, *, gz: bool):
        self.path = path
        raw = open(path, "wb")
        if gz:
            self._fh = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0)
            self._raw = raw
        else:
            self._fh = raw
            self._raw = None

    def write(self, events: ak.Array, extra: dict) -> None:
        if extra:
            raise ValueError(
                f"the Dark Machines CSV has no place for extra columns ({', '.join(extra)}); "
                "write .root or .parquet instead"
            )
        self._fh.write(format_block(events))

    def close(self) -> None:
        self._fh.close()
        if self._raw is not None:
            self._raw.close()


__all__ = ["BLOCK_BYTES", "CSVSink", "diagnose_line", "format_block", "is_csv", "iter_line_blocks", "parse_block"]
