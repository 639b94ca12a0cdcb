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
from eventlm.analysis.regions import Region

log = logging.getLogger(__name__)

BACKGROUND = "background"
#: The dataset of the collision-data samples (weight 1; drawn as points, never stacked).
DATA = "data"


@dataclass
class Prepared:
    """The analysed events of every dataset (event model, sorted by event id) and their ntuples."""

    events: dict[str, ak.Array]
    ntuples: dict[str, Path]
    train_background: ak.Array | None  # the model's training split (for the baselines)
    notes: list[str] = field(default_factory=list)
    normalisation: list = field(default_factory=list)  # a Normalisation per sample
    #: the model's validation split: held-out background that calibrates the "combined" baseline
    calibration_background: ak.Array | None = None


def _sorted_by_id(events: ak.Array) -> ak.Array:
    order = np.argsort(ak.to_numpy(events.event_id), kind="stable")
    return events[order]


def rescale_to_full(events: ak.Array, full: ak.Array) -> ak.Array:
    """Scale weights per process so each keeps the total weight it has in ``full`` (a process whose
    kept weights do not sum to a positive number is left as it is: no factor would be defined)."""
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


@dataclass(frozen=True)
class Normalisation:
    """How one sample's weights were set (``metrics.json`` ``samples``, a line of ``results.md``)."""

    sample: str
    role: str
    process: str
    files: int
    events: int  # events read
    sum_weights_read: float  # sum of the stored (generator) weights of the events read
    cross_section: float | None = None  # pb
    k_factor: float = 1.0
    sum_weights: float | None = None  # the denominator: the sample's sum of generator weights
    sum_weights_source: str = ""  # where it came from (a record in the files, the config, the events read)
    scale: float = 1.0  # the factor each stored weight was multiplied by
    lumi_fb: float = 0.0

    def describe(self) -> str:
        if self.role == "data":
            return f"{self.sample} (data, {self.files} file(s), {self.events} events): weight 1"
        if self.cross_section is None:
            return (f"{self.sample} ({self.role}, {self.files} file(s), {self.events} events): stored weights "
                    f"× {self.scale:.6g} (lumi / weights_lumi)")
        return (f"{self.sample} ({self.role} '{self.process}', {self.files} file(s), {self.events} events): "
                f"σ = {self.cross_section:g} pb × k = {self.k_factor:g}, Σw = {self.sum_weights:.6g} from "
                f"{self.sum_weights_source}; w → σ·k·L·w/Σw at L = {self.lumi_fb:g} fb⁻¹")


def sample_sum_of_weights(sample, events: ak.Array) -> tuple[float, str]:
    """The denominator Σw of ``sample``: ``sum_weights`` of the config, else the record of every one of
    its files (:func:`eventlm.io.bookkeeping.sum_of_weights`), else the sum over the events read."""
    from eventlm.io.bookkeeping import sum_of_weights

    if sample.sum_weights is not None:
        return sample.sum_weights, "the config (sum_weights)"
    records = [sum_of_weights(p) for p in sample.files]
    if records and all(r is not None for r in records):
        sources = sorted({r[1] for r in records})
        return float(sum(r[0] for r in records)), " and ".join(sources)
    read = float(np.sum(ak.to_numpy(events.weight), dtype=np.float64))
    missing = [p.name for p, r in zip(sample.files, records) if r is None]
    return read, f"the {len(events)} events read (no record in {', '.join(missing)})"


def normalise(sample, events: ak.Array, config: AnalysisConfig) -> tuple[ak.Array, Normalisation]:
    """``events`` of one sample with their weights at the study luminosity (see
    :class:`eventlm.analysis.config.SampleConfig`) and process label, and how it was done."""
    study = config.study
    w = ak.to_numpy(events.weight).astype(np.float64)
    info = dict(sample=sample.name, role=sample.role, process=sample.label, files=len(sample.files),
                events=len(events), sum_weights_read=float(w.sum()), lumi_fb=study.lumi)
    if sample.role == "data":
        weights, norm = np.ones(len(w)), Normalisation(**info, sum_weights_source="data", scale=1.0)
    elif sample.cross_section is None:
        scale = study.lumi / study.weights_lumi
        weights = w * scale
        norm = Normalisation(**info, sum_weights_source=f"stored weights at {study.weights_lumi:g} fb⁻¹", scale=scale)
    else:
        sum_w, source = sample_sum_of_weights(sample, events)
        if not (np.isfinite(sum_w) and sum_w > 0):
            raise ValueError(f"[samples.{sample.name}]: the sum of generator weights from {source} is {sum_w:g}; "
                             "a normalisation needs a positive one (set sum_weights)")
        # pb x fb^-1 = 1000 events
        scale = sample.cross_section * sample.k_factor * study.lumi * 1000.0 / sum_w
        weights = w * scale
        norm = Normalisation(**info, cross_section=sample.cross_section, k_factor=sample.k_factor,
                             sum_weights=sum_w, sum_weights_source=source, scale=scale)
    events = ak.with_field(events, weights, "weight")
    if not sample.keep_labels:
        events = ak.with_field(events, ak.Array([sample.label] * len(events)), "process")
    return events, norm


def study_reader(config: AnalysisConfig, reader: dict | None = None) -> dict:
    """The reader options of a study: ``reader`` (the command's), with the NanoAOD trigger and filter
    bits that the regions and the preselection use added to what is read."""
    from dataclasses import replace

    from eventlm.io.nanoaod import NanoAODOptions

    reader = dict(reader or {})
    if config.flags:
        nano = reader.get("nanoaod") or NanoAODOptions()
        reader["nanoaod"] = replace(nano, flags=tuple(dict.fromkeys((*nano.flags, *config.flags))))
    return reader


