"""``eventlm analyze``: inputs -> ntuples -> coffea processor -> threshold, metrics, baselines, outputs.

This module is the orchestrator (:func:`run_analysis`) and the statistics of a study
(:func:`analyse_columns`, :func:`baseline_scores_for`); the steps live in :mod:`~eventlm.analysis.inputs`,
:mod:`~eventlm.analysis.execution` and :mod:`~eventlm.analysis.report`.

Steps (each logged):

1. Inputs are read through :mod:`eventlm.io` (CSV, ROOT, Parquet). With a model and
   ``background_events = "test"``, only the background events of the model's test split are kept
   (the others trained it) and their weights are scaled up per process, so that each process keeps its
   total weight (cross section). Each dataset is written as an ntuple under ``OUT/ntuples``.
2. :class:`~eventlm.analysis.processor.AnomalyProcessor` runs over them with coffea's
   ``processor.Runner`` (iterative, futures or dask executor); it scores the events with the model (or
   reads ``anomaly_score``), fills the histograms and writes the scored events from the workers as one
   ROOT skim per chunk (``OUT/scored/<dataset>/*.root``); the client gets histograms and file names.
   The columns the threshold and the metrics need are then read back from the skims in steps.
3. The threshold is chosen in the control region, applied in the signal region (yields at the
   configured luminosity, S/sqrt(B), Z_A); ROC/AUC/eff_S@eff_B/SIC with bootstrap errors are computed
   for eventlm and the baselines (fitted on the background training split, scored on the same test
   events).
4. Written: ``hists.pkl`` (the processor output's hist objects), ``hists.root``, ``metrics.json``,
   ``results.md``, ``scored/<dataset>/*.root`` (the skims) and the figures ``*.png``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.analysis.config import AnalysisConfig
from eventlm.analysis.features import fixed_features
from eventlm.metrics import Metrics, evaluate, roc_curve
from eventlm.analysis.execution import run_processor
from eventlm.analysis.skims import process_names_of
from eventlm.analysis.inputs import BACKGROUND, DATA, Prepared, prepare_inputs, skim_columns
from eventlm.analysis.report import EVENTLM, json_default, make_plots, results_table, write_hists
from eventlm.atomic import write_text
from eventlm.analysis.threshold import RegionYields, Threshold, choose_threshold, region_yields

log = logging.getLogger(__name__)



@dataclass
class AnalysisResult:
    config: AnalysisConfig
    out_dir: Path
    thresholds: dict[str, Threshold]  # per signal
    yields: dict[str, dict[str, RegionYields]]  # signal -> region -> yields
    metrics: dict[str, dict[str, Metrics]]  # signal -> method -> metrics
    rocs: dict[str, dict[str, object]] = field(repr=False, default_factory=dict)
    table: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _injected_weights(config, w_b_cr: np.ndarray, w_s_cr: np.ndarray) -> np.ndarray:
    inj = config.threshold.signal_injection
    if isinstance(inj, str):  # "cross_section": the signal's own weights
        return w_s_cr
    total = w_s_cr.sum()
    return w_s_cr * (float(inj) * w_b_cr.sum() / total) if total > 0 else w_s_cr


def analyse_columns(config: AnalysisConfig, columns: dict[str, dict[str, np.ndarray]],
                    baseline_scores: dict[str, dict[str, np.ndarray]] | None = None,
                    references: dict[str, dict[str, np.ndarray]] | None = None):
    """Threshold, SR yields and metrics from per-event columns (see :func:`columns_of`).

    ``baseline_scores[method][dataset]`` are aligned with ``columns[dataset]`` (sorted by event id).
    ``references[dataset]``: :func:`eventlm.analysis.study.references` of the same events (object
    count, HT); with them the object count and HT alone are compared beside every score, and every
    method gets its length-matched AUC (``length_matched_auc``: inside classes of equal object count,
    :func:`eventlm.analysis.study.stratified_auc`).
    Returns ``(thresholds, yields, metrics, rocs)``, each keyed by signal.
    """
    from eventlm.analysis.study import measure

    t = config.threshold
    bkg = columns[BACKGROUND]
    data = columns.get(DATA)
    thresholds, yields, metrics, rocs = {}, {}, {}, {}
    for signal in config.signals:
        sig = columns[signal]
        # the threshold is chosen on the events that have a value of the score (see below)
        cr_b = bkg[f"in_{t.control_region}"] & np.isfinite(bkg[t.score])
        cr_s = sig[f"in_{t.control_region}"] & np.isfinite(sig[t.score])
        w_s_cr = _injected_weights(config, bkg["weight"][cr_b], sig["weight"][cr_s])
        if t.method == "youden" and cr_s.sum() == 0:
            raise ValueError(f"no {signal} events in the control region {t.control_region!r}: cannot choose a threshold")
        thr = choose_threshold(
            bkg[t.score][cr_b], sig[t.score][cr_s], bkg["weight"][cr_b], w_s_cr,
            method=t.method, background_efficiency=t.background_efficiency,
        )
        thresholds[signal] = thr
        yields[signal] = {}
        for region in [r.name for r in config.regions]:
            rb, rs = bkg[f"in_{region}"], sig[f"in_{region}"]
            if region == t.control_region:  # with the injected signal weights (of the events with a value)
                rs = cr_s
            w_s = sig["weight"][rs] if region != t.control_region else w_s_cr
            observed = data[t.score][data[f"in_{region}"]] if data is not None else None
            yields[signal][region] = region_yields(
                region, thr.value, bkg[t.score][rb], sig[t.score][rs], bkg["weight"][rb], w_s, data=observed,
            )
        region = config.metrics.region
        mb = bkg[f"in_{region}"] if region != "all" else np.ones(len(bkg["event"]), bool)
        ms = sig[f"in_{region}"] if region != "all" else np.ones(len(sig["event"]), bool)
        methods = {EVENTLM: (bkg["anomaly_score"], sig["anomaly_score"])}
        for column, label in (("anomaly_score_calibrated", "calibrated"), ("anomaly_score_mean", "mean NLL"),
                              ("anomaly_score_sum", "summed NLL"), ("anomaly_score_transferable", "transferable"),
                              ("anomaly_score_conditional", "conditional")):
            if column not in bkg or column not in sig:
                continue
            if np.array_equal(bkg[column], bkg["anomaly_score"]) and np.array_equal(sig[column], sig["anomaly_score"]):
                continue  # the causal default is the summed NLL itself; an old file's mean is read as the score
            methods[f"{EVENTLM}, {label}"] = (bkg[column], sig[column])
        for name, by_dataset in (baseline_scores or {}).items():
            methods[name] = (by_dataset[BACKGROUND], by_dataset[signal])
        for label in (references or {}).get(BACKGROUND, {}):
            methods[f"{label} alone"] = (references[BACKGROUND][label], references[signal][label])
        metrics[signal], rocs[signal] = {}, {}
        for name, (sb, ss) in methods.items():
            # an event without a value (NaN: the calibrated score of an object count the calibration
            # never saw) is left out of this method's figures, and the table says how many
            mbf, msf = mb & np.isfinite(sb), ms & np.isfinite(ss)
            if mbf.sum() == 0 or msf.sum() == 0:
                continue
            settings = {"working_points": config.metrics.working_points, "n_bootstrap": config.metrics.n_bootstrap,
                        "seed": config.study.seed}
            left_out = (int(mb.sum() - mbf.sum()), int(ms.sum() - msf.sum()))
            mb_all, ms_all, mb, ms = mb, ms, mbf, msf
            w_b, w_s = bkg["weight"][mb], sig["weight"][ms]
            if references:
                n_b, n_s = references[BACKGROUND]["object count"], references[signal]["object count"]
                result = measure(sb[mb], ss[ms], n_b[mb], n_s[ms], w_b, w_s, **settings)
                m = result.metrics
                m.values["length_matched_auc"] = result.stratified
                m.errors["length_matched_auc"] = result.stratified_error
            else:
                m = evaluate(sb[mb], ss[ms], w_b, w_s, **settings)
            if any(left_out):
                m.undefined["events"] = (f"{left_out[0]} background and {left_out[1]} signal events have no value "
                                         "(an object count outside the calibration) and are left out")
            metrics[signal][name] = m
            if w_b.sum() > 0 and w_s.sum() > 0:  # else no curve: the metrics say why
                rocs[signal][name] = roc_curve(sb[mb], ss[ms], w_b, w_s)
            mb, ms = mb_all, ms_all
    return thresholds, yields, metrics, rocs


def baseline_scores_for(config: AnalysisConfig, prepared: Prepared, columns, fitted=None):
    """Scores of every configured baseline on every dataset, aligned with ``columns`` (by event id).

    ``fitted``: already fitted baselines ``{name: Baseline}`` (the demo fits once for both studies).
    """
    from eventlm.analysis.baselines import TrainSettings, fit_baselines

    bc = config.baselines
    if not bc.names:
        return {}, {}
    if fitted is None:
        train = prepared.train_background
        if len(train) > bc.max_train_events:
            rng = np.random.default_rng([config.study.seed, 11])
            train = train[np.sort(rng.choice(len(train), bc.max_train_events, replace=False))]
        x_train = fixed_features(train, bc.n_objects)
        calibration = prepared.calibration_background  # the model's validation split ("combined")
        x_cal = fixed_features(calibration, bc.n_objects) if calibration is not None and len(calibration) else None
        fitted = fit_baselines(x_train, bc.names, seed=config.study.seed, settings=TrainSettings(epochs=bc.epochs),
                               x_calibration=x_cal)
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in fitted}
    for dataset, events in prepared.events.items():
        x = fixed_features(events, bc.n_objects)
        ids = ak.to_numpy(events.event_id)
        pos = np.searchsorted(ids, columns[dataset]["event"])  # events are sorted by id
        for name, model in fitted.items():
            out[name][dataset] = model.score(x)[pos]
    return out, fitted


def fitted_score_axis(scores, n_bins: int) -> tuple[int, float, float]:
    """``(bins, low, high)`` covering every finite score: a round bin width (1, 2 or 5 x 10^k) of at
    least ``(max - min) / n_bins``, the edges on multiples of it (so at most ``n_bins`` bins)."""
    values = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores]) if scores else np.zeros(0)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return n_bins, 0.0, float(n_bins)
    lo, hi = float(values.min()), float(values.max())
    span = max(hi - lo, 1e-6)
    raw = span / n_bins
    exponent = np.floor(np.log10(raw))
    for step in (1, 2, 5, 10):
        width = float(step * 10 ** exponent)
        low, high = np.floor(lo / width) * width, (np.floor(hi / width) + 1) * width
        bins = int(round((high - low) / width))
        if bins <= n_bins:
            return bins, float(low), float(high)
    return n_bins, lo, lo + n_bins * raw * 1.0001  # pragma: no cover (step 10 always fits)


def score_hist_from_columns(config: AnalysisConfig, columns: dict[str, np.ndarray], names: dict[int, str],
                            axis: tuple[int, float, float]):
    """The score histogram of one dataset (process x region x score, weighted) from its skim columns,
    as the processor would have filled it over ``axis``."""
    import hist

    bins, lo, hi = axis
    h = hist.Hist(
        hist.axis.StrCategory([], name="process", label="Process", growth=True),
        hist.axis.StrCategory(["all", *(r.name for r in config.regions)], name="region", label="Region"),
        hist.axis.Regular(bins, lo, hi, name="score", label="Anomaly score"),
        storage=hist.storage.Weight(),
    )
    process = np.array([names.get(int(c), f"process_{c}") for c in columns["process_code"]], dtype=object)
    score, weight = columns[config.threshold.score], columns["weight"]
    for region in ["all", *(r.name for r in config.regions)]:
        mask = np.ones(len(score), bool) if region == "all" else columns[f"in_{region}"].astype(bool)
        if mask.any():
            h.fill(process=process[mask].astype(str), region=region, score=score[mask], weight=weight[mask])
    return h


def run_analysis(
    config: AnalysisConfig,
    out_dir,
    *,
    model=None,
    progress: bool = True,
    fitted_baselines=None,
    plots: bool = True,
    reader: dict | None = None,
) -> AnalysisResult:
    """Run one study end to end and write its outputs to ``out_dir`` (see the module docstring).

    ``reader``: the NanoAOD/PHYSLITE reader options every sample is read with (as the model was trained).

    ``model`` overrides ``[study] model``. ``fitted_baselines``: baselines already fitted on the same
    background training split (reused instead of refitting).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = Path(model) if model is not None else config.study.model
    if model is not None:
        config = config.with_overrides(study={"model": Path(model)})
    if model_dir is not None and not model_dir.exists():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    log.info("[%s] preparing inputs", config.study.name)
    prepared = prepare_inputs(config, out_dir, model_dir, need_train=fitted_baselines is None, reader=reader)
    log.info("[%s] running the processor", config.study.name)
    skim_dir = out_dir / "scored"
    if skim_dir.exists():  # skims of an earlier run (other chunk boundaries) must not mix with these
        shutil.rmtree(skim_dir)
    output = run_processor(config, prepared.ntuples, model_dir, progress=progress, skim_dir=skim_dir)
    columns = {ds: skim_columns(prepared, output, ds) for ds in prepared.ntuples}
    if config.histograms.score_range is None:
        bins, lo, hi = fitted_score_axis([c[config.threshold.score] for c in columns.values()],
                                         config.histograms.score_bins)
        prepared.notes.append(f"score histograms: {bins} bins over [{lo:g}, {hi:g}] (fitted to the scores)")
        for ds in columns:
            output[ds]["score"] = score_hist_from_columns(config, columns[ds], process_names_of(output, ds),
                                                          (bins, lo, hi))
    baseline_scores, fitted = {}, fitted_baselines
    if config.baselines.names:
        log.info("[%s] baselines: %s", config.study.name, ", ".join(config.baselines.names))
        baseline_scores, fitted = baseline_scores_for(config, prepared, columns, fitted_baselines)
    log.info("[%s] threshold, yields and metrics", config.study.name)
    from eventlm.analysis.study import references

    refs = {ds: references(events) for ds, events in prepared.events.items()}
    if config.statistics.enabled:  # the transferable score first, so that its metrics are measured too
        from eventlm.analysis.features import variables_of
        from eventlm.analysis.search import add_transferable

        variables = {ds: variables_of(events) for ds, events in prepared.events.items()}
        add_transferable(config, columns, variables)
    thresholds, yields, metrics, rocs = analyse_columns(config, columns, baseline_scores, refs)
    table = results_table(config, thresholds, yields, metrics, prepared.notes)
    files = {}
    files["hists_pkl"], files["hists_root"] = write_hists(output, out_dir)
    for ds in prepared.ntuples:
        files[f"scored_{ds}"] = skim_dir / ds
    if plots:
        log.info("[%s] plots", config.study.name)
        for path in make_plots(config, output, thresholds, metrics, rocs, out_dir):
            files[path.stem] = path
    search = None
    if config.statistics.enabled:
        from eventlm.analysis.search import run_search

        log.info("[%s] background estimate, workspace, limits", config.study.name)
        search = run_search(config, columns, variables, out_dir, plots=plots)
        table += "\n" + search.markdown
        files.update(search.files)
    files["results"] = out_dir / "results.md"
    write_text(files["results"], table)
    seconds = time.perf_counter() - t0
    summary = {
        "study": config.study.name,
        "config": str(config.path) if config.path else None,
        "model": str(model_dir) if model_dir else None,
        "lumi_fb": config.study.lumi,  # every yield, histogram (hists.root, hists.pkl) and figure
        "samples": [asdict(n) for n in prepared.normalisation],
        "executor": config.run.executor,
        "seconds": seconds,
        "notes": prepared.notes,
        "thresholds": {s: asdict(t) for s, t in thresholds.items()},
        "yields": {s: {r: y.to_dict() for r, y in ys.items()} for s, ys in yields.items()},
        "metrics": {s: {m: v.to_dict() for m, v in ms.items()} for s, ms in metrics.items()},
        "statistics": search.to_dict() if search is not None else None,
    }
    files["metrics"] = out_dir / "metrics.json"
    write_text(files["metrics"], json.dumps(summary, indent=2, default=json_default))
    result = AnalysisResult(config, out_dir, thresholds, yields, metrics, rocs, table, files, seconds)
    result.fitted_baselines = fitted
    result.search = search
    return result


__all__ = ["AnalysisResult", "analyse_columns", "baseline_scores_for", "run_analysis"]
