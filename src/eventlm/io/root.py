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

Reading (:func:`iter_ntuple`) accepts the ntuple as a TTree or as an RNTuple
(``uproot.recreate(path)["Events"] = {...}``, whose particles are one field ``Particle`` of records).
Which reader a ``.root`` file goes to (this one, NanoAOD or PHYSLITE) is decided by
:mod:`eventlm.io.rootfile`, which this module never imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import PARTICLE_FIELDS, labels_at, make_events, make_particles, process_code

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
        self._raw = open(path, "w+b")  # noqa: SIM115 - ours to close, also when uproot's close fails (full disk)
        try:
            self._file = uproot.recreate(self._raw, compression=uproot.LZ4(1))
        except BaseException:
            self._raw.close()
            raise
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
        extra = dict(extra)
        # the event identity where the events carry it (NanoAOD, PHYSLITE), else 1 and 1
        ids = {b: ak.to_numpy(extra.pop(b)).astype(np.uint32) if b in extra else np.ones(n, dtype=np.uint32)
               for b in _ID_BRANCHES}
        data = {
            "run": ids["run"],
            "luminosityBlock": ids["luminosityBlock"],
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
        try:
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
        finally:
            self._raw.close()


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
        return _process_names(f)


def _process_names(f) -> dict[int, str]:
    if NAMES_TREE not in f:
        return {}
    table = f[NAMES_TREE].arrays(["process_code", "process_name"], library="np")
    return {int(c): str(n) for c, n in zip(table["process_code"], table["process_name"])}


def iter_ntuple(path, f, tree, keys, *, step_size, on_error="raise", report=None) -> Iterator[ak.Array]:
    """Yield the events of an eventlm ntuple (TTree or RNTuple) open as ``f`` / ``tree`` with branch
    or field names ``keys`` (:func:`eventlm.io.rootfile.iter_root` finds the tree and dispatches here)."""
    from concurrent.futures import ThreadPoolExecutor

    if is_rntuple_ntuple(keys):  # written as an RNTuple: a field ``Particle`` of records
        yield from _iter_rntuple_ntuple(path, f, tree, step_size, on_error, report)
        return
    keys = set(keys)
    missing = [b for b in (*EVENT_BRANCHES, "nParticle", *PARTICLE_BRANCHES) if b not in keys]
    if missing:
        raise EventFormatError(path, f"TTree {TREE!r} lacks the branches {', '.join(missing)}")
    names = _process_names(f)
    counters = {b.count_branch.name for b in tree.branches if b.count_branch is not None}
    core = {*EVENT_BRANCHES, *PARTICLE_BRANCHES, *_ID_BRANCHES}
    extras = [b for b in tree.keys() if b not in core and b not in counters]
    if carries_identity(tree):  # written from NanoAOD or PHYSLITE: read back as it was
        extras += list(_ID_BRANCHES)
    entry0 = 0
    # baskets are decompressed and interpreted on a few threads (both release the GIL)
    with ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="eventlm-root") as pool:
        for arrays in tree.iterate([*EVENT_BRANCHES, *PARTICLE_BRANCHES, *extras], step_size=step_size,
                                   library="ak", decompression_executor=pool, interpretation_executor=pool):
            events = _events_from_branches(arrays, names, path, entry0)
            for name in extras:
                events = ak.with_field(events, arrays[name], name)
            entry0 += len(arrays)  # bad values: eventlm.sanity judges every chunk in iter_events
            yield events


def carries_identity(tree) -> bool:
    """Whether an ntuple's ``run`` and ``luminosityBlock`` hold an experiment's event identity (any
    value other than the 1 and 1 written for events without one)."""
    if not all(b in tree.keys() for b in _ID_BRANCHES):
        return False
    return any(bool(np.any(tree[b].array(library="np") != 1)) for b in _ID_BRANCHES)


def is_rntuple_ntuple(keys) -> bool:
    """An eventlm ntuple written as an RNTuple (``uproot.recreate(path)["Events"] = {...}``): the
    particles are one field ``Particle`` of records instead of split ``Particle_*`` branches."""
    keys = set(keys)
    return "Particle_pt" not in keys and "Particle" in keys and "MET_pt" in keys