def selection_values(events: ak.Array, flags=()) -> dict[str, np.ndarray]:
    """The event variables of ``events`` and their trigger/filter bits, for a selection's mask."""
    from eventlm.analysis.features import variables_of

    values = variables_of(events)
    values.update({f: ak.to_numpy(events[f]).astype(bool) for f in flags})
    return values


def _concatenate(parts: list[ak.Array]) -> ak.Array:
    """The events of several samples as one array: the fields all of them carry (a CSV sample has no
    run and luminosity block, a NanoAOD one does: those are then left out of the dataset)."""
    if len(parts) == 1:
        return parts[0]
    common = [f for f in parts[0].fields if all(f in p.fields for p in parts[1:])]
    dropped = sorted({f for p in parts for f in p.fields} - set(common))
    if dropped:
        log.info("fields %s are not in every sample of the dataset: left out", ", ".join(dropped))
    return ak.concatenate([p[common] for p in parts])


def _check_unique_ids(events: ak.Array, dataset: str) -> None:
    ids = ak.to_numpy(events.event_id)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"dataset {dataset}: event number {int(unique[counts > 1][0])} occurs {int(counts.max())} "
                         "times (samples of one role must not share event numbers: the analysis tells events "
                         "apart by them)")


def prepare_inputs(config: AnalysisConfig, out_dir: Path, model_dir: Path | None, *,
                   need_train: bool = True, reader: dict | None = None) -> Prepared:
    """Read and normalise every sample, keep the background test split, write one ntuple per dataset
    (``background``, one per signal process, ``data``). ``reader``: the NanoAOD/PHYSLITE reader options
    (:func:`study_reader` adds the trigger and filter bits the selections use)."""
    from eventlm.io import read_events, write_events

    inputs = config.inputs
    samples = config.all_samples
    if not any(s.role == "background" for s in samples):
        raise ValueError(f"{config.path}: no background sample")
    if not any(s.role == "signal" for s in samples):
        raise ValueError(f"{config.path}: no signal sample")
    ntuple_dir = out_dir / "ntuples"
    ntuple_dir.mkdir(parents=True, exist_ok=True)
    notes, norms = [], []
    by_dataset: dict[str, list[ak.Array]] = {}
    reader = study_reader(config, reader)
    preselection = Region("preselection", inputs.preselection) if inputs.preselection else None
    for sample in samples:
        log.info("reading %s %s: %s", sample.role, sample.name, ", ".join(p.name for p in sample.files))
        events = read_events(list(sample.files), max_events=inputs.max_events, **reader)
        missing = [f for f in config.flags if f not in events.fields]
        if missing:
            raise ValueError(f"[samples.{sample.name}]: the selections use {', '.join(missing)}, which its files "
                             "do not carry (trigger and filter bits come from NanoAOD)")
        if sample.role == "data" and config.study.lumi_mask is not None:
            from eventlm.analysis.lumimask import apply_lumi_mask

            events, note = apply_lumi_mask(events, config.study.lumi_mask, sample.name)
            notes.append(note)
        events, norm = normalise(sample, events, config)
        norms.append(norm)
        if preselection is not None:
            keep = preselection.mask(selection_values(events, config.flags))
            notes.append(f"preselection ({inputs.preselection}): {sample.name} keeps {int(keep.sum())} of "
                         f"{len(keep)} events")
            events = events[keep]
        dataset = {"background": BACKGROUND, "data": DATA}.get(sample.role, sample.label)
        by_dataset.setdefault(dataset, []).append(events)
    notes += [f"normalisation: {n.describe()}" for n in norms]
    merged = {ds: _concatenate(parts) for ds, parts in by_dataset.items()}
    for ds, ev in merged.items():
        _check_unique_ids(ev, ds)
    background = merged[BACKGROUND]
    train = calibration = None
    md = None
    if model_dir is not None:
        from eventlm.modeldir import ModelDir

        md = ModelDir(model_dir)
    if md is not None and md.has_split():
        train = md.select(background, "train")
        calibration = md.select(background, "validation")
        if inputs.background_events == "test":
            test = md.select(background, "test")
            if len(test) == 0:
                raise ValueError(f"none of the background events is in the test split of {model_dir} (a "
                                 "background the model never saw: set [inputs] background_events = \"all\")")
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
    for name in config.signals:
        events[name] = _sorted_by_id(merged[name])
    if DATA in merged:
        events[DATA] = _sorted_by_id(merged[DATA])
    ntuples = {}
    for name, ev in events.items():
        path = ntuple_dir / f"{name}.root"
        write_events(ev, path)
        ntuples[name] = path
    return Prepared(events=events, ntuples=ntuples, train_background=train, notes=notes,
                    normalisation=norms, calibration_background=calibration)


def skim_columns(prepared: Prepared, output: dict, dataset: str) -> dict[str, np.ndarray]:
    """The per-event columns of one dataset, read back from its skims; every analysed event exactly once."""
    from eventlm.analysis.skims import read_skim_columns, skims_of

    cols = read_skim_columns(skims_of(output, dataset), dataset=dataset)
    ids = ak.to_numpy(prepared.events[dataset].event_id)
    if len(ids) != len(cols["event"]) or not np.array_equal(ids, cols["event"]):
        raise RuntimeError(f"{dataset}: the skims hold {len(cols['event'])} events, the input has {len(ids)}")
    return cols
