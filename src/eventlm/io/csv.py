"""The Dark Machines CSV format (``.csv``, ``.csv.gz``): fast reader and vectorized writer.

One event per line, energies in MeV (converted to GeV here and nowhere else)::

    event_id;process_id;event_weight;MET;METphi;obj1,E1,pt1,eta1,phi1;...;

The reader never loops over lines in Python. An uncompressed file is memory-mapped, so its blocks
are views of the page cache and nothing is read or copied before the parse; a ``.csv.gz`` is
decompressed piece by piece. A block of whole lines is handled as one byte array by one compiled pass
(numba, ``cache=True``: compiled once per installation, then loaded from the on-disk cache) that
checks every line against the format and writes the values straight into the event arrays. Numbers
are converted in that pass where an exactly rounded fast path applies (almost
always: shortest-repr floats); the rest (long event weights, and anything odd) are copied out and
converted by a single Arrow string-to-number cast, which also validates them. Only when something is
wrong are the offending lines described one by one, with a small diagnosis of just those lines.

The writer formats with Arrow's float-to-string cast (shortest round-tripping text) and joins with
Arrow string kernels, so it is vectorized too. Extra columns cannot be written to CSV: the format
has no place for them (``ValueError``; write ``.root`` or ``.parquet`` instead).
"""

from __future__ import annotations

import gzip
import math
import os
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
    string_array,
)

MEV_PER_GEV = 1000.0
#: Bytes read per call from a compressed (or unmappable) file (whole lines are carried over).
BLOCK_BYTES = 8 << 20
#: The largest block of text parsed at once when no line limit is given (see :func:`iter_line_blocks`).
MAX_BLOCK_BYTES = 128 << 20

_NL, _CR = ord("\n"), ord("\r")
_CODES = list(DARKMACHINES_CODES)
# the scan decodes object codes by their bytes into indices of this order
assert _CODES == ["j", "b", "e-", "e+", "m-", "m+", "g"], _CODES
_CODE_KIND = np.array([int(DARKMACHINES_CODES[c][0]) for c in _CODES], dtype=np.int8)
_CODE_CHARGE = np.array([DARKMACHINES_CODES[c][1] for c in _CODES], dtype=np.int8)


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


