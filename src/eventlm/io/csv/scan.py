"""The scan of a block of CSV lines, as a named result: one compiled pass per piece of the block,
large blocks cut into pieces scanned on two threads, and the pieces' results joined.

:class:`ScanResult` holds what :mod:`eventlm.io.csv.kernel` found in the bytes: the event and
object columns, the process labels as Arrow-style offsets and characters, the 0-based indices of
the bad lines, and the number texts the compiled fast path left to Arrow (the "fallbacks": their
column, row, line and text).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from eventlm.events import DARKMACHINES_CODES

MEV_PER_GEV = 1000.0
_NL = ord("\n")
CODES = list(DARKMACHINES_CODES)
# the scan decodes object codes by their bytes into indices of this order
assert CODES == ["j", "b", "e-", "e+", "m-", "m+", "g"], CODES
_CODE_KIND = np.array([int(DARKMACHINES_CODES[c][0]) for c in CODES], dtype=np.int8)
_CODE_CHARGE = np.array([DARKMACHINES_CODES[c][1] for c in CODES], dtype=np.int8)

#: The fallback column of event_id (0-2 are weight/MET/METphi, 3-6 E/pt/eta/phi), as the kernel writes it.
FB_INT = 7
#: Blocks at least this large are scanned as two halves on two threads (the scan releases the GIL).
PARALLEL_BYTES = 4 << 20


class ScanResult(NamedTuple):
    """What the scan found in one piece of lines (row and line indices are 0-based in the piece)."""

    n_lines: int
    event_id: np.ndarray  # int64 (n_events,)
    weight: np.ndarray  # float64
    met: np.ndarray  # float32, GeV
    met_phi: np.ndarray  # float32
    counts: np.ndarray  # int64, objects per event
    proc_off: np.ndarray  # int64 (n_events + 1,), offsets into proc_chars
    proc_chars: np.ndarray  # uint8
    kind: np.ndarray  # int8 (n_objects,)
    charge: np.ndarray  # int8
    E: np.ndarray  # float32, GeV
    pt: np.ndarray  # float32, GeV
    eta: np.ndarray  # float32
    phi: np.ndarray  # float32
    bad: np.ndarray  # int64, lines that break the grammar
    fb_col: np.ndarray  # int8: 0-2 weight/MET/METphi, 3-6 E/pt/eta/phi, 7 event_id (kernel.FB_INT)
    fb_row: np.ndarray  # int64: the event (columns 0-2, 7) or object (3-6) the text belongs to
    fb_line: np.ndarray  # int64
    fb_off: np.ndarray  # int64 (n_fallbacks + 1,), offsets into fb_chars
    fb_chars: np.ndarray  # uint8

    @property
    def n_events(self) -> int:
        return len(self.event_id)

    @property
    def n_objects(self) -> int:
        return len(self.kind)


def _readonly(buf: np.ndarray) -> np.ndarray:
    """A read-only view: the kernel is compiled (and cached) for one array type, the read-only one
    that memory maps and ``bytes`` give, so a writable array must not make it compile again."""
    if not buf.flags.writeable:
        return buf
    view = buf.view()
    view.flags.writeable = False
    return view


def scan_piece(buf: np.ndarray) -> ScanResult:
    """Scan ``buf`` (whole lines, ending with a newline) in this thread."""
    from eventlm.io.csv import kernel

    return ScanResult(*kernel.scan(_readonly(buf), _CODE_KIND, _CODE_CHARGE, MEV_PER_GEV))


def scan_block(buf: np.ndarray, cuts: Sequence[int] | None = None) -> ScanResult:
    """Scan ``buf`` (whole lines, ending with a newline). A block of :data:`PARALLEL_BYTES` or more
    is cut at a line end near its middle and the halves are scanned on two threads; ``cuts``
    (indices just past a newline) cuts it there instead, each piece on its own thread (for tests)."""
    if cuts is None:
        cuts = []
        if buf.size >= PARALLEL_BYTES and (os.cpu_count() or 1) > 1:
            nl = np.flatnonzero(buf[buf.size // 2:] == _NL)
            if len(nl) and buf.size // 2 + int(nl[0]) + 1 < buf.size:
                cuts = [buf.size // 2 + int(nl[0]) + 1]
    bounds = [0, *cuts, buf.size]
    pieces = [buf[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    if len(pieces) == 1:
        return scan_piece(buf)
    # plain threads (not a pool: they cost nothing next to the scan and are fork-safe)
    results: list[ScanResult | None] = [None] * len(pieces)

    def work(i: int) -> None:
        results[i] = scan_piece(pieces[i])

    threads = [threading.Thread(target=work, args=(i,), name="eventlm-csv-scan") for i in range(1, len(pieces))]
    for t in threads:
        t.start()
    try:
        work(0)
    finally:
        for t in threads:
            t.join()
    if any(r is None for r in results):  # pragma: no cover - the scan does not raise
        raise RuntimeError("CSV scan thread failed")
    return join(results)


def join(parts: Sequence[ScanResult]) -> ScanResult:
    """The scan result of consecutive pieces: their columns concatenated, with the offsets, rows and
    line numbers of each piece shifted by those before it."""
    if len(parts) == 1:
        return parts[0]
    n_ev = np.cumsum([0] + [p.n_events for p in parts[:-1]])
    n_obj = np.cumsum([0] + [p.n_objects for p in parts[:-1]])
    n_lines = np.cumsum([0] + [p.n_lines for p in parts[:-1]])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    def offsets(name: str) -> np.ndarray:
        arrays = [getattr(p, name) for p in parts]
        shift = np.cumsum([0] + [int(a[-1]) for a in arrays[:-1]])
        return np.concatenate([arrays[0]] + [a[1:] + s for a, s in zip(arrays[1:], shift[1:])])

    fb_row = []
    for p, ev, obj in zip(parts, n_ev, n_obj):
        is_event_col = (p.fb_col <= 2) | (p.fb_col == FB_INT)  # fallback rows: events or objects
        fb_row.append(p.fb_row + np.where(is_event_col, ev, obj))
    return ScanResult(
        n_lines=int(sum(p.n_lines for p in parts)),
        event_id=cat("event_id"), weight=cat("weight"), met=cat("met"), met_phi=cat("met_phi"),
        counts=cat("counts"), proc_off=offsets("proc_off"), proc_chars=cat("proc_chars"),
        kind=cat("kind"), charge=cat("charge"), E=cat("E"), pt=cat("pt"), eta=cat("eta"), phi=cat("phi"),
        bad=np.concatenate([p.bad + s for p, s in zip(parts, n_lines)]),
        fb_col=cat("fb_col"), fb_row=np.concatenate(fb_row),
        fb_line=np.concatenate([p.fb_line + s for p, s in zip(parts, n_lines)]),
        fb_off=offsets("fb_off"), fb_chars=cat("fb_chars"),
    )
