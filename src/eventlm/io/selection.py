"""Object selection shared by the experiment readers (CMS NanoAOD, ATLAS PHYSLITE).

A reader turns its own collections into *candidates* (pT [GeV], eta, phi, mass [GeV], charge and
eventlm ``kind`` per object) plus one identification mask per collection, and hands them to
:func:`build_events`, which

1. keeps the objects that pass the kinematic cuts and the identification (coffea's
   :class:`~coffea.analysis_tools.PackedSelection`, one named cut per requirement);
2. removes overlaps (:func:`overlap_removal`, coffea's ``nearest`` / ``delta_r``): a jet within
   ``dr`` of a kept electron, muon or photon is dropped, and a photon within ``dr`` of a kept lepton;
3. builds the event model of :mod:`eventlm.events` (objects ordered by decreasing pT, ``E`` from
   pT, eta and mass).

The same functions run whether the collections come from branches read with uproot or from coffea
NanoEvents, so a file read with :func:`eventlm.io.read_events` and the same file seen inside a
coffea processor give identical events.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.events import energy_from_pt_eta, make_events
from eventlm.extras import require

log = logging.getLogger(__name__)

#: The coffea record that carries ``delta_r`` and ``nearest``.
CANDIDATE = "PtEtaPhiMCandidate"


@dataclass(frozen=True)
class Cut:
    """Kinematic acceptance of one collection: pT > ``pt`` [GeV] and abs(eta) < ``abs_eta``."""

    pt: float
    abs_eta: float


def candidates(pt, eta, phi, mass, charge, kind) -> ak.Array:
    """Jagged candidates with coffea's four-vector behaviour (``delta_r``, ``nearest``)."""
    candidate = require("coffea.nanoevents.methods.candidate", "nanoaod", "reading NanoAOD or PHYSLITE")

    pt = ak.values_astype(pt, np.float32)
    return ak.zip(
        {
            "pt": pt,
            "eta": ak.values_astype(eta, np.float32),
            "phi": ak.values_astype(phi, np.float32),
            "mass": ak.values_astype(mass, np.float32),
            "charge": ak.values_astype(charge, np.int8),
            "kind": ak.values_astype(kind, np.int8),
        },
        with_name=CANDIDATE,
        behavior=candidate.behavior,
    )


def checked_counts(path, branches: dict[str, ak.Array], entry0: int) -> None:
    """The jagged ``branches`` of one collection (name -> array) hold as many objects per entry,
    else an :class:`~eventlm.errors.EventFormatError` naming the two branches and the first entry
    (a miscounted jagged branch, not a "truncated or corrupt" file)."""
    from eventlm.errors import EventFormatError

    jagged = {name: ak.num(values, axis=1) for name, values in branches.items() if values.ndim > 1}
    if len(jagged) < 2:
        return
    (first, counts), *others = jagged.items()
    counts = ak.to_numpy(counts)
    for name, these in others:
        differ = np.flatnonzero(ak.to_numpy(these) != counts)
        if len(differ):
            at = int(differ[0])
            raise EventFormatError(path, f"miscounted jagged branches: {name} holds {int(these[at])} objects, "
                                         f"{first} {int(counts[at])}", entry=entry0 + at)


def constant_like(pt, value, dtype=np.int8) -> ak.Array:
    """A jagged array shaped like ``pt`` filled with ``value``."""
    return ak.values_astype(ak.zeros_like(pt, dtype=dtype), dtype) + np.asarray(value, dtype=dtype)


#: A requirement that rejects every one of at least this many objects passing the kinematic cuts is
#: reported (a branch that exists but was never filled, as the muon IDs of the 2015 Open Data NanoAOD).
SUSPICIOUS_REJECTS = 10