def iter_line_blocks(
    path: Path, max_lines: int | None = None, *, max_bytes: int | None = None, read_bytes: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_line_number_0based, bytes)`` blocks of whole lines: at most ``max_lines``
    lines (no limit for None), and about ``max_bytes`` bytes at most (default
    :data:`MAX_BLOCK_BYTES`; a block is cut at a line end).

    The bytes are a ``uint8`` array. An uncompressed file is memory-mapped and its blocks are views
    of the mapping (nothing is copied: the scan reads the page cache); a ``.gz`` file (or anything
    that cannot be mapped) is read ``read_bytes`` (default :data:`BLOCK_BYTES`) at a time. Raises
    :class:`EventFormatError` for an empty file and a truncated or corrupt gzip stream.
    """
    if max_lines is not None and max_lines < 1:
        raise ValueError("max_lines must be positive")
    max_bytes = max_bytes or MAX_BLOCK_BYTES
    read_bytes = read_bytes or BLOCK_BYTES
    if not str(path).lower().endswith(".gz"):
        mapped = _map(path)
        if mapped is not None:
            yield from _mapped_blocks(mapped, max_lines, max_bytes)
            return
    yield from _read_blocks(path, max_lines, max_bytes, read_bytes)


def _map(path: Path) -> np.ndarray | None:
    """The bytes of a regular file as a read-only memory map, or None where it cannot be mapped."""
    import mmap

    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise EventFormatError(path, "empty file (no events)")
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a pipe, a special file: read it instead
            return None
    # the map stays open as long as an array views it (it keeps its own file descriptor)
    return np.frombuffer(mapped, dtype=np.uint8)


def _mapped_blocks(buf: np.ndarray, max_lines: int | None, max_bytes: int) -> Iterator[tuple[int, np.ndarray]]:
    count_byte, line_end, last_line_end = _byte_kernels()
    line0, pos = 0, 0
    while pos < buf.size:
        stop = int(line_end(buf, pos, max_lines)) if max_lines else buf.size
        if stop - pos > max_bytes:  # cut at the last line end within max_bytes (or after one line)
            stop = int(last_line_end(buf, pos, pos + max_bytes))
            if stop <= pos:
                stop = int(line_end(buf, pos + max_bytes, 1))
        block = buf[pos:stop]
        yield line0, block
        line0 += int(count_byte(block, _NL)) + int(block[-1] != _NL)
        pos = stop


def _read_blocks(
    path: Path, max_lines: int | None, max_bytes: int, read_bytes: int
) -> Iterator[tuple[int, np.ndarray]]:
    """The blocks of a file read piece by piece (newlines are located only in the reads where a
    block ends; the pieces of one block are joined)."""
    count_byte = _byte_kernels()[0]
    pending: list[bytes] = []  # the bytes read since the last block boundary
    pending_lines = pending_bytes = 0
    line0 = 0
    seen_any = False
    with _open(path) as fh:
        while True:
            try:
                data = fh.read(read_bytes)
            except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
                raise EventFormatError(
                    path, f"truncated or corrupt gzip stream ({err})", line=line0 + pending_lines + 1
                ) from None
            if not data:
                if pending:
                    yield line0, _as_bytes_array(pending)
                break
            seen_any = True
            pos = 0
            while pos < len(data):
                piece = np.frombuffer(data, dtype=np.uint8, offset=pos)
                found = int(count_byte(piece, _NL))
                if max_lines is not None and pending_lines + found >= max_lines:
                    take = max_lines - pending_lines  # the block ends at this piece's take-th newline
                elif found and pending_bytes + piece.size >= max_bytes:
                    take = found  # the block is big enough: it ends at this piece's last newline
                else:
                    pending.append(data[pos:] if pos else data)
                    pending_lines += found
                    pending_bytes += piece.size
                    break
                stop = pos + int(np.flatnonzero(piece == _NL)[take - 1]) + 1
                pending.append(data[pos:stop])
                yield line0, _as_bytes_array(pending)
                line0 += pending_lines + take
                pending, pending_lines, pending_bytes, pos = [], 0, 0, stop
    if not seen_any:
        raise EventFormatError(path, "empty file (no events)")


def _as_bytes_array(pieces: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(pieces) if len(pieces) > 1 else pieces[0], dtype=np.uint8)


_BYTE_KERNELS = None


def _count_byte(buf, value):
    total = 0
    for i in range(buf.size):
        total += buf[i] == value
    return total


def _line_end(buf, start, n):
    """The index just past the ``n``-th newline at or after ``start`` (``buf.size`` if there are
    fewer): newlines are counted by 64 KiB pieces (a loop the compiler vectorizes), and located
    byte by byte only in the piece that holds the last one."""
    i = start
    while i < buf.size:
        piece = buf[i:i + 65536]
        found = _count_byte(piece, 10)
        if found >= n:
            for k in range(piece.size):
                if piece[k] == 10:
                    n -= 1
                    if n == 0:
                        return i + k + 1
        n -= found
        i += piece.size
    return buf.size


def _last_line_end(buf, start, stop):
    """The index just past the last newline in ``buf[start:stop]``, or ``start`` if there is none."""
    for k in range(stop - 1, start - 1, -1):
        if buf[k] == 10:
            return k + 1
    return start


def _byte_kernels():
    """The compiled byte count and line-end searches (much faster than ``bytes.count`` or numpy)."""
    global _BYTE_KERNELS, _count_byte
    if _BYTE_KERNELS is None:
        import numba

        jit = numba.njit(cache=True, nogil=True)
        _count_byte = jit(_count_byte)  # first: the line-end search resolves it when it is compiled
        _BYTE_KERNELS = _count_byte, jit(_line_end), jit(_last_line_end)
    return _BYTE_KERNELS


def parse_block(data, path, *, line0: int = 0, on_error: str = "raise", report=None) -> ak.Array:
    """Parse whole CSV lines (``data``: bytes or a ``uint8`` array; the first is line ``line0 + 1``
    of ``path``) into events.

    ``on_error="raise"`` raises :class:`EventFormatError` for the first bad line; ``"skip"`` drops bad
    lines, recording them in ``report`` (a :class:`eventlm.io.ReadReport`).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size and _byte_kernels()[0](buf, _CR):  # Windows line ends: drop the carriage returns
        buf = buf[buf != _CR]
    if buf.size and buf[-1] != _NL:
        buf = np.concatenate([buf, np.array([_NL], dtype=np.uint8)])
    # 1-based file line of each line of ``buf``; materialized only once lines are dropped
    line_numbers: np.ndarray | None = None
    # A block with bad lines is cut down to its good lines and parsed again (once: the scan finds
    # every bad line of a block in one go, the loop is a safety net).
    skipped: list[tuple[int, str]] = []
    try:
        for _ in range(16):
            try:
                return _parse_lines(buf)
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


