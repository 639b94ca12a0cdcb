"""ROOT ntuples: the TTree ``Events`` (NanoAOD-style branches) written with uproot, and its reader.

Branches (see docs/event-model.md)::

    run, luminosityBlock        uint32   1 and 1 (coffea's NanoAODSchema needs the event ids)
    event                       int64    event_id
    weight                      float64
    process_code                int32    eventlm.events.process_code(process)
    MET_pt, MET_phi             float32
    nParticle                   int32    counter of the Particle_* branches
    Particle_kind, Particle_charge        int8
    Particle_pt, Particle_eta, Particle_phi, Particle_E   float32
    <extra columns>             flat, or jagged with their own counter n<name>

The code -> name table of ``process_code`` is the small TTree ``ProcessNames`` (branches
``process_code`` int32, ``process_name`` string) beside ``Events``; :func:`read_process_names` reads it.
The tree is written with ``mktree`` and chunked ``extend`` (``file[name] = ...`` would write an RNTuple),
LZ4-compressed.

A ``.root`` file with ``Jet_pt`` and no ``Particle_pt`` is read as CMS NanoAOD
(:mod:`eventlm.io.nanoaod`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import PARTICLE_FIELDS, Kind, make_events, process_code

TREE = "Events"
NAMES_TREE = "ProcessNames"
#: Events per ``extend`` call (one basket per branch each).
BASKET_EVENTS = 100_000
EVENT_BRANCHES = ("event", "weight", "process_code", "MET_pt", "MET_phi")
PARTICLE_BRANCHES = tuple(f"Particle_{f}" for f in PARTICLE_FIELDS)
_ID_BRANCHES = ("run", "luminosityBlock")


class RootSink:
    """Streaming TTree writer used by :class:`eventlm.io.EventWriter`."""

    def __init__(self, path: Path):
        import uproot

        self.path = path
        # LZ4 decompresses several times faster than uproot's default ZLIB; lz4 comes with coffea,
        # and ROOT reads it natively
        self._file = uproot.recreate(path, compression=uproot.LZ4(1))
        self._tree = None
        self._names: dict[int, str] = {}

    def write(self, events: ak.Array, extra: dict) -> None:
        codes = self._codes(events.process)
        n = len(events)
        for start in range(0, max(n, 1), BASKET_EVENTS):
            stop = min(start + BASKET_EVENTS, n)
            if stop <= start and self._tree is not None:
                break
            data = self._branches(events[start:stop], codes[start:stop], {k: v[start:stop] for k, v in extra.items()})
            if self._tree is None:
                self._tree = self._file.mktree(TREE, {k: _branch_type(v) for k, v in data.items()})
            if stop > start:
                self._tree.extend(data)

    def _codes(self, process: ak.Array) -> np.ndarray:
        """process_code per event, recording the names (vectorized over distinct labels)."""
        process = ak.to_packed(process)
        if len(process) == 0:
            return np.zeros(0, dtype=np.int32)
        unique, inverse = np.unique(string_labels(process), return_inverse=True)
        codes = np.empty(len(unique), dtype=np.int32)
        for i, name in enumerate(unique):
            code = process_code(str(name))
            known = self._names.setdefault(code, str(name))
            if known != name:
                raise ValueError(f"process labels {known!r} and {name!r} share the code {code}")
            codes[i] = code
        return codes[inverse]

    @staticmethod
    def _branches(events: ak.Array, codes: np.ndarray, extra: dict) -> dict:
        n = len(events)
        parts = events.particles
        data = {
            "run": np.ones(n, dtype=np.uint32),
            "luminosityBlock": np.ones(n, dtype=np.uint32),
            "event": ak.to_numpy(events.event_id).astype(np.int64),
            "weight": ak.to_numpy(events.weight).astype(np.float64),
            "process_code": codes.astype(np.int32),
            "MET_pt": ak.to_numpy(events.met).astype(np.float32),
            "MET_phi": ak.to_numpy(events.met_phi).astype(np.float32),
            # a plain record (no Momentum4D name): uproot splits it into nParticle, Particle_*
            "Particle": ak.zip({f: ak.values_astype(parts[f], t) for f, t in PARTICLE_FIELDS.items()}),
        }
        for name, values in extra.items():
            if name in data or name.startswith("Particle_") or name in ("nParticle",):
                raise ValueError(f"extra column {name!r} clashes with an ntuple branch")
            values = ak.to_packed(ak.Array(values))
            data[name] = ak.to_numpy(values) if values.ndim == 1 else values
        return data

    def close(self) -> None:
        if self._tree is None:  # nothing written: still a valid, empty ntuple
            self.write(_empty(), {})
        names = sorted(self._names.items())
        table = self._file.mktree(NAMES_TREE, {"process_code": np.int32, "process_name": "string"})
        if names:
            table.extend({
                "process_code": np.array([c for c, _ in names], dtype=np.int32),
                "process_name": ak.Array([n for _, n in names]),
            })
        self._file.close()


def string_labels(process: ak.Array) -> np.ndarray:
    """An awkward string array as a numpy object array (via Arrow's dictionary encoding)."""
    import pyarrow as pa

    arr = ak.to_arrow(process, extensionarray=False).cast(pa.string())
    enc = arr.dictionary_encode()
    labels = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    return labels[enc.indices.to_numpy(zero_copy_only=False)]


def _branch_type(values):
    if isinstance(values, np.ndarray):
        return values.dtype
    return values.type.content


def _empty() -> ak.Array:
    from eventlm.events import empty_events

    return empty_events()


# --------------------------------------------------------------------------------------------------
# reading


def read_process_names(path) -> dict[int, str]:
    """The ``process_code -> process`` table stored beside ``Events`` (empty if the file has none)."""
    import uproot

    with uproot.open(path) as f:
        if NAMES_TREE not in f:
            return {}
        table = f[NAMES_TREE].arrays(["process_code", "process_name"], library="np")
    return {int(c): str(n) for c, n in zip(table["process_code"], table["process_name"])}


def _open_tree(path):
    import uproot

    try:
        f = uproot.open(path)
    except Exception as err:  # noqa: BLE001 - uproot raises many types for a bad file
        raise EventFormatError(path, f"not a readable ROOT file ({type(err).__name__}: {err})") from None
    classes = f.classnames()
    if not any(k.split(";")[0] == TREE and c == "TTree" for k, c in classes.items()):
        f.close()
        found = ", ".join(sorted({k.split(";")[0] for k in classes})) or "nothing"
        raise EventFormatError(path, f"no TTree {TREE!r} (the file holds: {found})")
    return f, f[TREE]


def iter_root(path, *, step_size: int, on_error: str = "raise", report=None, **options) -> Iterator[ak.Array]:
    """Yield events of an eventlm ntuple (or a NanoAOD file) in chunks of ``step_size`` entries."""
    f, tree = _open_tree(path)
    with f:
        keys = set(tree.keys())
        if "Particle_pt" not in keys and "Jet_pt" in keys:
            from eventlm.io.nanoaod import iter_nanoaod

            yield from iter_nanoaod(path, tree, step_size=step_size, **options)
            return
        if options:
            raise TypeError(f"options {sorted(options)} only apply to NanoAOD input, not to {path}")
        missing = [b for b in (*EVENT_BRANCHES, "nParticle", *PARTICLE_BRANCHES) if b not in keys]
        if missing:
            raise EventFormatError(path, f"TTree {TREE!r} lacks the branches {', '.join(missing)}")
        names = read_process_names(path)
        counters = {b.count_branch.name for b in tree.branches if b.count_branch is not None}
        core = {*EVENT_BRANCHES, *PARTICLE_BRANCHES, *_ID_BRANCHES}
        extras = [b for b in tree.keys() if b not in core and b not in counters]
        entry0 = 0
        for arrays in tree.iterate([*EVENT_BRANCHES, *PARTICLE_BRANCHES, *extras], step_size=step_size, library="ak"):
            events = _events_from_branches(arrays, names)
            for name in extras:
                events = ak.with_field(events, arrays[name], name)
            events = _check_entries(events, path, entry0, on_error, report)
            entry0 += len(arrays)
            yield events


def _events_from_branches(arrays: ak.Array, names: dict[int, str]) -> ak.Array:
    codes = ak.to_numpy(arrays.process_code).astype(np.int64)
    unique, inverse = np.unique(codes, return_inverse=True)
    labels = ak.Array([names.get(int(c), str(int(c))) for c in unique])
    process = ak.to_packed(labels[inverse]) if len(codes) else ak.Array(np.array([], dtype=str))
    particles = ak.zip({f: arrays[f"Particle_{f}"] for f in PARTICLE_FIELDS})
    return make_events(
        event_id=ak.to_numpy(arrays.event),
        process=process,
        weight=ak.to_numpy(arrays.weight),
        met=ak.to_numpy(arrays.MET_pt),
        met_phi=ak.to_numpy(arrays.MET_phi),
        particles=particles,
    )


def _check_entries(events: ak.Array, path, entry0: int, on_error: str, report) -> ak.Array:
    """Entries with non-finite kinematics or unknown particle kinds are bad (ROOT and Parquet)."""
    parts = events.particles
    n_per = ak.num(parts, axis=1)
    bad_part = ~np.isfinite(ak.flatten(parts.pt)) | ~np.isfinite(ak.flatten(parts.eta))
    bad_part = bad_part | ~np.isfinite(ak.flatten(parts.phi)) | ~np.isfinite(ak.flatten(parts.E))
    kind = ak.to_numpy(ak.flatten(parts.kind))
    bad_part = ak.to_numpy(bad_part) | (kind < 0) | (kind > max(Kind))
    bad = ak.to_numpy(ak.any(ak.unflatten(bad_part, n_per), axis=1))
    bad |= ~np.isfinite(ak.to_numpy(events.met)) | ~np.isfinite(ak.to_numpy(events.met_phi))
    bad |= ~np.isfinite(ak.to_numpy(events.weight))
    if not bad.any():
        return events
    for i in np.flatnonzero(bad):
        problem = "non-finite value or unknown particle kind"
        if on_error != "skip":
            raise EventFormatError(path, problem, entry=entry0 + int(i))
        if report is not None:
            report.add(path, problem, entry=entry0 + int(i))
    return events[~bad]



def coffea_schema():
    """coffea's ``NanoAODSchema`` for eventlm ntuples (:class:`eventlm.io.schema.EventlmNanoAODSchema`)."""
    from eventlm.io.schema import EventlmNanoAODSchema

    return EventlmNanoAODSchema
