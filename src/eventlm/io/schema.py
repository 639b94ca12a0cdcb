"""coffea schema for eventlm ntuples (imports coffea; import this module only where coffea is wanted).

Usage::

    from coffea.nanoevents import NanoEventsFactory
    from eventlm.io.schema import EventlmNanoAODSchema

    events = NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager"   # or "virtual", "dask"
    ).events()
    events.Particle.pt, events.MET.pt, events.anomaly.score   # extras split at the first "_"
    events.Particle.mass, events.Particle[:, 0].delta_r(events.Particle[:, 1])   # four-vectors

It is ``NanoAODSchema`` with two changes for an eventlm ntuple: no warnings about the CMS
cross-references (``Electron_jetIdx`` ...) that such a file does not have (plain ``NanoAODSchema``
gives 16 RuntimeWarnings, which pytest's ``filterwarnings = error`` would turn into errors), and
coffea's four-vector behaviour on ``Particle`` (``PtEtaPhiECandidate``, whose energy is ``E``:
``mass``, ``delta_r``, sums of candidates work), as on ``MET`` (``MissingET``).
Defined at module level so that it pickles (dask, futures executors). :func:`to_event_model` turns
such NanoEvents back into the event model (for scoring, skims).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
from coffea.nanoevents import NanoAODSchema

from eventlm.events import PARTICLE_FIELDS, make_events, make_particles


class EventlmNanoAODSchema(NanoAODSchema):
    """coffea's ``NanoAODSchema`` for eventlm ntuples (see the module docstring)."""

    warn_missing_crossrefs = False
    mixins = {**NanoAODSchema.mixins, "Particle": "PtEtaPhiECandidate"}


def to_event_model(events, process=None) -> ak.Array:
    """Convert a NanoEvents chunk of an eventlm ntuple into the event model (for scoring)."""
    particles = ak.to_packed(events.Particle)
    counts = ak.to_numpy(ak.num(particles.pt, axis=1))
    flat = {f: ak.to_numpy(ak.flatten(particles[f])) for f in PARTICLE_FIELDS}
    n = len(counts)
    out = make_events(
        event_id=ak.to_numpy(events.event),
        process=process if process is not None else np.full(n, "unknown"),
        weight=ak.to_numpy(events.weight),
        met=ak.to_numpy(events.MET.pt),
        met_phi=ak.to_numpy(events.MET.phi),
        particles=make_particles(counts=counts, **flat),
    )
    for name in ("run", "luminosityBlock"):  # the event identity travels into the skims
        if name in events.fields:
            out = ak.with_field(out, ak.to_numpy(events[name]), name)
    return out