# The scan: one compiled pass over the bytes of a block (numba, cached on disk). Every line is
# checked against the grammar
#
#     int ; process ; num ; num ; num ; ( code , num , num , num , num ; )* newline
#
# and its values are written straight into the output arrays. Numbers in the plain form
# ``-?digits[.digits][(e|E)[+-]digits]`` with at most 18 digits whose value is m * 10^k with
# m <= 2^53 and |k| <= 22 are converted in the scan by one exactly rounded multiplication or
# division (the classic fast path, so the result is the correctly rounded double, the same one Arrow
# gives); any other number text (17-digit event weights, ``nan``, ``1.5x``, ...) is copied out and
# converted afterwards by one Arrow cast, which also validates it. A line that breaks the grammar
# (a field count, a missing ``;``, an empty process, an unknown object code) is rolled back and
# recorded; the lines are described one by one by :func:`diagnose_line` only in that case.

_KERNELS = None
_FB_INT = 7  # fallback column of event_id; 0-2 are weight/MET/METphi, 3-6 E/pt/eta/phi
_POW10 = np.array([float(10**i) for i in range(23)])
_POW10_INT = np.array([10**i for i in range(19)], dtype=np.int64)
_POW10_UINT = _POW10_INT.astype(np.uint64)
U64 = np.uint64


def _kernels():
    """The compiled scan (imports numba and compiles, or loads from its on-disk cache, on first use)."""
    global _KERNELS, _load8, _digit_run, _slow_number, _fast_number, _fast_integer, _keep_fallback, _scan_lines
    global _token_end, _digit_loop, _object_code
    if _KERNELS is None:
        import numba

        jit = numba.njit(cache=True, nogil=True, error_model="numpy")
        # The scan loop and its helpers allocate nothing, so they run without the runtime's
        # reference counting (which otherwise costs atomic increments on every helper call).
        flat = numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)
        inline = numba.njit(cache=True, nogil=True, error_model="numpy", _nrt=False, inline="always")
        # helpers first: the scan resolves these module globals when it is compiled
        _load8 = inline(_load8)
        _token_end = inline(_token_end)
        _digit_loop = inline(_digit_loop)
        _digit_run = inline(_digit_run)
        _slow_number = flat(_slow_number)
        _fast_number = inline(_fast_number)
        _fast_integer = flat(_fast_integer)
        _object_code = inline(_object_code)
        _keep_fallback = inline(_keep_fallback)
        _scan_lines = flat(_scan_lines)
        _KERNELS = jit(_scan)
    return _KERNELS


def _token_end(buf, e):
    """The index of the first ``;``, ``,`` or newline at or after ``e`` (every line ends with one)."""
    while buf[e] != 59 and buf[e] != 44 and buf[e] != 10:
        e += 1
    return e


def _fast_number(buf, s, pow10):
    """Read the number text starting at ``buf[s]``: ``(end, ok, value)``.

    ``end`` is where the plain number syntax stops (the caller checks that a separator is there);
    ``ok`` says whether the fast path converted it exactly (else the text goes to the Arrow cast).
    The common shape ``-?d{1,7}[.d{1,15}]`` is read 8 bytes at a time without data-dependent
    branches; everything else by :func:`_slow_number`.
    """
    i = s
    neg = buf[i] == 45  # '-'
    if neg:
        i += 1
    if i + 25 <= buf.size:
        n_int, v_int = _digit_run(_load8(buf, i))
        if 0 < n_int < 8:
            j = i + n_int
            c = buf[j]
            if c == 46:  # '.'
                n_frac, v_frac = _digit_run(_load8(buf, j + 1))
                if n_frac == 8:
                    n_more, v_more = _digit_run(_load8(buf, j + 9))
                    n_frac += n_more
                    v_frac = v_frac * _POW10_UINT[n_more] + v_more
                j += 1 + n_frac
                c = buf[j]
                m = np.int64(v_int) * _POW10_INT[n_frac] + np.int64(v_frac)  # n_frac <= 16: no overflow
                if 0 < n_frac < 16 and n_int + n_frac <= 18 and m <= 9007199254740992 and c != 101 and c != 69:
                    value = float(m) / pow10[n_frac]  # m and 10^n_frac are exact: one rounding
                    return j, True, -value if neg else value
            elif c != 101 and c != 69:
                value = float(np.int64(v_int))
                return j, True, -value if neg else value
    return _slow_number(buf, s, pow10)


