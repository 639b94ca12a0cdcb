"""The physics-sanity policy: which events every reader accepts, and how a rejection is reported.

Applied once, in :func:`eventlm.io.iter_events`, to every chunk of every reader (Dark Machines CSV,
eventlm ROOT ntuples, CMS NanoAOD, Parquet), so ``info``, ``convert``, ``score``, ``train`` and
``tokens`` accept and reject the same events. An event is **rejected** when, after conversion to the
event model's dtypes (float32 kinematics):

- a value is not finite (NaN, inf, or a number beyond float32's range, e.g. eta = 1e39),
- pT, E or MET is negative,
- ``abs(eta)`` of a particle exceeds :data:`ETA_MAX`,
- a charge is not -1, 0 or +1, or does not match the kind (jets, b-jets and photons 0; electrons
  and muons -1 or +1), or the kind is not one of :class:`eventlm.events.Kind`,
- the weight is not finite, or the process label is not valid UTF-8.

Everything else is **allowed**: negative eta and phi, negative weights (NLO generators), E below pT,
phi outside [-pi, pi], events without particles, zero pT or MET.

A rejected event raises :class:`eventlm.errors.EventFormatError` naming the file, the line (CSV,
1-based) or entry (ROOT/Parquet, 0-based) and the problem; with ``on_error="skip"`` it is dropped and
recorded in the :class:`eventlm.io.ReadReport` (count and positions), and the other events keep their
order. :class:`DuplicateIds` warns, once per file, when event ids repeat.
"""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import Kind

log = logging.getLogger("eventlm.io")

#: The largest accepted abs(eta) of a particle (detectors reach about 5; 10 leaves room for
#: forward generator-level objects and still rejects garbage such as eta = 1e30).
ETA_MAX = 10.0
#: The charges each kind may carry.
ALLOWED_CHARGES: dict[Kind, tuple[int, ...]] = {
    Kind.JET: (0,), Kind.BJET: (0,), Kind.PHOTON: (0,), Kind.ELECTRON: (-1, 1), Kind.MUON: (-1, 1),
}
_VALID = np.zeros((len(Kind), 3), dtype=bool)  # (kind, charge + 1) -> allowed
for _kind, _charges in ALLOWED_CHARGES.items():
    for _q in _charges:
        _VALID[int(_kind), _q + 1] = True

__all__ = ["ALLOWED_CHARGES", "ETA_MAX", "DuplicateIds", "bad_events", "check_events", "describe"]


def _flat(jagged: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets from 0, flat values)`` of a one-level jagged numeric array."""
    layout = ak.to_layout(jagged)
    if not (isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray)):
        layout = ak.to_layout(ak.to_packed(jagged))
    offsets = np.asarray(layout.offsets.data)
    values = np.asarray(layout.content.data)[offsets[0]:offsets[-1]]
    return offsets - offsets[0], values


def _particle_arrays(events: ak.Array) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    parts = events.particles
    offsets, kind = _flat(parts.kind)
    flat = {"kind": kind}
    for name in ("charge", "pt", "eta", "phi", "E"):
        flat[name] = _flat(parts[name])[1]
    return offsets, flat


def _bad_particles(flat: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per-particle rejection mask, or None when every particle passes (the fast, usual path)."""
    kind, charge = flat["kind"], flat["charge"]
    pt, eta, phi, E = flat["pt"], flat["eta"], flat["phi"], flat["E"]
    if not len(kind):
        return None
    # min/max propagate NaN, so these comparisons are False for any NaN as for any bad value
    ok = (kind.min() >= 0 and kind.max() < len(Kind) and charge.min() >= -1 and charge.max() <= 1
          and pt.min() >= 0 and E.min() >= 0 and np.isfinite(pt.max()) and np.isfinite(E.max())
          and max(-eta.min(), eta.max()) <= ETA_MAX and np.isfinite(phi.min()) and np.isfinite(phi.max()))
    if ok:  # charges are in {-1, 0, +1}: valid when exactly the leptons carry one
        lepton = (kind == int(Kind.ELECTRON)) | (kind == int(Kind.MUON))
        if np.array_equal(charge != 0, lepton):
            return None
    in_range = (kind >= 0) & (kind < len(Kind)) & (charge >= -1) & (charge <= 1)
    valid = np.zeros(len(kind), dtype=bool)
    valid[in_range] = _VALID[kind[in_range], charge[in_range] + 1]
    bad = ~valid
    bad |= ~(pt >= 0) | ~np.isfinite(pt) | ~(E >= 0) | ~np.isfinite(E)
    bad |= ~(np.abs(eta) <= ETA_MAX) | ~np.isfinite(phi)
    return bad


def _invalid_utf8(process: ak.Array) -> np.ndarray | None:
    """Indices of the process labels that are not valid UTF-8 (None if all are)."""
    offsets, chars = _flat(process)
    if not len(chars) or chars.max() < 0x80:  # ASCII, the usual case
        return None
    try:
        chars.tobytes().decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    bad = []
    for i in range(len(offsets) - 1):
        try:
            chars[offsets[i]:offsets[i + 1]].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    return np.asarray(bad, dtype=np.int64)