def _iter_rntuple_ntuple(path, f, tree, step_size, on_error, report) -> Iterator[ak.Array]:
    from eventlm.io.uproot_patch import tree_keys

    keys = set(tree_keys(tree))
    missing = [b for b in EVENT_BRANCHES if b not in keys]
    sub = set(tree["Particle"].keys(recursive=False))
    missing += [f"Particle.{fld}" for fld in PARTICLE_FIELDS if fld not in sub]
    if missing:
        raise EventFormatError(path, f"RNTuple {TREE!r} lacks the fields {', '.join(missing)}")
    names = _process_names(f)
    core = {*EVENT_BRANCHES, *_ID_BRANCHES, "nParticle", "Particle"}
    extras = [k for k in keys if k not in core]
    entry0 = 0
    for arrays in tree.iterate([*EVENT_BRANCHES, "Particle", *extras], step_size=step_size, library="ak"):
        split = {f"Particle_{fld}": arrays["Particle"][fld] for fld in PARTICLE_FIELDS}
        events = _events_from_branches({**{b: arrays[b] for b in EVENT_BRANCHES}, **split}, names, path, entry0)
        for name in extras:
            events = ak.with_field(events, arrays[name], name)
        entry0 += len(arrays)  # bad values: eventlm.sanity judges every chunk in iter_events
        yield events


def _events_from_branches(arrays, names: dict[int, str], path, entry0: int) -> ak.Array:
    """The event model from the branches of one chunk, built from their flat numpy contents."""
    offsets, flat = None, {}
    for name in PARTICLE_FIELDS:
        these, flat[name] = flat_contents(arrays[f"Particle_{name}"])
        if offsets is None:
            offsets = these
        elif not np.array_equal(these, offsets):
            first = int(np.flatnonzero(np.diff(these) != np.diff(offsets))[0]) if len(these) == len(offsets) else 0
            raise EventFormatError(path, f"Particle_{name} disagrees with Particle_kind on the number of particles",
                                   entry=entry0 + first)
    for name in PARTICLE_FIELDS:
        _check_numbers(path, f"Particle_{name}", flat[name], entry0, offsets)
    particles = make_particles(counts=np.diff(offsets), **flat)
    columns = {b: ak.to_numpy(arrays[b]) for b in ("event", "process_code", "weight", "MET_pt", "MET_phi")}
    for name, values in columns.items():
        _check_numbers(path, name, values, entry0)
    return make_events(
        event_id=columns["event"],
        process=_labels(columns["process_code"], names),
        weight=columns["weight"],
        met=columns["MET_pt"],
        met_phi=columns["MET_phi"],
        particles=particles,
    )


#: Branches that hold integers (an id, a code, a kind, a charge): a fraction there is refused, never cut.
_INTEGER_BRANCHES = ("event", "process_code", "Particle_kind", "Particle_charge")


def _check_numbers(path, name: str, values: np.ndarray, entry0: int, offsets=None) -> None:
    """A boolean branch where a number belongs, or a fraction in an integer branch, is an error naming
    the branch and the first entry (``offsets``: of a particle branch, to find the event)."""
    kind = values.dtype.kind
    if kind == "b":
        raise EventFormatError(path, f"branch {name} is boolean; it must hold numbers", entry=entry0)
    if name in _INTEGER_BRANCHES and kind == "f":
        fractional = np.flatnonzero(values != np.round(values))
        if len(fractional):
            at = int(fractional[0])
            event = at if offsets is None else int(np.searchsorted(offsets, at, side="right") - 1)
            raise EventFormatError(path, f"{name} = {values[at].item()!r} is not an integer", entry=entry0 + event)


def _labels(codes: np.ndarray, names: dict[int, str]) -> ak.Array:
    """The process labels of ``codes`` (a code without a name becomes its decimal text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if names:  # the usual case, every code named: one hash look-up per event
        found = pc.index_in(pa.array(codes.astype(np.int64)), value_set=pa.array(list(names), pa.int64()))
        if found.null_count == 0:
            return labels_at(list(names.values()), found.to_numpy(zero_copy_only=False))
    codes = codes.astype(np.int64)
    unique, inverse = np.unique(codes, return_inverse=True)
    return labels_at([names.get(int(c), str(int(c))) for c in unique], inverse)


def flat_contents(jagged: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets from 0, flat values)`` of a one-level jagged numeric array (no copy where it can)."""
    layout = ak.to_layout(jagged)
    if isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray):
        offsets = np.asarray(layout.offsets.data)
        values = np.asarray(layout.content.data)[offsets[0]:offsets[-1]]
        return (offsets - offsets[0] if offsets[0] else offsets), values
    counts = ak.to_numpy(ak.num(jagged, axis=1))
    return np.concatenate([[0], np.cumsum(counts)]), ak.to_numpy(ak.flatten(jagged, axis=1))