def object_mask(objects: ak.Array, cut: Cut, requirements: dict | None = None, *, suspicious=None) -> ak.Array:
    """Per-object boolean mask: the kinematic cut and every named requirement (jagged bool arrays).

    The cuts are combined by a :class:`coffea.analysis_tools.PackedSelection` over the flattened
    objects, one bit per cut (``pt``, ``eta`` and the names of ``requirements``). ``suspicious(name,
    n)`` is called for a requirement that rejects all of the ``n >= SUSPICIOUS_REJECTS`` objects
    that pass the kinematic cuts.
    """
    PackedSelection = require("coffea.analysis_tools", "nanoaod", "reading NanoAOD or PHYSLITE").PackedSelection

    counts = ak.num(objects.pt, axis=1)
    selection = PackedSelection("uint64")
    selection.add("pt", _flat(objects.pt > cut.pt))
    selection.add("eta", _flat(abs(objects.eta) < cut.abs_eta))
    for name, mask in (requirements or {}).items():
        selection.add(name, _flat(mask))
    if suspicious is not None and requirements:
        n_kinematic = int(np.count_nonzero(selection.all("pt", "eta")))
        if n_kinematic >= SUSPICIOUS_REJECTS:
            for name in requirements:
                if not np.any(selection.all("pt", "eta", name)):
                    suspicious(name, n_kinematic)
    return ak.unflatten(selection.all(*selection.names), counts)


def suspicion_reporter(where: str, warn):
    """A ``suspicious`` callback for :func:`object_mask` that warns once per requirement."""
    seen: set[str] = set()

    def report(name: str, n: int) -> None:
        if name not in seen:
            seen.add(name)
            warn("%s: %s rejects all %d objects that pass the kinematic cuts: is the branch filled? "
                 "(switch it off with %s=None)", where, name, n, name)

    return report


def _flat(mask) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.fill_none(ak.flatten(mask, axis=1), False)), dtype=bool)


def _far_from(objects: ak.Array, others: ak.Array, dr: float) -> ak.Array:
    """True for the objects with no member of ``others`` within ``dr`` (coffea's ``nearest``)."""
    _, distance = objects.nearest(others, return_metric=True)
    return ak.fill_none(distance >= dr, True)


def overlap_removal(
    jets: ak.Array, jet_keep: ak.Array, leptons: list[tuple[ak.Array, ak.Array]],
    photons: ak.Array | None, photon_keep: ak.Array | None, dr: float | None,
) -> tuple[ak.Array, ak.Array | None]:
    """Updated ``(jet_keep, photon_keep)`` after removing overlaps within ``dr`` (None: none removed).

    Precedence: leptons (as kept) > photons > jets. A photon within ``dr`` of a kept lepton is
    dropped; a jet within ``dr`` of a kept lepton or of a kept photon is dropped.
    """
    if dr is None or dr <= 0:
        return jet_keep, photon_keep
    kept_leptons = [obj[keep] for obj, keep in leptons if obj is not None]
    if photons is not None and kept_leptons:
        for lep in kept_leptons:
            photon_keep = photon_keep & _far_from(photons, lep, dr)
    if jets is not None:
        vetoes = list(kept_leptons)
        if photons is not None:
            vetoes.append(photons[photon_keep])
        for veto in vetoes:
            jet_keep = jet_keep & _far_from(jets, veto, dr)
    return jet_keep, photon_keep


def met_from_objects(particles: ak.Array, soft_px=None, soft_py=None) -> tuple[np.ndarray, np.ndarray]:
    """(met, met_phi): minus the vector sum of ``particles``' pT, plus an optional soft term [GeV]."""
    px = ak.to_numpy(ak.sum(particles.pt * np.cos(particles.phi), axis=1)).astype(np.float64)
    py = ak.to_numpy(ak.sum(particles.pt * np.sin(particles.phi), axis=1)).astype(np.float64)
    mpx, mpy = -px, -py
    if soft_px is not None:
        mpx = mpx + np.asarray(soft_px, dtype=np.float64)
        mpy = mpy + np.asarray(soft_py, dtype=np.float64)
    return np.hypot(mpx, mpy), np.arctan2(mpy, mpx)


def kept_particles(parts: list[tuple[ak.Array, ak.Array]]) -> ak.Array:
    """The kept objects of every collection, one list per event, by decreasing pT."""
    pieces = [ak.to_packed(obj[keep]) for obj, keep in parts if obj is not None]
    joined = ak.concatenate(pieces, axis=1) if len(pieces) > 1 else pieces[0]
    order = ak.argsort(joined.pt, axis=1, ascending=False, stable=True)
    return ak.to_packed(joined[order])


#: What ``met``/``met_phi`` hold, recorded per event in the field ``met_flavour`` by the experiment
#: readers (the ntuple's ``MET_pt`` is one documented name for all of them).
MET_FLAVOURS = {0: "computed from the selected objects", 1: "NanoAOD MET (PF)", 2: "NanoAOD PuppiMET",
                3: "PHYSLITE: the selected objects and the MET_Core soft term"}