def _load8(buf, i):
    """The 8 bytes ``buf[i:i+8]`` as one little-endian uint64."""
    j = U64(i)
    return (U64(buf[j]) | (U64(buf[j + U64(1)]) << U64(8)) | (U64(buf[j + U64(2)]) << U64(16))
            | (U64(buf[j + U64(3)]) << U64(24)) | (U64(buf[j + U64(4)]) << U64(32))
            | (U64(buf[j + U64(5)]) << U64(40)) | (U64(buf[j + U64(6)]) << U64(48))
            | (U64(buf[j + U64(7)]) << U64(56)))


def _digit_run(w):
    """``(n, value)``: the number of leading ASCII digits (0-8) of the 8 bytes in ``w`` (first byte
    lowest) and the value of those digits, computed with SWAR arithmetic (no per-byte branches)."""
    a = w ^ U64(0x3030303030303030)  # digits become 0..9
    flags = ((a + U64(0x7676767676767676)) | a) & U64(0x8080808080808080)  # high bit: not a digit
    if flags == U64(0):
        n = U64(8)
    else:  # index of the lowest flagged byte, by a multiplication (the carries above it do not matter)
        n = (((flags & (~flags + U64(1))) >> U64(7)) * U64(0x0001020304050607)) >> U64(56)
    if n == U64(0):
        return 0, U64(0)
    v = a << (U64(8) * (U64(8) - n)) if n < U64(8) else a  # the digits, zeros in front
    v = ((v & U64(0x0F0F0F0F0F0F0F0F)) * U64(2561)) >> U64(8)
    v = ((v & U64(0x00FF00FF00FF00FF)) * U64(6553601)) >> U64(16)
    v = ((v & U64(0x0000FFFF0000FFFF)) * U64(42949672960001)) >> U64(32)
    return np.int64(n), v


def _digit_loop(buf, i, m):
    """Append the decimal digits starting at ``buf[i]`` to ``m``: ``(end, m, number of digits)``."""
    n = 0
    d = np.int64(buf[i]) - 48
    while 0 <= d <= 9:
        m = m * 10 + d
        n += 1
        i += 1
        d = np.int64(buf[i]) - 48
    return i, m, n


def _slow_number(buf, s, pow10):
    """:func:`_fast_number` for any text: a digit-by-digit loop."""
    i = s
    neg = buf[i] == 45  # '-'
    if neg:
        i += 1
    i, m, n_digits = _digit_loop(buf, i, 0)
    ok = n_digits > 0
    n_frac = 0
    if buf[i] == 46:  # '.'
        i, m, n_frac = _digit_loop(buf, i + 1, m)
        ok = ok and n_frac > 0
    exp = 0
    if buf[i] == 101 or buf[i] == 69:  # 'e', 'E'
        i += 1
        exp_neg = buf[i] == 45
        if exp_neg or buf[i] == 43:
            i += 1
        n_exp = 0
        d = np.int64(buf[i]) - 48
        while 0 <= d <= 9:
            if exp < 100000:
                exp = exp * 10 + d
            n_exp += 1
            i += 1
            d = np.int64(buf[i]) - 48
        ok = ok and n_exp > 0
        if exp_neg:
            exp = -exp
    n_digits += n_frac
    if not ok or n_digits > 18 or m > 9007199254740992:
        return i, False, 0.0
    value = float(m)
    if m != 0:
        k = exp - n_frac
        if k < -22 or k > 22:
            return i, False, 0.0
        if k >= 0:
            value = value * pow10[k]
        else:
            value = value / pow10[-k]
    return i, True, -value if neg else value


def _object_code(buf, p):
    """``(code, end)`` of the object code at ``buf[p]``: its index in ``_CODES`` (-1 if unknown or
    not followed by ``,``) and the index of the separator after it."""
    c0 = buf[p]
    c1 = buf[p + 1]
    if c1 == 44:  # one letter: j b g
        return (0 if c0 == 106 else 1 if c0 == 98 else 6 if c0 == 103 else -1), p + 1
    if (c1 == 45 or c1 == 43) and buf[p + 2] == 44:  # e- e+ m- m+
        sign = 0 if c1 == 45 else 1
        return (2 + sign if c0 == 101 else 4 + sign if c0 == 109 else -1), p + 2
    return -1, _token_end(buf, p)


