"""The analysis layer: coffea processor, regions, threshold, figures of merit, baselines, demo.

- ``processor``: :class:`AnomalyProcessor` (coffea) and :class:`EventlmNanoAODSchema` for eventlm ntuples
- ``regions``: named selections from the config (a small safe expression language)
- ``config``: the analysis TOML (``analysis/*.toml``)
- ``features``: event variables (n_jets, HT, MET, ...) and fixed-length features for the baselines
- ``threshold``: the CR threshold (Youden's J or a fixed background efficiency), SR yields, Z_A
- ``metrics``: ROC, AUC, signal efficiency at fixed background efficiency, SIC, bootstrap errors
- ``baselines``: isolation forest, dense autoencoder, Deep SVDD
- ``runner``: ``eventlm analyze`` end to end (``inputs``, ``execution``, ``report``: its steps); ``demo``: ``eventlm demo``

Heavy pieces (coffea, torch) are imported lazily: ``from eventlm.analysis import AnomalyProcessor``.
"""

from __future__ import annotations

from eventlm.analysis.regions import Region

__all__ = ["AnomalyProcessor", "EventlmNanoAODSchema", "Region", "load_analysis_config", "run_analysis"]


def __getattr__(name):
    if name in ("AnomalyProcessor", "EventlmNanoAODSchema"):
        from eventlm.analysis import processor

        return getattr(processor, name)
    if name == "load_analysis_config":
        from eventlm.analysis.config import load_analysis_config

        return load_analysis_config
    if name == "run_analysis":
        from eventlm.analysis.runner import run_analysis

        return run_analysis
    raise AttributeError(f"module 'eventlm.analysis' has no attribute {name!r}")
