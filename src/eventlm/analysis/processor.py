"""The coffea processor: anomaly scores, event variables, regions and histograms for eventlm ntuples.

Run it with coffea's ``processor.Runner`` on ntuples written by ``eventlm.io.write_events`` (TTree
``Events``), read with :class:`EventlmNanoAODSchema` (coffea's ``NanoAODSchema``; it only switches off the
warnings about CMS cross-references an eventlm ntuple does not have)::

    from coffea import processor
    from eventlm.analysis import AnomalyProcessor, EventlmNanoAODSchema, Region

    proc = AnomalyProcessor([Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6")],
                            model="runs/default", skim_dir="skims")
    run = processor.Runner(processor.IterativeExecutor(), schema=EventlmNanoAODSchema, chunksize=25_000)
    out = run({"background": ["bkg.root"], "tttt_H500": ["sig.root"]}, proc, treename="Events")
    out["background"]["score"]          # hist: process x region x anomaly score (weighted)
    out["background"]["skims"]          # {skim file: events}: the scored events, one file per chunk

The processor holds only its settings (it pickles small); the model is loaded lazily, once per worker
process, into the one per-process cache (:func:`eventlm.analysis.ml.loaded_scorer`), so a classifier
directory works as well (its column ``score_<name>``). Without a model, or when the file already
has an ``anomaly_score`` branch (``eventlm score`` output), the stored score branches are used.

Skims. With ``skim_dir`` every chunk writes its scored events from the worker, as an eventlm ntuple
(TTree ``Events``: the event model, the score branches ``anomaly_score*`` and one boolean
``region_<name>`` per region) named ``<dataset>/<dataset>_<file hash>_<entry start>-<entry stop>.root``
(written to a temporary name and renamed, so a retried chunk replaces its file and a failed one leaves
nothing). The client receives only histograms and the list of files, so its memory does not grow with
the number of events; :func:`eventlm.analysis.skims.read_skim_columns` reads the columns back in steps for thresholds and ROC
curves. ``keep_columns=True`` instead returns per-event columns through the accumulator (small jobs).

Score names. The branches are ``anomaly_score``, ``anomaly_score_sum``, ... (``eventlm.score``); coffea's
``NanoAODSchema`` splits a branch at its first ``_``, so in NanoEvents they are ``events.anomaly.score``,
``events.anomaly.score_sum``, ... (:func:`score_branch` accepts both spellings). A score a file lacks is
absent, never answered with another one (a file holding only ``anomaly_score`` has no mean).
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
from eventlm.analysis.skims import REGION_PREFIX, SCORE_COLUMNS, skim_name
from eventlm.errors import EventFormatError
from eventlm.io.schema import EventlmNanoAODSchema, to_event_model  # noqa: F401 (re-exported)
from eventlm.events import process_code

log = logging.getLogger(__name__)

#: process_code -> name tables read from files, per file.
_PROCESS_TABLES: dict[str, dict[int, str]] = {}

def branch_name(name: str) -> str:
    """The ROOT branch of a score spelled either way: ``anomaly.score_sum`` -> ``anomaly_score_sum``."""
    return name.replace(".", "_", 1)


def _branch(events, name: str):
    """A flat branch of a NanoEvents chunk by its ROOT name: ``anomaly_score`` is ``events.anomaly.score``
    under NanoAODSchema and ``events.anomaly_score`` under BaseSchema."""
    if name in events.fields:
        return events[name]
    head, _, tail = name.partition("_")
    if head in events.fields and tail in getattr(events[head], "fields", ()):
        return events[head][tail]
    return None


def score_branch(events, name: str):
    """The score ``name`` of a chunk: the ROOT name (``anomaly_score_sum``) or the NanoEvents path
    (``anomaly.score_sum``); None if the chunk does not have it."""
    return _branch(events, branch_name(name))


def stored_scores(events) -> dict[str, np.ndarray]:
    """Every event-level score branch of a chunk, by ROOT name (float32 numpy)."""
    names = [n for n in SCORE_COLUMNS if _branch(events, n) is not None]
    anomaly = events["anomaly"] if "anomaly" in events.fields else None
    if anomaly is not None and getattr(anomaly, "fields", None):  # NanoAODSchema's anomaly record
        names += [f"anomaly_{f}" for f in anomaly.fields if f.startswith("score")]
    names += [f for f in events.fields if f.startswith("anomaly_score")]
    out = {}
    for name in dict.fromkeys(names):
        values = _branch(events, name)
        if values is not None and values.ndim == 1:
            out[name] = ak.to_numpy(values).astype(np.float32)
    return out


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


class AnomalyProcessor(processor.ProcessorABC):
    """Fill anomaly-score and kinematic histograms per process and region; write the scored events as
    skims from the workers (``skim_dir``) or return them as columns (``keep_columns``).

    Parameters
    ----------
    regions: the named selections (an event may be in several); ``"all"`` is always added.
    model: a model directory (``eventlm train --out``); ``None``: read the stored score branches.
    score_column: the score the ``score`` histograms show (``anomaly_score``, ``anomaly_score_sum``, ...;
        the NanoEvents spelling ``anomaly.score_sum`` works too).
    score_bins, score_range: the anomaly-score axis (under/overflow kept); ``score_range=None``: no score
        histogram here (``eventlm analyze`` then fills it from the skims, over a range fitted to the scores).
    variables: event variables to histogram (names in ``eventlm.analysis.features.VARIABLES``).
    known_processes: process names whose ``process_code`` may appear (used when the file has no table).
    skim_dir: write each chunk's scored events to ``skim_dir/<dataset>/`` (a directory the workers can
        write to: a shared file system on a cluster); the output lists them under ``"skims"``
        (``{path: events}``).
    keep_columns: also return per-event columns (event id, process code, weight, scores, region flags)
        through the accumulator: the client then holds every event (fine for small jobs).
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
        score_range: tuple[float, float] | None = (0.0, 12.0),
        variables: Sequence[str] = ("n_jets", "n_bjets", "n_leptons", "ht", "met", "lead_jet_pt"),
        known_processes: Sequence[str] = (),
        skim_dir=None,
        keep_columns: bool = False,
        torch_threads: int | None = None,
    ):
        self.regions = tuple(regions)
        self.model = str(model) if model is not None else None
        self.score_column = branch_name(score_column)
        self.score_bins = int(score_bins)
        self.score_range = None if score_range is None else (float(score_range[0]), float(score_range[1]))
        unknown = [v for v in variables if v not in VARIABLES]
        if unknown:
            raise ValueError(f"unknown event variables {unknown}")
        self.variables = tuple(variables)
        self.known_processes = {process_code(p): p for p in known_processes}
        self.skim_dir = str(Path(skim_dir).resolve()) if skim_dir is not None else None
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
        if score_branch(events, "anomaly_score") is not None:
            return stored_scores(events)
        if self.model is None:
            raise EventFormatError(events.metadata.get("filename"), "no anomaly_score branch and no model to compute it")
        from eventlm.analysis.ml import loaded_scorer

        # threads None: the run config's count; the scorer sets it only while it scores
        scores = loaded_scorer(self.model, threads=self.torch_threads).score(to_event_model(events, process))
        out = {}
        for name in _fields(scores):
            values = scores[name]
            if isinstance(values, np.ndarray) and values.ndim == 1:  # event-level (not token_nll)
                out[name] = values.astype(np.float32)
        return out

    def _checked_scores(self, events, process) -> dict[str, np.ndarray]:
        scores = self._scores(events, process)
        if self.score_column not in scores:
            raise EventFormatError(
                events.metadata.get("filename"),
                f"no {self.score_column} branch (has {sorted(scores)}); rescore the file or choose another "
                "[threshold] score",
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
        for flag in dict.fromkeys(f for r in self.regions for f in r.flags):  # HLT_*, Flag_* bits
            bits = _branch(events, flag)
            if bits is None:
                raise EventFormatError(events.metadata.get("filename"), f"no {flag} branch (a region uses it)")
            values[flag] = ak.to_numpy(bits).astype(bool)
        weight = ak.to_numpy(events.weight).astype(np.float64)
        scores = self._checked_scores(events, names.astype(str))
        masks = {"all": np.ones(n, dtype=bool)}
        masks.update({r.name: r.mask(values) for r in self.regions})

        out: dict[str, object] = {}
        h_score = self._hist("score", "Anomaly score", (self.score_bins, *self.score_range)) if self.score_range else None
        hists = {v: self._hist(v, VARIABLES[v][0], VARIABLES[v][1]) for v in self.variables}
        for region, mask in masks.items():
            if not mask.any():
                continue
            proc = names[mask].astype(str)
            w = weight[mask]
            if h_score is not None:
                h_score.fill(process=proc, region=region, score=scores[self.score_column][mask], weight=w)
            for v, h in hists.items():
                h.fill(process=proc, region=region, **{v: values[v][mask]}, weight=w)
        if h_score is not None:
            out["score"] = h_score
        out.update(hists)
        out["n_events"] = processor.value_accumulator(int, n)
        out["sumw"] = processor.defaultdict_accumulator(float)
        for p in np.unique(names.astype(str)):
            out["sumw"][p] += float(weight[names == p].sum())
        flags = {r: m for r, m in masks.items() if r != "all"}
        if self.skim_dir is not None:
            path = self._write_skim(events, names.astype(str), scores, flags)
            out["skims"] = {str(path): n}  # dicts add key by key: {every chunk's file: its events}
        if self.keep_columns:
            columns = {
                "event": ak.to_numpy(events.event).astype(np.int64),
                "process_code": codes.astype(np.int64),
                "weight": weight,
                **{k: v for k, v in scores.items()},
                **{f"in_{r}": m for r, m in flags.items()},
                **{v: np.asarray(values[v], dtype=np.float64) for v in ("n_jets", "n_bjets", "ht", "met")},
            }
            out["columns"] = {k: processor.column_accumulator(np.asarray(v)) for k, v in columns.items()}
        out["process_names"] = processor.set_accumulator(f"{c}:{p}" for c, p in zip(unique, unique_names))
        return {dataset: out}

    def _write_skim(self, events, process, scores, flags) -> Path:
        """The chunk's events with their scores and region flags, as an ntuple (written atomically)."""
        from eventlm.io import write_events

        meta = events.metadata
        directory = Path(self.skim_dir) / meta["dataset"]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / skim_name(meta["dataset"], meta.get("filename", ""), meta.get("entrystart", 0),
                                     meta.get("entrystop", len(events)))
        extra = {**scores, **{f"{REGION_PREFIX}{r}": m for r, m in flags.items()}}
        return write_events(to_event_model(events, process), path, extra_columns=extra)

    def postprocess(self, accumulator):
        return accumulator


def _fields(scores) -> Sequence[str]:
    if isinstance(scores, Mapping):
        return list(scores.keys())
    return list(getattr(scores, "fields", []))