def _fast_integer(buf, s, e):
    """(True, value) for ``-?digits`` with at most 18 digits, else (False, 0)."""
    i = s
    neg = False
    if i < e and buf[i] == 45:
        neg = True
        i += 1
    if i == e or e - i > 18:
        return False, 0
    m = 0
    while i < e:
        if not 48 <= buf[i] <= 57:
            return False, 0
        m = m * 10 + (np.int64(buf[i]) - 48)
        i += 1
    return True, -m if neg else m


def _keep_fallback(buf, s, e, n, col, row, line, fb_col, fb_row, fb_line, fb_off, fb_chars):
    """Append token ``buf[s:e]`` as fallback number ``n``; False (nothing written) if it does not fit."""
    o = fb_off[n]
    if n + 1 >= fb_col.size or o + (e - s) > fb_chars.size:
        return False
    for k in range(e - s):
        fb_chars[o + k] = buf[s + k]
    fb_col[n] = col
    fb_row[n] = row
    fb_line[n] = line
    fb_off[n + 1] = o + (e - s)
    return True


def _scan(buf, code_kind, code_charge, pow10, mev_per_gev):
    """Parse the lines of ``buf`` (which ends with a newline); see the comment above.

    The work is done by :func:`_scan_lines`, which never reallocates (so that no reference counting
    happens in its loop); when the fallback list or the bad-line list is full it stops at the start
    of a line, the arrays are grown here and it resumes.
    """
    n = buf.size
    max_ev = n // 11 + 1  # a good line has at least 11 bytes, an object at least 10
    max_obj = n // 10 + 1
    event_id = np.empty(max_ev, np.int64)
    weight = np.empty(max_ev, np.float64)
    met = np.empty(max_ev, np.float32)
    met_phi = np.empty(max_ev, np.float32)
    counts = np.empty(max_ev, np.int64)
    proc_off = np.empty(max_ev + 1, np.int64)
    proc_chars = np.empty(n, np.uint8)
    kind = np.empty(max_obj, np.int8)
    charge = np.empty(max_obj, np.int8)
    obj = np.empty((4, max_obj), np.float32)  # E, pt, eta, phi
    bad = np.empty(16, np.int64)
    fb_col = np.empty(64, np.int8)
    fb_row = np.empty(64, np.int64)
    fb_line = np.empty(64, np.int64)
    fb_off = np.zeros(65, np.int64)
    fb_chars = np.empty(1024, np.uint8)

    p = 0
    line = 0
    n_ev = 0
    n_obj = 0
    n_bad = 0
    n_fb = 0
    proc_off[0] = 0
    while True:
        p, line, n_ev, n_obj, n_bad, n_fb, full = _scan_lines(
            buf, p, line, n_ev, n_obj, n_bad, n_fb, code_kind, code_charge, pow10, mev_per_gev,
            event_id, weight, met, met_phi, counts, proc_off, proc_chars, kind, charge, obj, bad,
            fb_col, fb_row, fb_line, fb_off, fb_chars)
        if full == 0:
            break
        if full == 1:  # the bad-line list
            bad = np.concatenate((bad, np.empty(bad.size, np.int64)))
        else:  # the fallback list
            size = 2 * fb_col.size
            fb_col = np.concatenate((fb_col, np.empty(size - fb_col.size, np.int8)))
            fb_row = np.concatenate((fb_row, np.empty(size - fb_row.size, np.int64)))
            fb_line = np.concatenate((fb_line, np.empty(size - fb_line.size, np.int64)))
            fb_off = np.concatenate((fb_off, np.empty(size + 1 - fb_off.size, np.int64)))
            fb_chars = np.concatenate((fb_chars, np.empty(fb_chars.size, np.uint8)))
    # views, not copies: the arrays are sized for the worst case, but their unused tails are never
    # written and so take no memory (the pages are not touched)
    return (
        event_id[:n_ev], weight[:n_ev], met[:n_ev], met_phi[:n_ev],
        counts[:n_ev], proc_off[:n_ev + 1], proc_chars[:proc_off[n_ev]],
        kind[:n_obj], charge[:n_obj], obj[:, :n_obj], bad[:n_bad],
        fb_col[:n_fb], fb_row[:n_fb], fb_line[:n_fb], fb_off[:n_fb + 1],
        fb_chars[:fb_off[n_fb]],
    )


