"""The event model: one awkward record per collision event.

Every reader returns, and every writer takes, an array of this shape (all momenta in GeV)::

    N * {
        event_id: int64,            # unique within a file; the key that follows an event everywhere
        process:  string,           # physics label, e.g. "ttbar", "gluino_1000"
        weight:   float64,          # event weight (sigma / N * luminosity for generated samples)
        met:      float32,          # missing transverse momentum [GeV]
        met_phi:  float32,          # its azimuth [rad]
        particles: var * Momentum4D[
            kind:   int8,           # Kind enum below
            charge: int8,           # -1, 0, +1 (0 for jets and photons)
            pt:     float32,        # [GeV]
            eta:    float32,
            phi:    float32,        # [rad], in [-pi, pi]
            E:      float32,        # [GeV]
        ],
    }

``particles`` carries vector's ``Momentum4D`` behaviour, so ``events.particles.mass`` and
``particles[:, 0].deltaR(particles[:, 1])`` work. The Dark Machines CSV is in MeV; the conversion
happens in the CSV reader and writer and nowhere else.
"""

from __future__ import annotations

import enum

import awkward as ak
import numpy as np
import vector

vector.register_awkward()

#: Event-level fields and their dtypes, in the order writers emit them.
EVENT_FIELDS: dict[str, str] = {
    "event_id": "int64",
    "process": "string",
    "weight": "float64",
    "met": "float32",
    "met_phi": "float32",
}
#: Per-particle fields and their dtypes.
PARTICLE_FIELDS: dict[str, str] = {
    "kind": "int8",
    "charge": "int8",
    "pt": "float32",
    "eta": "float32",
    "phi": "float32",
    "E": "float32",
}
#: The awkward record name that gives particles vector's four-momentum behaviour.
PARTICLE_RECORD = "Momentum4D"


class Kind(enum.IntEnum):
    """Reconstructed object type. The one place these integers are defined.

    Compares with awkward and numpy arrays like the int8 ``kind`` field it is stored in:
    ``events.particles[events.particles.kind == Kind.BJET]``.
    """

    JET = 0
    BJET = 1
    ELECTRON = 2
    MUON = 3
    PHOTON = 4

    @property
    def dtype(self) -> np.dtype:
        # awkward's NEP-50 ufunc path takes the dtype of a scalar that has one and otherwise expects
        # exactly int/float/complex: an IntEnum member was a TypeError in `kind == Kind.BJET`
        return np.dtype(np.int8)


#: Dark Machines object codes -> (kind, charge).
DARKMACHINES_CODES: dict[str, tuple[Kind, int]] = {
    "j": (Kind.JET, 0),
    "b": (Kind.BJET, 0),
    "e-": (Kind.ELECTRON, -1),
    "e+": (Kind.ELECTRON, +1),
    "m-": (Kind.MUON, -1),
    "m+": (Kind.MUON, +1),
    "g": (Kind.PHOTON, 0),
}
#: (kind, charge) -> Dark Machines object code.
CODES_BY_KIND: dict[tuple[int, int], str] = {(int(k), q): c for c, (k, q) in DARKMACHINES_CODES.items()}


def make_particles(
    kind, charge, pt, eta, phi, E, counts
) -> ak.Array:
    """Build the jagged particle array from flat per-particle arrays and per-event counts."""
    columns = {"kind": (kind, np.int8), "charge": (charge, np.int8), "pt": (pt, np.float32),
               "eta": (eta, np.float32), "phi": (phi, np.float32), "E": (E, np.float32)}
    return jagged_records(columns, counts, with_name=PARTICLE_RECORD)


def jagged_records(columns: dict, counts, *, with_name: str | None = None) -> ak.Array:
    """A jagged array of records from flat columns (``{name: (values, dtype)}``) and per-event
    counts; a column whose length is not the sum of the counts is a one-line ``ValueError``."""
    counts = np.asarray(counts, dtype=np.int64)
    flat = {name: np.asarray(values, dtype=dtype) for name, (values, dtype) in columns.items()}
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if len(counts) and counts.min() < 0:
        raise ValueError("negative particle counts")
    n = int(offsets[-1])
    for name, values in flat.items():
        if len(values) != n:
            raise ValueError(f"particle field {name!r} has {len(values)} entries, counts sum to {n}")
    record = ak.zip(flat, with_name=with_name)
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record.layout), behavior=record.behavior)


