"""The coffea processor: anomaly scores, event variables, regions and histograms for eventlm ntuples.

Run it with coffea's ``processor.Runner`` on ntuples written by ``eventlm.io.write_events`` (TTree
``Events``), read with :class:`EventlmNanoAODSchema` (coffea's ``NanoAODSchema``; it only switches off the
warnings about CMS cross-references an eventlm ntuple does not have)::

    from coffea import processor
    from eventlm.analysis import AnomalyProcessor, EventlmNanoAODSchema, Region

    proc = AnomalyProcessor([Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6")],
                            model="runs/default")
    run = processor.Runner(processor.IterativeExecutor(), schema=EventlmNanoAODSchema, chunksize=25_000)
    out = run({"background": ["bkg.root"], "tttt_H500": ["sig.root"]}, proc, treename="Events")
    out["background"]["score"]          # hist: process x region x anomaly score (weighted)

The processor holds only its settings (it pickles small); the model is loaded lazily, once per worker
process, into a module-level cache keyed by the model path. Without a model, or when the file already
has an ``anomaly_score`` branch (``eventlm score`` output), that branch is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import hist
import numpy as np
from coffea import processor

from eventlm.analysis.features import VARIABLES, event_variables
from eventlm.analysis.regions import Region
from eventlm.io.schema import EventlmNanoAODSchema  # noqa: F401 (re-exported)
from eventlm.events import PARTICLE_FIELDS, make_events, make_particles, process_code

log = logging.getLogger(__name__)

#: Loaded scorers, one per model directory per worker process (the processor itself stays stateless).
_SCORERS: dict[str, object] = {}
#: process_code -> name tables read from files, per file.
_PROCESS_TABLES: dict[str, dict[int, str]] = {}

#: Score columns the processor returns per event (when the scorer or the file provides them).
SCORE_COLUMNS = ("anomaly_score", "anomaly_score_sum", "anomaly_score_max", "reco_accuracy")



def get_scorer(model_dir, torch_threads: int | None = None):
    """The scorer of ``model_dir``, loaded on first use in this process and cached."""
    key = str(Path(model_dir).resolve())
    if key not in _SCORERS:
        from eventlm.score import Scorer

        log.info("loading model %s", key)
        # None: the run config's thread count; the scorer sets it only while it scores
        _SCORERS[key] = Scorer.load(key, threads=torch_threads)
    return _SCORERS[key]


def _branch(events, name: str):
    """A flat branch of a NanoEvents chunk by its ROOT name: ``anomaly_score`` is ``events.anomaly.score``."""
    if name in events.fields:
        return events[name]
    head, _, tail = name.partition("_")
    if head in events.fields and tail in getattr(events[head], "fields", ()):
        return events[head][tail]
    return None


def process_table(filename: str | None, known: Mapping[int, str]) -> dict[int, str]:
    """process_code -> name: the table stored in the file, then ``known``."""
    table = dict(known)
    if filename is None:
        return table
    if filename not in _PROCESS_TABLES:
        try:
            from eventlm.io.root import read_process_names

            _PROCESS_TABLES[filename] = dict(read_process_names(filename))
        except Exception as err:  # no table in the file or an older I/O layer: fall back to names
            log.debug("no process table in %s: %s", filename, err)
            _PROCESS_TABLES[filename] = {}
    table.update(_PROCESS_TABLES[filename])
    return table


def to_event_model(events, process=None) -> ak.Array:
    """Convert a NanoEvents chunk of an eventlm ntuple into the event model (for scoring)."""
    particles = ak.to_packed(events.Particle)
    counts = ak.to_numpy(ak.num(particles.pt, axis=1))
    flat = {f: ak.to_numpy(ak.flatten(particles[f])) for f in PARTICLE_FIELDS}
    n = len(counts)
    return make_events(
        event_id=ak.to_numpy(events.event),
        process=process if process is not None else np.full(n, "unknown"),
        weight=ak.to_numpy(events.weight),
        met=ak.to_numpy(events.MET.pt),
        met_phi=ak.to_numpy(events.MET.phi),
        particles=make_particles(counts=counts, **flat),
    )


class AnomalyProcessor(processor.ProcessorABC):
    """Fill anomaly-score and kinematic histograms per process and region; return per-event columns.

    Parameters
    ----------
    regions: the named selections (an event may be in several); ``"all"`` is always added.
    model: a model directory (``eventlm train --out``); ``None``: read the ``anomaly_score`` branch.
    score_column: the score the ``score`` histograms show (``anomaly_score``, ``anomaly_score_sum``, ...).
    score_bins, score_range: the anomaly-score axis (under/overflow kept).
    variables: event variables to histogram (names in ``eventlm.analysis.features.VARIABLES``).
    known_processes: process names whose ``process_code`` may appear (used when the file has no table).
    keep_columns: return per-event columns (event id, process, weight, scores, region flags) so the
        threshold, ROC curves and scored ntuples can be computed from exact per-event values.
    torch_threads: torch threads per worker when scoring (1 with several worker processes, so they
        do not fight over the cores); ``None`` leaves torch's default.
    """

    def __init__(
        self,
        regions: Sequence[Region],
        *,
        model=None,
        score_column: str = "anomaly_score",
        score_bins: int = 60,
        score_range: tuple[float, float] = (0.0, 12.0),
        variables: Sequence[str] = ("n_jets", "n_bjets", "n_leptons", "ht", "met", "lead_jet_pt"),
        known_processes: Sequence[str] = (),
        keep_columns: bool = True,
        torch_threads: int | None = None,
    ):
        self.regions = tuple(regions)
        self.model = str(model) if model is not None else None
        self.score_column = score_column
        self.score_bins = int(score_bins)
        self.score_range = (float(score_range[0]), float(score_range[1]))
        unknown = [v for v in variables if v not in VARIABLES]
        if unknown:
            raise ValueError(f"unknown event variables {unknown}")
        self.variables = tuple(variables)
        self.known_processes = {process_code(p): p for p in known_processes}
        self.keep_columns = keep_columns
        self.torch_threads = torch_threads

    @property
    def region_names(self) -> tuple[str, ...]:
        return ("all", *(r.name for r in self.regions))

    def _hist(self, name: str, label: str, binning) -> hist.Hist:
        bins, lo, hi = binning
        return hist.Hist(
            hist.axis.StrCategory([], name="process", label="Process", growth=True),
            hist.axis.StrCategory(list(self.region_names), name="region", label="Region"),
            hist.axis.Regular(bins, lo, hi, name=name, label=label),
            storage=hist.storage.Weight(),
        )

    def _scores(self, events, process) -> dict[str, np.ndarray]:
        stored = _branch(events, "anomaly_score")
        if stored is not None:
            out = {"anomaly_score": ak.to_numpy(stored).astype(np.float32)}
            for name in SCORE_COLUMNS[1:]:
                values = _branch(events, name)
                if values is not None:
                    out[name] = ak.to_numpy(values).astype(np.float32)
            return out
        if self.model is None:
            raise ValueError(
                f"{events.metadata.get('filename')}: no anomaly_score branch and no model to compute it"
            )
        scores = get_scorer(self.model, self.torch_threads).score(to_event_model(events, process))
        return {
            name: np.asarray(ak.to_numpy(scores[name]), dtype=np.float32)
            for name in SCORE_COLUMNS
            if name in _fields(scores)
        }

    def _checked_scores(self, events, process) -> dict[str, np.ndarray]:
        scores = self._scores(events, process)
        if self.score_column not in scores:
            raise ValueError(
                f"{events.metadata.get('filename')}: no {self.score_column} branch (has {sorted(scores)}); "
                "rescore the file or choose another [threshold] score"
            )
        return scores

    def process(self, events):
        dataset = events.metadata["dataset"]
        n = len(events)
        table = process_table(events.metadata.get("filename"), self.known_processes)
        codes_raw = _branch(events, "process_code")
        codes = ak.to_numpy(codes_raw).astype(np.int64) if codes_raw is not None else np.full(n, -1)
        unique, inverse = np.unique(codes, return_inverse=True)
        unique_names = [table.get(int(c), dataset if c == -1 else f"process_{c}") for c in unique]
        names = np.array(unique_names, dtype=object)[inverse]
        particles = events.Particle
        values = event_variables(particles.kind, particles.pt, events.MET.pt, events.MET.phi)
        weight = ak.to_numpy(events.weight).astype(np.float64)
        scores = self._checked_scores(events, names.astype(str))
        masks = {"all": np.ones(n, dtype=bool)}
        masks.update({r.name: r.mask(values) for r in self.regions})

        out: dict[str, object] = {}
        h_score = self._hist("score", "Anomaly score", (self.score_bins, *self.score_range))
        hists = {v: self._hist(v, VARIABLES[v][0], VARIABLES[v][1]) for v in self.variables}
        for region, mask in masks.items():
            if not mask.any():
                continue
            proc = names[mask].astype(str)
            w = weight[mask]
            h_score.fill(process=proc, region=region, score=scores[self.score_column][mask], weight=w)
            for v, h in hists.items():
                h.fill(process=proc, region=region, **{v: values[v][mask]}, weight=w)
        out["score"] = h_score
        out.update(hists)
        out["n_events"] = processor.value_accumulator(int, n)
        out["sumw"] = processor.defaultdict_accumulator(float)
        for p in np.unique(names.astype(str)):
            out["sumw"][p] += float(weight[names == p].sum())
        if self.keep_columns:
            columns = {
                "event": ak.to_numpy(events.event).astype(np.int64),
                "process_code": codes.astype(np.int64),
                "weight": weight,
                **{k: v for k, v in scores.items()},
                **{f"in_{r}": m for r, m in masks.items() if r != "all"},
                **{v: np.asarray(values[v], dtype=np.float64) for v in ("n_jets", "n_bjets", "ht", "met")},
            }
            out["columns"] = {k: processor.column_accumulator(np.asarray(v)) for k, v in columns.items()}
            out["process_names"] = processor.set_accumulator(f"{c}:{p}" for c, p in zip(unique, unique_names))
        return {dataset: out}

    def postprocess(self, accumulator):
        return accumulator


def _fields(scores) -> Sequence[str]:
    if isinstance(scores, Mapping):
        return list(scores.keys())
    return list(getattr(scores, "fields", []))


def columns_of(output: Mapping, dataset: str) -> dict[str, np.ndarray]:
    """The per-event columns of one dataset from a processor output, sorted by event id."""
    cols = {k: np.asarray(v.value) for k, v in output[dataset]["columns"].items()}
    order = np.argsort(cols["event"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def process_names_of(output: Mapping, dataset: str) -> dict[int, str]:
    """process_code -> name as seen by the processor in one dataset."""
    out = {}
    for item in output[dataset].get("process_names", ()):
        code, _, name = item.partition(":")
        out[int(code)] = name
    return out
