"""Row keys: one 64-bit key per event that names the row whatever file, order or chunking it came in.

::

    from eventlm.rows import row_keys

    keys = row_keys(events)            # uint64, one per event, unique within ``events``

A model directory records which rows it was trained on (``split.json``) as these keys, and every
caller that needs "the test rows" or "the validation rows" selects with them
(:meth:`eventlm.modeldir.ModelDir.select`), never with ``event_id``: event numbers repeat across the
files of a sample (NanoAOD and PHYSLITE fall back to the entry number, which restarts in every file)
and across generator runs.

A key is a hash of what the event *is* (its ``event_id``, MET, MET phi and every particle's kind,
charge, pT, eta, phi and E, as the float32 the event model holds), not of where it was read from: the
same events read from the same files, in any order, any step size, from a path or an array, get the
same keys. ``process`` and ``weight`` are left out (labels and normalisations are assigned by whoever
reads the sample; the row is the same). Reading a file with other reader options gives other events,
hence other keys: they are not the rows the model was trained on.

Unique by construction: where several events of one input are identical in all of the above (the same
file given twice, say), the k-th copy's key is mixed with k, so every row of an input has its own key
(a remaining 64-bit collision, about 1e-10 for 10^5 events, is refused rather than ignored).
"""

from __future__ import annotations

import awkward as ak
import numpy as np

__all__ = ["row_keys"]

_U = np.uint64
_GOLDEN = np.array([0x9E3779B97F4A7C15], dtype=np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wraps modulo 2^64, as intended)."""
    x = np.asarray(x, dtype=np.uint64)
    x = (x ^ (x >> _U(30))) * _U(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U(27))) * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def _bits(values) -> np.ndarray:
    """The float32 bit pattern of ``values`` as uint64."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32)).view(np.uint32).astype(np.uint64)


def _combine(h: np.ndarray, value: np.ndarray) -> np.ndarray:
    return _mix(h * _GOLDEN[0] + value)


def row_keys(events: ak.Array) -> np.ndarray:
    """One uint64 key per event of ``events`` (see the module docstring), unique within ``events``."""
    n = len(events)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    particles = ak.to_packed(events.particles)
    counts = ak.to_numpy(ak.num(particles, axis=1)).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    position = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
    flat = {f: ak.to_numpy(ak.flatten(particles[f])) for f in ("kind", "charge", "pt", "eta", "phi", "E")}
    kind_charge = (flat["kind"].astype(np.int64) * 8 + flat["charge"].astype(np.int64) + 4).astype(np.uint64)
    h = _mix(position.astype(np.uint64) * _U(1 << 16) + kind_charge)
    h = _combine(h, _bits(flat["pt"]) | (_bits(flat["eta"]) << _U(32)))
    h = _combine(h, _bits(flat["phi"]) | (_bits(flat["E"]) << _U(32)))
    # the particles of an event, summed (a particle's position is inside its hash, so order counts);
    # uint64 sums wrap modulo 2^64, and the difference of the running sums is each event's sum
    running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(h, dtype=np.uint64)])
    particle_sum = running[offsets[1:]] - running[offsets[:-1]]
    key = _mix(ak.to_numpy(events.event_id).astype(np.int64).view(np.uint64))
    key = _combine(key, _bits(ak.to_numpy(events.met)) | (_bits(ak.to_numpy(events.met_phi)) << _U(32)))
    key = _combine(key, counts.astype(np.uint64))
    key = _combine(key, particle_sum)
    return _unique(key)


def _unique(key: np.ndarray) -> np.ndarray:
    """``key`` with the k-th repeat of a value (k >= 1, in input order) mixed with k."""
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    new_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    if new_group.all():
        return key
    starts = np.flatnonzero(new_group)
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.append(starts, len(key))))
    out = key.copy()
    repeat = rank > 0
    out[order[repeat]] = _combine(ordered[repeat], rank[repeat].astype(np.uint64))
    if len(np.unique(out)) != len(out):  # a 64-bit collision of two different rows
        raise ValueError("row keys collide; please report this input")
    return out
