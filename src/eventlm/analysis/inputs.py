"""The inputs of ``eventlm analyze``: every dataset read through :mod:`eventlm.io`, the model's
test split kept (its training events are never analysed; weights rescaled so each process keeps its
cross section), written as ntuples for the processor, and the per-event columns read back from its skims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.analysis.config import AnalysisConfig

log = logging.getLogger(__name__)

BACKGROUND = "background"


@dataclass
class Prepared:
    """The analysed events of every dataset (event model, sorted by event id) and their ntuples."""

    events: dict[str, ak.Array]
    ntuples: dict[str, Path]
    train_background: ak.Array | None  # the model's training split (for the baselines)
    notes: list[str] = field(default_factory=list)


def _sorted_by_id(events: ak.Array) -> ak.Array:
    order = np.argsort(ak.to_numpy(events.event_id), kind="stable")
    return events[order]


def rescale_to_full(events: ak.Array, full: ak.Array) -> ak.Array:
    """Scale weights per process so each keeps the total weight it has in ``full``."""
    proc = np.asarray(ak.to_list(events.process), dtype=object)
    proc_full = np.asarray(ak.to_list(full.process), dtype=object)
    w = ak.to_numpy(events.weight).astype(np.float64)
    w_full = ak.to_numpy(full.weight).astype(np.float64)
    out = w.copy()
    for p in np.unique(proc):
        sel = proc == p
        sub = w[sel].sum()
        if sub > 0:
            out[sel] *= w_full[proc_full == p].sum() / sub
    return ak.with_field(events, out, "weight")


def prepare_inputs(config: AnalysisConfig, out_dir: Path, model_dir: Path | None, *,
                   need_train: bool = True) -> Prepared:
    """Read the inputs, keep the background test split, write one ntuple per dataset."""
    from eventlm.io import read_events, write_events

    inputs = config.inputs
    if not inputs.background:
        raise ValueError(f"{config.path}: [inputs] background is empty")
    if not inputs.signals:
        raise ValueError(f"{config.path}: [inputs.signals] is empty")
    ntuple_dir = out_dir / "ntuples"
    ntuple_dir.mkdir(parents=True, exist_ok=True)
    notes = []
    log.info("reading background: %s", ", ".join(p.name for p in inputs.background))
    background = read_events(list(inputs.background), max_events=inputs.max_events)
    ids = ak.to_numpy(background.event_id)
    train = None
    split_file = model_dir / "split.json" if model_dir is not None else None
    if split_file is not None and split_file.exists():
        from eventlm.modeldir import load_split

        split = load_split(model_dir)
        train = background[np.isin(ids, split["train"])]
        if inputs.background_events == "test":
            test = background[np.isin(ids, split["test"])]
            if len(test) == 0:
                raise ValueError(f"none of the background events is in the test split of {model_dir}")
            notes.append(
                f"background: the {len(test)} events of the model's test split ({len(background)} read; weights "
                "scaled per process to keep each process's total weight)"
            )
            background = rescale_to_full(test, background)
    else:
        notes.append(f"background: all {len(background)} events (no model split available)")
    if need_train and config.baselines.names and (train is None or len(train) == 0):
        # no split to follow: the baselines train on a seeded half and the table says so
        rng = np.random.default_rng([config.study.seed, 7])
        half = rng.permutation(len(background))[: len(background) // 2]
        train = background[np.sort(half)]
        notes.append("baselines: trained on a seeded half of the analysed background (no model split)")
    events = {BACKGROUND: _sorted_by_id(background)}
    for name, paths in inputs.signals.items():
        log.info("reading signal %s: %s", name, ", ".join(p.name for p in paths))
        events[name] = _sorted_by_id(read_events(list(paths), max_events=inputs.max_events))
    ntuples = {}
    for name, ev in events.items():
        path = ntuple_dir / f"{name}.root"
        write_events(ev, path)
        ntuples[name] = path
    return Prepared(events=events, ntuples=ntuples, train_background=train, notes=notes)


def skim_columns(prepared: Prepared, output: dict, dataset: str) -> dict[str, np.ndarray]:
    """The per-event columns of one dataset, read back from its skims; every analysed event exactly once."""
    from eventlm.analysis.processor import read_skim_columns, skims_of

    cols = read_skim_columns(skims_of(output, dataset), dataset=dataset)
    ids = ak.to_numpy(prepared.events[dataset].event_id)
    if len(ids) != len(cols["event"]) or not np.array_equal(ids, cols["event"]):
        raise RuntimeError(f"{dataset}: the skims hold {len(cols['event'])} events, the input has {len(ids)}")
    return cols
