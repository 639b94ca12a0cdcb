"""Writing the Dark Machines CSV: vectorized formatting with Arrow string kernels.

Every float32 value is written with the fewest digits that read back to the same float32: Arrow's
shortest text of the float32 value (in MeV for E, pT and MET) where that reads back exactly, and
else 9 significant digits, which always do. So CSV -> CSV -> CSV is stable bit for bit. Extra
columns cannot be written to CSV: the format has no place for them (``ValueError``; write ``.root``
or ``.parquet`` instead).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from eventlm.events import CODES_BY_KIND
from eventlm.io.csv.scan import CODES, MEV_PER_GEV

_EXACT_POW10 = np.array([float(10**k) for k in range(23)])


def float32_text(values, scale: float = 1.0) -> pa.Array:
    """The text of ``values * scale`` (``values`` float32, ``scale`` a power of ten such as 1000:
    GeV to MeV) such that the reader's ``float32(float64(text) / scale)`` gives back ``values``
    exactly (non-finite values are written as they are).

    The shortest text of the float32 product is enough for most values; about 3 % of them (the
    product is rounded to float32 before it is printed, and the division rounds again) need more
    digits: those are written with 9 significant digits of the exact float64 product, which is
    within 5e-9 (relative) of it, well inside half a float32 step (3e-8 relative at least).
    """
    x = np.asarray(values, dtype=np.float32)
    exact = x.astype(np.float64) * scale  # exact: 24 bits times a power of ten up to 10^6
    text = pc.cast(pa.array(exact.astype(np.float32)), pa.string())
    wrong = _reads_back_wrong(text, x, scale)
    if wrong.any():
        better = pc.cast(pa.array(_significant(exact[wrong], 9)), pa.string())
        text = pc.replace_with_mask(text, pa.array(wrong), better)
        still = _reads_back_wrong(text, x, scale)
        if still.any():  # pragma: no cover - 9 digits always suffice; the float64 text is exact
            text = pc.replace_with_mask(text, pa.array(still), pc.cast(pa.array(exact[still]), pa.string()))
    return text


def _reads_back_wrong(text: pa.Array, x: np.ndarray, scale: float) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        back = (pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False) / scale).astype(np.float32)
    return (back != x) & np.isfinite(x)


def _significant(v: np.ndarray, digits: int) -> np.ndarray:
    """The float64 nearest to ``v`` rounded to ``digits`` significant decimal digits (v finite, not 0)."""
    e = np.floor(np.log10(np.abs(v))).astype(np.int64)
    k = digits - 1 - e  # v * 10^k has ``digits`` digits before the point
    mantissa = np.rint(np.where(k >= 0, v * _EXACT_POW10[np.clip(k, 0, 22)], v / _EXACT_POW10[np.clip(-k, 0, 22)]))
    return np.where(k >= 0, mantissa / _EXACT_POW10[np.clip(k, 0, 22)], mantissa * _EXACT_POW10[np.clip(-k, 0, 22)])


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
    code_of = np.full((8, 3), -1, dtype=np.int64)  # (kind, charge + 1) -> index into CODES
    for (k, q), c in CODES_BY_KIND.items():
        code_of[k, q + 1] = CODES.index(c)
    if len(kind) and (kind.min() < 0 or kind.max() > 7 or charge.min() < -1 or charge.max() > 1):
        raise ValueError("particles with a kind or charge that has no Dark Machines code")
    code_idx = code_of[kind, charge + 1] if len(kind) else kind
    if (code_idx < 0).any():
        raise ValueError("particles with a (kind, charge) that has no Dark Machines code")
    codes = pa.array(np.array(CODES, dtype=object)[code_idx], type=pa.string()) if len(kind) else pa.array([], pa.string())

    def column(values) -> np.ndarray:
        return ak.to_numpy(ak.flatten(values)) if values.ndim > 1 else ak.to_numpy(values)

    objects = pc.binary_join_element_wise(
        codes, float32_text(column(parts.E), MEV_PER_GEV), float32_text(column(parts.pt), MEV_PER_GEV),
        float32_text(column(parts.eta)), float32_text(column(parts.phi)), ",",
    )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    per_event = pa.ListArray.from_arrays(pa.array(offsets), objects)
    joined = pc.binary_join(per_event, ";")  # "" for events without objects
    objs = pc.if_else(pa.array(counts > 0), pc.binary_join_element_wise(joined, pa.scalar(""), ";"), pa.scalar(""))
    header = pc.binary_join_element_wise(
        pc.cast(pa.array(ak.to_numpy(events.event_id).astype(np.int64)), pa.string()),
        process,
        pc.cast(pa.array(ak.to_numpy(events.weight).astype(np.float64)), pa.string()),
        float32_text(column(events.met), MEV_PER_GEV), float32_text(column(events.met_phi)), pa.scalar(""), ";",
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
            # no name and no time in the gzip header: the same events give the same bytes, whatever
            # the (temporary) file name and the hour
            self._fh = gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0)
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