def bad_events(events: ak.Array) -> np.ndarray:
    """Boolean mask of the events the policy rejects (vectorized; one pass per field when all is well)."""
    bad = np.zeros(len(events), dtype=bool)
    if not len(events):
        return bad
    offsets, flat = _particle_arrays(events)
    bad_part = _bad_particles(flat)
    if bad_part is not None:
        cumulative = np.concatenate([[0], np.cumsum(bad_part)])
        bad |= cumulative[offsets[1:]] != cumulative[offsets[:-1]]
    met = ak.to_numpy(events.met)
    bad |= ~(met >= 0) | ~np.isfinite(met)
    bad |= ~np.isfinite(ak.to_numpy(events.met_phi))
    bad |= ~np.isfinite(ak.to_numpy(events.weight))
    wrong_text = _invalid_utf8(events.process)
    if wrong_text is not None:
        bad[wrong_text] = True
    return bad


def describe(events: ak.Array, indices) -> list[str]:
    """What the policy rejects in each of ``events[indices]``, in words (the first problem found),
    from the flat arrays: a few microseconds per bad event, so a file full of them is still fast."""
    indices = np.asarray(indices, dtype=np.int64)
    offsets, flat = _particle_arrays(events)
    bad_part = _bad_particles(flat)
    first_bad = np.full(len(events), -1, dtype=np.int64)
    if bad_part is not None:
        where = np.flatnonzero(bad_part)
        owner = np.searchsorted(offsets, where, side="right") - 1
        owners, first = np.unique(owner, return_index=True)
        first_bad[owners] = where[first]
    event_values = {name: ak.to_numpy(events[field]) for name, field in
                    (("weight", "weight"), ("MET", "met"), ("MET phi", "met_phi"))}
    text_offsets, chars = _flat(events.process)
    return [_event_problem(i, event_values, text_offsets, chars, offsets, flat, int(first_bad[i]))
            for i in indices.tolist()]


def _event_problem(i, event_values, text_offsets, chars, offsets, flat, j) -> str:
    for name, values in event_values.items():
        if not np.isfinite(values[i]):
            return f"{name} is {float(values[i])} (not finite{' as float32' if name != 'weight' else ''})"
    if not event_values["MET"][i] >= 0:
        return f"MET is negative ({float(event_values['MET'][i]):.6g} GeV)"
    try:
        chars[text_offsets[i]:text_offsets[i + 1]].tobytes().decode("utf-8")
    except UnicodeDecodeError:
        return "process label is not valid UTF-8"
    if j < 0:  # pragma: no cover - mask and description disagree
        return "rejected by the physics-sanity policy"
    k = j - int(offsets[i]) + 1  # 1-based particle number within the event
    kind, charge = int(flat["kind"][j]), int(flat["charge"][j])
    if not 0 <= kind < len(Kind):
        return f"particle {k}: unknown kind {kind}"
    name = Kind(kind).name.lower()
    if charge not in ALLOWED_CHARGES[Kind(kind)]:
        allowed = " or ".join(f"{q:+d}" if q else "0" for q in ALLOWED_CHARGES[Kind(kind)])
        return f"particle {k} ({name}): charge {charge} (a {name} has charge {allowed})"
    for field in ("pt", "eta", "phi", "E"):
        value = float(flat[field][j])
        if not np.isfinite(value):
            return f"particle {k} ({name}): {field} is {value} (not finite as float32)"
    for field in ("pt", "E"):
        value = float(flat[field][j])
        if not value >= 0:
            return f"particle {k} ({name}): negative {field} ({value:.6g} GeV)"
    return f"particle {k} ({name}): |eta| = {abs(float(flat['eta'][j])):.6g} beyond {ETA_MAX:g}"


def check_events(events: ak.Array, path, *, positions=None, unit: str = "entry", on_error: str = "raise",
                 report=None) -> ak.Array:
    """``events`` without the ones the policy rejects (``on_error="skip"``: each recorded in ``report``
    at its position), or :class:`EventFormatError` for the first one (``on_error="raise"``).

    ``positions``: the line (``unit="line"``) or entry (``unit="entry"``) of each event in ``path``;
    ``None``: the index in ``events``.
    """
    bad = bad_events(events)
    if not bad.any():
        return events
    where = np.flatnonzero(bad)
    if on_error != "skip":
        where = where[:1]
    for i, problem in zip(where.tolist(), describe(events, where)):
        position = int(positions[i]) if positions is not None else i
        at = {"line": position} if unit == "line" else {"entry": position}
        if on_error != "skip":
            raise EventFormatError(path, problem, **at)
        if report is not None:
            report.add(path, problem, **at)
    return events[~bad]


