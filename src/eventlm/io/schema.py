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
Defined at module level so that it pickles (dask, futures executors).
"""

from __future__ import annotations

from coffea.nanoevents import NanoAODSchema


class EventlmNanoAODSchema(NanoAODSchema):
    """coffea's ``NanoAODSchema`` for eventlm ntuples (see the module docstring)."""

    warn_missing_crossrefs = False
    mixins = {**NanoAODSchema.mixins, "Particle": "PtEtaPhiECandidate"}