def _scan_lines(buf, p, line, n_ev, n_obj, n_bad, n_fb, code_kind, code_charge, pow10, mev_per_gev,
                event_id, weight, met, met_phi, counts, proc_off, proc_chars, kind, charge, obj, bad,
                fb_col, fb_row, fb_line, fb_off, fb_chars):
    """The loop of :func:`_scan` from line ``line`` at ``buf[p]``: returns the updated counters and
    0 at the end of ``buf``, or 1 (bad-line list full) / 2 (fallback list full) at a line start."""
    n = buf.size
    while p < n:
        if n_bad == bad.size:
            return p, line, n_ev, n_obj, n_bad, n_fb, 1
        p_line = p
        obj0 = n_obj
        fb0 = n_fb
        ok = True
        for f in range(5):  # event_id ; process ; weight ; MET ; METphi ;
            if f >= 2:
                e, good, value = _fast_number(buf, p, pow10)
                if buf[e] != 59:
                    good = False
                    e = _token_end(buf, e)
                    if buf[e] != 59:
                        ok = False
                        p = e
                        break
                if good:
                    if f == 2:
                        weight[n_ev] = value
                    elif f == 3:
                        met[n_ev] = value / mev_per_gev
                    else:
                        met_phi[n_ev] = value
                else:
                    if not _keep_fallback(
                        buf, p, e, n_fb, f - 2, n_ev, line, fb_col, fb_row, fb_line, fb_off, fb_chars):
                        return p_line, line, n_ev, obj0, n_bad, fb0, 2  # full: grow, redo the line
                    n_fb += 1
                p = e + 1
                continue
            e = p
            e = _token_end(buf, e)
            if buf[e] != 59 or (f == 1 and e == p):
                ok = False
                p = e
                break
            if f == 0:
                good, ivalue = _fast_integer(buf, p, e)
                if good:
                    event_id[n_ev] = ivalue
                else:
                    if not _keep_fallback(
                        buf, p, e, n_fb, 7, n_ev, line, fb_col, fb_row, fb_line, fb_off, fb_chars):
                        return p_line, line, n_ev, obj0, n_bad, fb0, 2  # full: grow, redo the line
                    n_fb += 1
            else:
                o = proc_off[n_ev]
                for j in range(e - p):
                    proc_chars[o + j] = buf[p + j]
                proc_off[n_ev + 1] = o + e - p
            p = e + 1
        while ok and buf[p] != 10:  # objects: code , E , pt , eta , phi ;
            code, e = _object_code(buf, p)
            if code < 0:
                ok = False
                p = e
                break
            kind[n_obj] = code_kind[code]
            charge[n_obj] = code_charge[code]
            p = e + 1
            for f in range(4):
                sep = 59 if f == 3 else 44
                e, good, value = _fast_number(buf, p, pow10)
                if buf[e] != sep:
                    good = False
                    e = _token_end(buf, e)
                    if buf[e] != sep:
                        ok = False
                        p = e
                        break
                if good:
                    obj[f, n_obj] = value / mev_per_gev if f < 2 else value
                else:
                    if not _keep_fallback(
                        buf, p, e, n_fb, f + 3, n_obj, line, fb_col, fb_row, fb_line, fb_off, fb_chars):
                        return p_line, line, n_ev, obj0, n_bad, fb0, 2  # full: grow, redo the line
                    n_fb += 1
                p = e + 1
            if ok:
                n_obj += 1
        if ok:
            counts[n_ev] = n_obj - obj0
            n_ev += 1
            p += 1
        else:  # roll the line back and skip to its end
            n_obj = obj0
            n_fb = fb0
            proc_off[n_ev + 1] = proc_off[n_ev]
            bad[n_bad] = line
            n_bad += 1
            while buf[p] != 10:
                p += 1
            p += 1
        line += 1
    return p, line, n_ev, n_obj, n_bad, n_fb, 0


#: Blocks at least this large are scanned as two halves on two threads (the scan releases the GIL).
PARALLEL_BYTES = 4 << 20