class DuplicateIds:
    """Collects the event ids of one file, chunk by chunk, and warns once if some repeat.

    Ids that only increase (the usual case) are answered without a sort; otherwise one sort of all
    the file's ids (8 bytes per event) at the end of the file finds the repeats.
    """

    def __init__(self, path, unit: str = "entry"):
        self.path = path
        self.unit = unit
        self._ids: list[np.ndarray] = []
        self._increasing = True
        self._last: int | None = None

    def add(self, events: ak.Array, positions=None) -> None:
        ids = ak.to_numpy(events.event_id)
        if not len(ids):
            return
        if self._increasing:
            self._increasing = bool((ids[1:] > ids[:-1]).all()) and (self._last is None or ids[0] > self._last)
        self._ids.append(np.array(ids, dtype=np.int64))  # a copy: the chunk itself is not kept alive
        self._last = int(ids[-1])

    def warn(self) -> int:
        """Log one warning if ids repeat; returns the number of events whose id was seen before."""
        if self._increasing or not self._ids:
            return 0
        ids = np.concatenate(self._ids)
        order = np.argsort(ids, kind="stable")
        repeat = np.zeros(len(ids), dtype=bool)
        repeat[order[1:]] = ids[order[1:]] == ids[order[:-1]]
        n = int(repeat.sum())
        if n:
            first = int(np.flatnonzero(repeat)[0])
            log.warning("%s: %d events repeat an event id seen before in the file (first: event_id %d, the "
                        "%s event read); event ids should be unique within a file", self.path, n,
                        int(ids[first]), _ordinal(first + 1))
        return n


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _kept_positions(first: int, n_events: int, skipped: list[int]) -> np.ndarray | None:
    """Positions of the ``n_events`` events a reader yielded from the span starting at ``first``, the
    reader having dropped (and reported) the positions ``skipped`` of that span."""
    span = np.arange(first, first + n_events + len(skipped), dtype=np.int64)
    kept = np.setdiff1d(span, np.asarray(skipped, dtype=np.int64), assume_unique=True) if skipped else span
    return kept if len(kept) == n_events else None


def checked_chunks(chunks, path, fmt: str, *, on_error: str = "raise", report=None):
    """The chunks of one reader with the policy applied (see the module docstring), duplicate ids
    warned once per file, and any failure of the reader reported as an :class:`EventFormatError`
    naming the file (a truncated or corrupt ROOT/Parquet file, an unreadable CSV)."""
    from eventlm.errors import EventlmError

    unit = "line" if fmt == "csv" else "entry"
    first = 1 if fmt == "csv" else 0
    seen = report.n_skipped if report is not None else 0
    ids = DuplicateIds(path, unit)
    finished = False
    chunks = iter(chunks)
    try:
        while True:
            # a value beyond float32's range becomes inf in the cast, and the check below names it
            with np.errstate(over="ignore", invalid="ignore"):
                chunk = next(chunks, None)
            if chunk is None:
                break
            skipped = []
            if report is not None:
                if fmt == "csv":
                    _refine_csv_problems(path, report, seen)
                skipped = [s.line if unit == "line" else s.entry for s in report.skipped[seen:]]
                skipped = [p for p in skipped if p is not None]
            positions = _kept_positions(first, len(chunk), skipped)
            first += len(chunk) + len(skipped)
            kept = check_events(chunk, path, positions=positions, unit=unit, on_error=on_error, report=report)
            if positions is not None and len(kept) != len(chunk):
                positions = positions[~bad_events(chunk)] if len(kept) else positions[:0]
            seen = report.n_skipped if report is not None else 0
            ids.add(kept, positions)
            yield kept
        finished = True
    except EventFormatError as err:
        if fmt == "csv" and err.line is not None and err.problem == _MALFORMED:
            better = _csv_problem(path, err.line)
            if better:
                raise EventFormatError(path, better, line=err.line) from None
        raise
    except EventlmError:
        raise
    except Exception as err:  # noqa: BLE001 - uproot and pyarrow raise many types for a corrupt file
        if fmt != "csv":
            what = "ROOT" if fmt == "root" else "Parquet"
            raise EventFormatError(path, f"not a readable {what} file: truncated or corrupt "
                                         f"({type(err).__name__}: {err})") from None
        if isinstance(err, (OSError, EOFError, UnicodeError, MemoryError)):
            raise EventFormatError(path, f"cannot be read ({type(err).__name__}: {err})") from None
        raise  # the CSV reader reports bad input itself: anything else is a bug
    finally:
        if finished:
            ids.warn()


_MALFORMED = "malformed line"


def _csv_problem(path, line: int) -> str | None:
    """A closer look at a CSV line the reader could only call malformed (read again: an error path)."""
    import gzip
    import itertools

    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = next(itertools.islice(fh, line - 1, line), b"")
    except (OSError, EOFError):
        return None
    fields = raw.rstrip(b"\r\n").split(b";")
    if len(fields) > 1 and b"," in fields[1]:
        label = fields[1].decode("utf-8", errors="replace")
        return (f"process label {label!r} contains ',' (Dark Machines CSV separates object values with ','; "
                "a label may not contain ',' or ';')")
    return None


def _refine_csv_problems(path, report, start: int) -> None:
    for k in range(start, len(report.skipped)):
        s = report.skipped[k]
        if s.problem == _MALFORMED and s.line is not None:
            better = _csv_problem(path, s.line)
            if better:
                report.skipped[k] = type(s)(s.path, better, s.line, s.entry)