def build_events(
    particles: ak.Array, *, event_id, weight, process: str, met, met_phi, extra: dict | None = None,
) -> ak.Array:
    """The event model from the kept, ordered candidates (``E`` from pT, eta and mass); ``extra``:
    event-level fields beyond the model (the event identity ``run``, ``luminosityBlock``, ...; trigger
    and filter flags), kept as extra columns."""
    events = make_events(
        event_id=event_id,
        process=process,
        weight=weight,
        met=met,
        met_phi=met_phi,
        particles=ak.zip({
            "kind": particles.kind,
            "charge": particles.charge,
            "pt": particles.pt,
            "eta": particles.eta,
            "phi": particles.phi,
            "E": energy_from_pt_eta(particles.pt, particles.eta, particles.mass),
        }),
    )
    for name, values in (extra or {}).items():
        events = ak.with_field(events, values, name)
    return events


def empty_candidates(n: int) -> ak.Array:
    """Zero objects in each of ``n`` events (a collection the file does not have)."""
    empty = ak.unflatten(np.zeros(0, dtype=np.float32), np.zeros(n, dtype=np.int64))
    return candidates(empty, empty, empty, empty, empty, empty)


def overlap_removed_particles(parts: dict, n: int, overlap_dr: float, *, jets: str, photons: str,
                              leptons: tuple[str, ...]) -> ak.Array:
    """The kept objects of every collection after :func:`overlap_removal`, as one particle list.

    ``parts`` maps a collection name to ``(candidates, keep mask)`` or None (absent from the file);
    ``jets``, ``photons`` and ``leptons`` name the collections that take part in the overlap removal
    (the NanoAOD and PHYSLITE readers differ only in those names). ``parts`` is updated in place.
    """
    jet, jet_keep = parts[jets] or (None, None)
    photon, photon_keep = parts[photons] or (None, None)
    jet_keep, photon_keep = overlap_removal(
        jet, jet_keep, [parts[c] for c in leptons if parts[c] is not None], photon, photon_keep, overlap_dr)
    if jet is not None:
        parts[jets] = (jet, jet_keep)
    if photon is not None:
        parts[photons] = (photon, photon_keep)
    present = [p for p in parts.values() if p is not None]
    return kept_particles(present) if present else empty_candidates(n)



# --------------------------------------------------------------------------------------------------
# coffea NanoEvents input (shared by the NanoAOD and PHYSLITE ``from_nanoevents``)

_WARNED: set = set()


def warn_once(key, level: int = logging.WARNING):
    """A logging call that gives each message once per process for ``key`` (NanoEvents come chunk
    by chunk inside a processor, and one message per chunk would drown the log)."""
    key = repr(key)

    def warn(message, *args):
        seen = (key, message % args)
        if seen not in _WARNED:
            _WARNED.add(seen)
            log.log(level, message, *args)

    return warn


def plain_array(array) -> ak.Array:
    """An awkward array without NanoEvents behaviour (keeps the values, loads virtual buffers)."""
    return ak.Array(ak.to_layout(array))


def default_process(path) -> str:
    """The process label of a file read without one: its name without ``.root``."""
    name = Path(path).name
    stem = name[: -len(".root")] if name.lower().endswith(".root") else Path(name).stem
    return stem or "unknown"


def nanoevents_process(events) -> str:
    """The process label of NanoEvents: the dataset of their metadata, else the file name."""
    try:
        meta = dict(events.metadata or {})
    except (AttributeError, TypeError):
        meta = {}
    if meta.get("dataset"):
        return str(meta["dataset"])
    if meta.get("filename"):
        return default_process(meta["filename"])
    return "unknown"


def nanoevents_fields(events, collections) -> tuple[set, dict]:
    """``(top-level names, {collection: its fields})`` of eager or virtual NanoEvents, for the
    ``collections`` they have; dask-backed events are refused (map over their partitions instead)."""
    if type(events).__module__.startswith("dask_awkward"):
        raise TypeError("from_nanoevents takes eager or virtual NanoEvents (NanoEventsFactory.from_root("
                        "..., mode='eager' or 'virtual')); for dask, map it over the partitions "
                        "(dask_awkward.map_partitions)")
    names = set(events.fields)
    return names, {c: set(events[c].fields) for c in collections if c in names}