def make_events(
    *,
    event_id,
    process,
    weight,
    met,
    met_phi,
    particles: ak.Array,
) -> ak.Array:
    """Assemble an event array in the canonical schema (casting every field to its dtype)."""
    n = len(particles)
    process = _as_string_array(process, n)
    fields = {
        "event_id": np.asarray(event_id, dtype=np.int64),
        "process": process,
        "weight": np.asarray(weight, dtype=np.float64),
        "met": np.asarray(met, dtype=np.float32),
        "met_phi": np.asarray(met_phi, dtype=np.float32),
    }
    for name, values in fields.items():
        if len(values) != n:
            raise ValueError(f"event field {name!r} has {len(values)} entries for {n} events")
    fields["particles"] = with_particle_behavior(particles)
    # the layout alone: vector's Momentum4D comes from the global ``ak.behavior``, never from a
    # behaviour dict that a reader's inputs carried along (coffea's candidates hold lambdas, which
    # cannot be pickled to a worker process: ``score --workers N`` on NanoAOD and PHYSLITE)
    return ak.Array(ak.zip(fields, depth_limit=1).layout)


def string_array(offsets: np.ndarray, chars: np.ndarray) -> ak.Array:
    """An awkward string array from its ``int64`` offsets and ``uint8`` characters (no copy)."""
    return ak.Array(ak.contents.ListOffsetArray(
        ak.index.Index64(np.asarray(offsets, dtype=np.int64)),
        ak.contents.NumpyArray(np.asarray(chars, dtype=np.uint8), parameters={"__array__": "char"}),
        parameters={"__array__": "string"},
    ))


def labels_at(labels, index: np.ndarray) -> ak.Array:
    """The string array ``labels[index]`` (a few distinct labels, many events), built by Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    taken = pc.take(pa.array([str(label) for label in labels], type=pa.large_string()),
                    pa.array(np.asarray(index, dtype=np.int64)))
    offsets = np.frombuffer(taken.buffers()[1], dtype=np.int64, count=len(taken) + 1)
    chars = taken.buffers()[2]
    chars = np.frombuffer(chars, dtype=np.uint8) if chars is not None else np.zeros(0, dtype=np.uint8)
    return string_array(offsets, chars[:offsets[-1]])


def _as_string_array(process, n: int) -> ak.Array:
    if isinstance(process, str):
        return ak.Array([process] * n)
    if isinstance(process, ak.Array):
        return process
    return ak.Array([str(p) for p in process]) if n else ak.Array(np.array([], dtype=str))


def with_particle_behavior(particles: ak.Array) -> ak.Array:
    """Return ``particles`` with the canonical dtypes and the Momentum4D behaviour attached."""
    particles = ak.Array(particles)
    fields = {name: ak.values_astype(particles[name], dtype) for name, dtype in PARTICLE_FIELDS.items()}
    return ak.zip(fields, with_name=PARTICLE_RECORD)


def canonical(events: ak.Array) -> ak.Array:
    """Cast an array that has the event-model fields (e.g. read back from Parquet) to the schema."""
    missing = [f for f in (*EVENT_FIELDS, "particles") if f not in events.fields]
    if missing:
        raise ValueError(f"not an event array: missing fields {missing}")
    extra = {f: events[f] for f in events.fields if f not in EVENT_FIELDS and f != "particles"}
    out = make_events(
        event_id=ak.to_numpy(events.event_id),
        process=events.process,
        weight=ak.to_numpy(events.weight),
        met=ak.to_numpy(events.met),
        met_phi=ak.to_numpy(events.met_phi),
        particles=events.particles,
    )
    for name, values in extra.items():
        out = ak.with_field(out, values, name)
    return out


def empty_events() -> ak.Array:
    """A zero-length event array with the full schema."""
    return make_events(
        event_id=[], process=[], weight=[], met=[], met_phi=[],
        particles=make_particles([], [], [], [], [], [], counts=[]),
    )


def energy_from_pt_eta(pt, eta, mass=0.0):
    """E from (pt, eta, mass): sqrt((pt cosh eta)^2 + m^2). Vectorized over numpy/awkward arrays."""
    p = pt * np.cosh(eta)
    return np.sqrt(p * p + mass * mass)


def process_code(name: str) -> int:
    """Stable int32 code of a process label (CRC-32 of its UTF-8 bytes, top bit cleared).

    ROOT ntuples store ``process_code`` per event, with the code -> name table written beside the tree,
    so the label survives a round trip; the code needs no registry and is the same in every file.
    """
    import zlib

    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF
