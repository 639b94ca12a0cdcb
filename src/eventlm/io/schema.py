"""coffea schema for eventlm ntuples (imports coffea; import this module only where coffea is wanted).

Usage::

    from coffea.nanoevents import NanoEventsFactory
    from eventlm.io.schema import EventlmNanoAODSchema

    events = NanoEventsFactory.from_root(
        {path: "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager"   # or "virtual", "dask"
    ).events()
    events.Particle.pt, events.MET.pt, events.anomaly.score   # extras split at the first "_"

It is ``NanoAODSchema`` without the warnings about CMS cross-references (``Electron_jetIdx`` ...),
which an eventlm ntuple does not have (pytest's ``filterwarnings = error`` would turn them into errors).
Defined at module level so that it pickles (dask, futures executors).
"""

from __future__ import annotations

from coffea.nanoevents import NanoAODSchema


class EventlmNanoAODSchema(NanoAODSchema):
    warn_missing_crossrefs = False
