"""Event generation: Pythia 8 processes, a parametric ATLAS-like detector, Dark Machines output.

- :mod:`eventlm.generate.pythia`: process cards, seeded sharded batch generation, weights;
- :mod:`eventlm.generate.detector`: the detector model and the event selections;
- :mod:`eventlm.generate.bundle`: regenerates the samples bundled in ``data/``.

Needs the optional extra ``generate`` (pythia8mc and fastjet), imported only when events are made.
See ``docs/generator.md``.
"""

from __future__ import annotations

from eventlm.generate.detector import (
    DetectorParams,
    analysis_preselection,
    darkmachines_preselection,
    reconstruct,
    truth_record,
)
from eventlm.generate.pythia import PROCESSES, UNAVAILABLE, GeneratedSample, generate, get_process

__all__ = [
    "PROCESSES",
    "UNAVAILABLE",
    "DetectorParams",
    "GeneratedSample",
    "analysis_preselection",
    "darkmachines_preselection",
    "generate",
    "get_process",
    "reconstruct",
    "truth_record",
]
