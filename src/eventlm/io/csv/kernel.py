"""The compiled CSV scan: one pass over the bytes of a block of lines (numba).

Every line is checked against the grammar

    int ; process ; num ; num ; num ; ( code , num , num , num , num ; )* newline

and its values are written straight into the output arrays. Numbers in the plain form
``-?digits[.digits][(e|E)[+-]digits]`` with at most 18 digits whose value is m * 10^k with
m <= 2^53 and |k| <= 22 are converted here by one exactly rounded multiplication or division (the
classic fast path, so the result is the correctly rounded double, the same one Arrow gives); any
other number text (17-digit event weights, ``nan``, ``1.5x``, ...) is copied out and converted
afterwards by one Arrow cast (:mod:`eventlm.io.csv.reader`), which also validates it. A line that
breaks the grammar (a field count, a missing ``;``, an empty process, an unknown object code) is
rolled back and recorded; the lines are described one by one only in that case.

This module imports numba and is imported only when a CSV file is read. Its functions are compiled
on first call (numba's dispatchers compile under numba's own lock, so two threads reading their
first CSV at once are safe) and cached on disk where numba finds a writable place (next to this
file, or ``NUMBA_CACHE_DIR``, or the user's cache directory); where it finds none (a read-only
installation and no writable HOME) they are compiled in memory once per process instead.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

log = logging.getLogger(__name__)

_NL = 10
_POW10 = np.array([float(10**i) for i in range(23)])
_POW10_INT = np.array([10**i for i in range(19)], dtype=np.int64)
_POW10_UINT = _POW10_INT.astype(np.uint64)
U64 = np.uint64

# The loop of the scan and its helpers allocate nothing, so they are compiled without numba's
# runtime (``_nrt=False``, an undocumented numba option present in every numba >= 0.58): with the
# runtime every call of a helper that takes ``buf`` costs an atomic reference-count increment and
# decrement. Measured on the 200k-event file of benchmarks/io.py (70 MB, one thread, CPU time of
# the scan, best of 7, three alternating runs each, 2026-12-01): 0.170-0.182 s without the runtime,
# 0.290-0.302 s with it (NRT = True): 1.7x. So it stays off; set NRT = True if a numba release drops
# the option (the scan then still works, slower).
NRT = False


def _jit(**options):
    """A numba decorator: ``nogil`` and numpy's error model, cached on disk where numba can."""

    def decorate(fn):
        try:
            return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
        except RuntimeError as err:  # "cannot cache function ...: no locator available"
            log.debug("numba cannot cache %s (%s): compiled in memory", fn.__name__, err)
            return numba.njit(cache=False, nogil=True, error_model="numpy", **options)(fn)

    return decorate


_no_nrt = {} if NRT else {"_nrt": False}
_alloc = _jit()  # allocates its output arrays: needs the runtime
_flat = _jit(**_no_nrt)
_inline = _jit(inline="always", **_no_nrt)


# --------------------------------------------------------------------------------------------------
# bytes: counting newlines and finding line ends (much faster than ``bytes.count`` or numpy)


@_jit()
def count_byte(buf, value):
    total = 0
    for i in range(buf.size):
        total += buf[i] == value
    return total


@_jit()
def line_end(buf, start, n):
    """The index just past the ``n``-th newline at or after ``start`` (``buf.size`` if there are
    fewer): newlines are counted by 64 KiB pieces (a loop the compiler vectorizes), and located
    byte by byte only in the piece that holds the last one."""
    i = start
    while i < buf.size:
        piece = buf[i:i + 65536]
        found = count_byte(piece, 10)
        if found >= n:
            for k in range(piece.size):
                if piece[k] == 10:
                    n -= 1
                    if n == 0:
                        return i + k + 1
        n -= found
        i += piece.size
    return buf.size


@_jit()
def last_line_end(buf, start, stop):
    """The index just past the last newline in ``buf[start:stop]``, or ``start`` if there is none."""
    for k in range(stop - 1, start - 1, -1):
        if buf[k] == 10:
            return k + 1
    return start


# --------------------------------------------------------------------------------------------------
# the scan


def scan(buf, code_kind, code_charge, mev_per_gev):
    """The raw scan of ``buf`` (a read-only ``uint8`` array of whole lines ending with a newline):
    a tuple in the field order of :class:`eventlm.io.csv.scan.ScanResult`."""
    return _scan(buf, code_kind, code_charge, _POW10, mev_per_gev)


@_inline
def _token_end(buf, e):
    """The index of the first ``;``, ``,`` or newline at or after ``e`` (every line ends with one)."""
    while buf[e] != 59 and buf[e] != 44 and buf[e] != 10:
        e += 1
    return e


@_inline
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


@_inline
def _load8(buf, i):
    """The 8 bytes ``buf[i:i+8]`` as one little-endian uint64."""
    j = U64(i)
    return (U64(buf[j]) | (U64(buf[j + U64(1)]) << U64(8)) | (U64(buf[j + U64(2)]) << U64(16))
            | (U64(buf[j + U64(3)]) << U64(24)) | (U64(buf[j + U64(4)]) << U64(32))
            | (U64(buf[j + U64(5)]) << U64(40)) | (U64(buf[j + U64(6)]) << U64(48))
            | (U64(buf[j + U64(7)]) << U64(56)))


@_inline
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


@_inline
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


@_flat
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


@_inline
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


@_flat
def _fast_integer(buf, s, e):
    """(True, value) for ``[+-]?digits`` with at most 18 digits, else (False, 0)."""
    i = s
    neg = False
    if i < e and (buf[i] == 45 or buf[i] == 43):  # '-', '+'
        neg = buf[i] == 45
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


@_inline
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


@_alloc
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
        line, event_id[:n_ev], weight[:n_ev], met[:n_ev], met_phi[:n_ev],
        counts[:n_ev], proc_off[:n_ev + 1], proc_chars[:proc_off[n_ev]],
        kind[:n_obj], charge[:n_obj], obj[0, :n_obj], obj[1, :n_obj], obj[2, :n_obj], obj[3, :n_obj],
        bad[:n_bad],
        fb_col[:n_fb], fb_row[:n_fb], fb_line[:n_fb], fb_off[:n_fb + 1],
        fb_chars[:fb_off[n_fb]],
    )


@_flat
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