def _scan_block(buf: np.ndarray) -> tuple:
    """The results of the scan of ``buf``; a large block is cut at a line end near its middle and the
    halves are scanned concurrently, then their results are joined (offsets, rows, lines shifted)."""
    scan = _kernels()
    args = (_CODE_KIND, _CODE_CHARGE, _POW10, MEV_PER_GEV)
    cut = -1
    if buf.size >= PARALLEL_BYTES and (os.cpu_count() or 1) > 1:
        nl = np.flatnonzero(buf[buf.size // 2:] == _NL)
        cut = buf.size // 2 + int(nl[0]) + 1 if len(nl) else -1
    if cut <= 0 or cut >= buf.size:
        return scan(buf, *args)
    # a plain thread per block (not a pool: it costs nothing next to the scan and is fork-safe)
    import threading

    result: list = []
    second = threading.Thread(target=lambda: result.append(scan(buf[cut:], *args)), name="eventlm-csv-scan")
    second.start()
    try:
        a = scan(buf[:cut], *args)
    finally:
        second.join()
    if not result:  # pragma: no cover - the scan does not raise
        raise RuntimeError("CSV scan thread failed")
    b = result[0]
    (event_id, weight, met, met_phi, counts, proc_off, proc_chars, kind, charge, obj, bad,
     fb_col, fb_row, fb_line, fb_off, fb_chars) = zip(a, b)
    n_ev, n_obj = len(a[0]), len(a[7])
    n_lines = int(_byte_kernels()[0](buf[:cut], _NL))
    is_event_col = (fb_col[1] <= 2) | (fb_col[1] == _FB_INT)  # fallback rows: events or objects
    return (
        np.concatenate(event_id), np.concatenate(weight), np.concatenate(met), np.concatenate(met_phi),
        np.concatenate(counts), np.concatenate((proc_off[0], proc_off[1][1:] + proc_off[0][-1])),
        np.concatenate(proc_chars), np.concatenate(kind), np.concatenate(charge),
        tuple(np.concatenate(rows) for rows in zip(*obj)), np.concatenate((bad[0], bad[1] + n_lines)),
        np.concatenate(fb_col), np.concatenate((fb_row[0], fb_row[1] + np.where(is_event_col, n_ev, n_obj))),
        np.concatenate((fb_line[0], fb_line[1] + n_lines)),
        np.concatenate((fb_off[0], fb_off[1][1:] + fb_off[0][-1])), np.concatenate(fb_chars),
    )


def _parse_lines(buf: np.ndarray) -> ak.Array:
    if not buf.size:
        return empty_events()
    (event_id, weight, met, met_phi, counts, proc_off, proc_chars, kind, charge, obj, bad,
     fb_col, fb_row, fb_line, fb_off, fb_chars) = _scan_block(buf)
    E, pt, eta, phi = obj
    if len(fb_col):  # numbers the scan left to Arrow: convert, validate, scatter
        strings = pa.LargeStringArray.from_buffers(len(fb_col), pa.py_buffer(fb_off), pa.py_buffer(fb_chars))
        is_int = fb_col == _FB_INT
        bad_values = []
        for type_, mask in ((pa.int64(), is_int), (pa.float64(), ~is_int)):
            if not mask.any():
                continue
            values, wrong = _cast(strings if mask.all() else strings.filter(pa.array(mask)), type_)
            if wrong is not None:
                bad_values.append(fb_line[mask][wrong])
                continue
            cols, rows = fb_col[mask], fb_row[mask]
            for col, target in enumerate((weight, met, met_phi, E, pt, eta, phi, event_id)):
                sel = cols == col
                if sel.any():
                    v = values[sel]
                    target[rows[sel]] = v / MEV_PER_GEV if col in (1, 3, 4) else v
        if bad_values:
            bad = np.concatenate([bad, *bad_values])
    if len(bad):
        raise _BadLines(bad)
    particles = make_particles(kind, charge, pt, eta, phi, E, counts)
    return make_events(
        event_id=event_id, process=string_array(proc_off, proc_chars), weight=weight, met=met, met_phi=met_phi,
        particles=particles,
    )


def _cast(strings: pa.Array, type_: pa.DataType) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(values, None)``, or ``(None, indices of the strings that are not finite numbers)``."""
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


__all__ = [
    "BLOCK_BYTES", "MAX_BLOCK_BYTES", "CSVSink", "diagnose_line", "format_block", "is_csv", "iter_line_blocks",
    "parse_block",
]
