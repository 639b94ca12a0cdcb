"""``eventlm analyze``: inputs -> ntuples -> coffea processor -> threshold, metrics, baselines, outputs.

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

import ast
import contextlib
import json
import logging
import math
import pickle
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.analysis.config import SCORE_LABELS, AnalysisConfig
from eventlm.analysis.features import fixed_features
from eventlm.analysis.metrics import Metrics, evaluate, roc_curve
from eventlm.analysis.threshold import RegionYields, Threshold, choose_threshold, region_yields
from eventlm.errors import EventlmError

log = logging.getLogger(__name__)

BACKGROUND = "background"
EVENTLM = "eventlm"


@dataclass
class Prepared:
    """The analysed events of every dataset (event model, sorted by event id) and their ntuples."""

    events: dict[str, ak.Array]
    ntuples: dict[str, Path]
    train_background: ak.Array | None  # the model's training split (for the baselines)
    notes: list[str] = field(default_factory=list)


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


def _sorted_by_id(events: ak.Array) -> ak.Array:
    order = np.argsort(ak.to_numpy(events.event_id), kind="stable")
    return events[order]


def _strip_scores(events: ak.Array) -> ak.Array:
    from eventlm.analysis.processor import SCORE_COLUMNS

    drop = {*SCORE_COLUMNS, "token_nll", "log_likelihood"}
    return events[[f for f in events.fields if f not in drop]]


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
        from eventlm.train import load_split

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


@contextlib.contextmanager
def coffea_runner(executor: str = "iterative", workers: int = 2, chunksize: int = 25_000,
                  scheduler: str | None = None, progress: bool = True, retries: int = 0):
    """A ``coffea.processor.Runner`` for the named executor; a dask executor gets a local cluster
    (``workers`` single-threaded processes) unless ``scheduler`` names a running one.

    ``retries``: attempts per chunk after a failure (0 locally: a processing error is not flaky; on a
    cluster with remote files a few retries help)."""
    from coffea import processor

    from eventlm.io.schema import EventlmNanoAODSchema

    with contextlib.ExitStack() as stack:
        if not progress:
            stack.enter_context(_quiet_coffea_bars())
        if executor == "iterative":
            ex = processor.IterativeExecutor(status=progress, retries=retries)
        elif executor == "futures":
            ex = processor.FuturesExecutor(workers=workers, status=progress, retries=retries)
        elif executor == "dask":
            from distributed import Client, LocalCluster

            # distributed sets its own log levels on import: keep its bookkeeping quiet unless debugging
            cluster_logs = logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING
            logging.getLogger("distributed").setLevel(cluster_logs)
            if scheduler:
                client = stack.enter_context(Client(scheduler))
            else:
                cluster = stack.enter_context(
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=cluster_logs)
                )
                client = stack.enter_context(Client(cluster))
            ex = processor.DaskExecutor(client=client, status=progress, retries=retries)
        else:
            raise ValueError(f"unknown executor {executor!r} (iterative, futures, dask)")
        yield processor.Runner(ex, schema=EventlmNanoAODSchema, chunksize=chunksize)


@contextlib.contextmanager
def _quiet_coffea_bars():
    """Silence coffea's rich progress bars: its executors draw them even with ``status=False``
    (coffea 2026.9: the flag only reaches the bar as an unused task field)."""
    from coffea import util

    console = getattr(util, "coffea_console", None)
    if console is None:  # a coffea without the shared console: nothing to silence
        yield
        return
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


def run_processor(config: AnalysisConfig, ntuples: dict[str, Path], model_dir: Path | None, *,
                  progress: bool = True, skim_dir=None, keep_columns: bool = False) -> dict:
    """Run the :class:`AnomalyProcessor` over ``{dataset: ntuple}`` with the configured executor.

    ``skim_dir``: where the workers write the scored events (one skim per chunk); ``keep_columns``:
    return per-event columns through the accumulator instead (or as well)."""
    from eventlm.analysis.processor import AnomalyProcessor

    known = [BACKGROUND, *config.inputs.signals]
    proc = AnomalyProcessor(
        config.regions,
        model=model_dir,
        score_column=config.threshold.score,
        score_bins=config.histograms.score_bins,
        score_range=config.histograms.score_range,
        variables=config.histograms.variables,
        known_processes=known,
        torch_threads=1 if config.run.executor != "iterative" else None,
        skim_dir=skim_dir,
        keep_columns=keep_columns,
    )
    fileset = {name: [str(path)] for name, path in ntuples.items()}
    run = config.run
    log.info("coffea: %s executor, %d worker(s), chunks of %d events", run.executor, run.workers, run.chunksize)
    retries = 3 if run.scheduler else 0
    with coffea_runner(run.executor, run.workers, run.chunksize, run.scheduler, progress, retries) as runner:
        try:
            return runner(fileset, proc, treename="Events")
        except EventlmError:
            raise
        except Exception as err:  # noqa: BLE001 - coffea wraps a chunk's error in a plain Exception
            unwrapped = chunk_error(err)
            if unwrapped is None:
                raise
            raise unwrapped from None


def chunk_error(err: BaseException) -> EventlmError | None:
    """The eventlm error inside coffea's "Failed processing file: ..." wrapper, or None.

    The iterative executor keeps the original as ``__cause__``; the futures and dask executors pass
    only its repr, which is parsed (an eventlm error message names the file and the problem)."""
    if isinstance(err.__cause__, EventlmError):
        return err.__cause__
    match = re.search(r"The error was: (\w+)\((.*)\)\.?\s*$", str(err), re.S)
    if match is None or match.group(1) not in _EVENTLM_ERRORS:
        return None
    try:
        message = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        message = match.group(2)
    return EventlmError(str(message))


_EVENTLM_ERRORS = ("EventlmError", "EventFormatError", "TokenizationError", "CheckpointMismatchError")


def _lumi_scale(config: AnalysisConfig) -> float:
    return config.study.lumi / config.study.weights_lumi


def _injected_weights(config, w_b_cr: np.ndarray, w_s_cr: np.ndarray) -> np.ndarray:
    inj = config.threshold.signal_injection
    if isinstance(inj, str):  # "cross_section": the signal's own weights
        return w_s_cr
    total = w_s_cr.sum()
    return w_s_cr * (float(inj) * w_b_cr.sum() / total) if total > 0 else w_s_cr


def analyse_columns(config: AnalysisConfig, columns: dict[str, dict[str, np.ndarray]],
                    baseline_scores: dict[str, dict[str, np.ndarray]] | None = None):
    """Threshold, SR yields and metrics from per-event columns (see :func:`columns_of`).

    ``baseline_scores[method][dataset]`` are aligned with ``columns[dataset]`` (sorted by event id).
    Returns ``(thresholds, yields, metrics, rocs)``, each keyed by signal.
    """
    t = config.threshold
    lumi = _lumi_scale(config)
    bkg = columns[BACKGROUND]
    thresholds, yields, metrics, rocs = {}, {}, {}, {}
    for signal in config.inputs.signals:
        sig = columns[signal]
        cr_b, cr_s = bkg[f"in_{t.control_region}"], sig[f"in_{t.control_region}"]
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
            w_s = sig["weight"][rs] if region != t.control_region else w_s_cr
            yields[signal][region] = region_yields(
                region, thr.value, bkg[t.score][rb], sig[t.score][rs],
                bkg["weight"][rb], w_s, lumi_scale=lumi,
            )
        region = config.metrics.region
        mb = bkg[f"in_{region}"] if region != "all" else np.ones(len(bkg["event"]), bool)
        ms = sig[f"in_{region}"] if region != "all" else np.ones(len(sig["event"]), bool)
        methods = {EVENTLM: (bkg["anomaly_score"], sig["anomaly_score"])}
        for column, label in (("anomaly_score_calibrated", "calibrated"), ("anomaly_score_mean", "mean NLL"),
                              ("anomaly_score_sum", "summed NLL")):
            if column not in bkg or column not in sig:
                continue
            if np.array_equal(bkg[column], bkg["anomaly_score"]) and np.array_equal(sig[column], sig["anomaly_score"]):
                continue  # the causal default is the summed NLL itself; an old file's mean is read as the score
            methods[f"{EVENTLM}, {label}"] = (bkg[column], sig[column])
        for name, by_dataset in (baseline_scores or {}).items():
            methods[name] = (by_dataset[BACKGROUND], by_dataset[signal])
        metrics[signal], rocs[signal] = {}, {}
        for name, (sb, ss) in methods.items():
            if mb.sum() == 0 or ms.sum() == 0:
                continue
            metrics[signal][name] = evaluate(
                sb[mb], ss[ms], bkg["weight"][mb], sig["weight"][ms],
                working_points=config.metrics.working_points, n_bootstrap=config.metrics.n_bootstrap,
                seed=config.study.seed,
            )
            rocs[signal][name] = roc_curve(sb[mb], ss[ms], bkg["weight"][mb], sig["weight"][ms])
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
        fitted = fit_baselines(x_train, bc.names, seed=config.study.seed, settings=TrainSettings(epochs=bc.epochs))
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in fitted}
    for dataset, events in prepared.events.items():
        x = fixed_features(events, bc.n_objects)
        ids = ak.to_numpy(events.event_id)
        pos = np.searchsorted(ids, columns[dataset]["event"])  # events are sorted by id
        for name, model in fitted.items():
            out[name][dataset] = model.score(x)[pos]
    return out, fitted


# ----------------------------------------------------------------------------------------------------
# outputs


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float) and (abs(value) >= 1e4 or (0 < abs(value) < 1e-3)):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_label(model_dir) -> str:
    """``"eventlm (lut, masked)"`` from a model directory's config.toml; ``"eventlm"`` if unknown."""
    if model_dir is None or not (Path(model_dir) / "config.toml").exists():
        return "eventlm"
    try:
        from eventlm.config import load_config as load_run_config

        run = load_run_config(Path(model_dir) / "config.toml")
        return f"eventlm ({run.tokenizer.kind}, {run.train.objective})"
    except Exception:  # noqa: BLE001 - a label is not worth failing the analysis for
        return "eventlm"


def method_label(method: str, config) -> str:
    """How a method is named in tables and legends: eventlm rows carry the model's tokenizer/objective."""
    from eventlm.analysis.baselines import LABELS

    if method.startswith(EVENTLM):
        return model_label(config.study.model) + method[len(EVENTLM):]
    return LABELS.get(method, method)


def _fmt_yield(value):
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def results_table(config: AnalysisConfig, thresholds, yields, metrics, notes=()) -> str:
    """The Markdown results of one study: figures of merit per method, then the CR/SR selection."""
    wps = config.metrics.working_points
    lines = [f"## {config.study.name}: {config.title}", ""]
    region = "all test events" if config.metrics.region == "all" else f"region {config.metrics.region}"
    for signal, per_method in metrics.items():
        lines += [f"### {signal}: figures of merit ({region}; ± = std. dev. of {config.metrics.n_bootstrap} bootstrap resamplings)", ""]
        head = ["Method", "ROC-AUC"] + [f"eff_S @ eff_B={wp:g}" for wp in wps] + ["SIC max"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, m in per_method.items():
            name = method_label(method, config)
            row = [name, m.format("auc")] + [m.format(f"eff_s@{wp:g}") for wp in wps] + [m.format("sic_max", 2)]
            lines.append("| " + " | ".join(row) + " |")
        n_b = next(iter(per_method.values())).n_background if per_method else 0
        n_s = next(iter(per_method.values())).n_signal if per_method else 0
        lines += ["", f"{n_b} background and {n_s} signal events (unweighted).", ""]
    t = config.threshold
    lines += [f"### Threshold ({t.method}, chosen in {t.control_region}) applied in {t.signal_region}, "
              f"L = {config.study.lumi:g} fb⁻¹", ""]
    head = ["Signal", "threshold", "CR eff_B", "CR eff_S", "region", "s", "b", "eff_S", "eff_B",
            "s/√b", "Z_A", "Z_A before"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for signal, thr in thresholds.items():
        for region, y in yields[signal].items():
            row = [signal, _fmt(thr.value), _fmt(thr.eff_b), _fmt(thr.eff_s), region, _fmt_yield(y.s), _fmt_yield(y.b),
                   _fmt(y.eff_s), _fmt(y.eff_b), _fmt(y.s_over_sqrt_b, 2), _fmt(y.z_asimov, 2),
                   _fmt(y.z_asimov_before, 2)]
            lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_hists(output: dict, out_dir: Path) -> tuple[Path, Path]:
    """``hists.pkl`` (every hist object, by dataset) and ``hists.root`` (1D slices per process and region)."""
    import hist
    import uproot

    hists = {ds: {k: v for k, v in content.items() if isinstance(v, hist.Hist)} for ds, content in output.items()}
    pkl = out_dir / "hists.pkl"
    with open(pkl, "wb") as f:
        pickle.dump(hists, f)
    root = out_dir / "hists.root"
    with uproot.recreate(root) as f:
        for ds, content in hists.items():
            for name, h in content.items():
                for process in h.axes["process"]:
                    for region in h.axes["region"]:
                        f[f"{ds}/{name}/{process}/{region}"] = h[{"process": process, "region": region}]
    return pkl, root


def skim_columns(prepared: Prepared, output: dict, dataset: str) -> dict[str, np.ndarray]:
    """The per-event columns of one dataset, read back from its skims; every analysed event exactly once."""
    from eventlm.analysis.processor import read_skim_columns, skims_of

    cols = read_skim_columns(skims_of(output, dataset), dataset=dataset)
    ids = ak.to_numpy(prepared.events[dataset].event_id)
    if len(ids) != len(cols["event"]) or not np.array_equal(ids, cols["event"]):
        raise RuntimeError(f"{dataset}: the skims hold {len(cols['event'])} events, the input has {len(ids)}")
    return cols


def make_plots(config: AnalysisConfig, output: dict, thresholds, metrics, rocs, out_dir: Path) -> list[Path]:
    """Score stacks in CR and SR (per signal), kinematic stacks, ROC and SIC curves."""
    import hist

    from eventlm.plotting.analysis import label_for, plot_roc, plot_sic, plot_stack

    label = label_for(config.plot.experiment, config.plot.label, config.plot.com, config.study.lumi)
    lumi = _lumi_scale(config)
    paths = []
    merged = {}
    for ds, content in output.items():  # one hist per name, over every dataset (process axis tells them apart)
        for name, h in content.items():
            if isinstance(h, hist.Hist):
                merged[name] = h if name not in merged else merged[name] + h
    signals = list(config.inputs.signals)
    t = config.threshold
    for signal in signals:
        thr = thresholds[signal].value if signal in thresholds else None
        for region in (t.control_region, t.signal_region):
            path = out_dir / f"score_{region}_{signal}.png"
            plot_stack(merged["score"], path, region=region, signals=[signal], threshold=thr, label=label,
                       title=config.title, lumi_scale=lumi, xlabel=SCORE_LABELS[config.threshold.score])
            paths.append(path)
    from eventlm.analysis.features import VARIABLES

    for var in config.histograms.variables:
        for region in (t.control_region, t.signal_region):
            path = out_dir / f"{var}_{region}.png"
            plot_stack(merged[var], path, region=region, signals=signals, axis=var, xlabel=VARIABLES[var][0],
                       label=label, title=config.title, lumi_scale=lumi)
            paths.append(path)
    for signal, curves in rocs.items():
        named = {}
        aucs = {}
        for method, roc in curves.items():
            text = method_label(method, config)
            named[text] = roc
            aucs[text] = f"AUC = {metrics[signal][method].format('auc', 3)}"
        path = out_dir / f"roc_{signal}.png"
        plot_roc(named, path, aucs=aucs, style=config.plot.roc_style, label=label, title=signal)
        paths.append(path)
        path = out_dir / f"sic_{signal}.png"
        plot_sic(named, path, label=label, title=signal)
        paths.append(path)
    return paths


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


def run_analysis(
    config: AnalysisConfig,
    out_dir,
    *,
    model=None,
    progress: bool = True,
    fitted_baselines=None,
    plots: bool = True,
) -> AnalysisResult:
    """Run one study end to end and write its outputs to ``out_dir`` (see the module docstring).

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
    prepared = prepare_inputs(config, out_dir, model_dir, need_train=fitted_baselines is None)
    log.info("[%s] running the processor", config.study.name)
    skim_dir = out_dir / "scored"
    if skim_dir.exists():  # skims of an earlier run (other chunk boundaries) must not mix with these
        shutil.rmtree(skim_dir)
    output = run_processor(config, prepared.ntuples, model_dir, progress=progress, skim_dir=skim_dir)
    columns = {ds: skim_columns(prepared, output, ds) for ds in prepared.ntuples}
    baseline_scores, fitted = {}, fitted_baselines
    if config.baselines.names:
        log.info("[%s] baselines: %s", config.study.name, ", ".join(config.baselines.names))
        baseline_scores, fitted = baseline_scores_for(config, prepared, columns, fitted_baselines)
    log.info("[%s] threshold, yields and metrics", config.study.name)
    thresholds, yields, metrics, rocs = analyse_columns(config, columns, baseline_scores)
    table = results_table(config, thresholds, yields, metrics, prepared.notes)
    files = {}
    files["hists_pkl"], files["hists_root"] = write_hists(output, out_dir)
    for ds in prepared.ntuples:
        files[f"scored_{ds}"] = skim_dir / ds
    if plots:
        log.info("[%s] plots", config.study.name)
        for path in make_plots(config, output, thresholds, metrics, rocs, out_dir):
            files[path.stem] = path
    files["results"] = out_dir / "results.md"
    files["results"].write_text(table)
    seconds = time.perf_counter() - t0
    summary = {
        "study": config.study.name,
        "config": str(config.path) if config.path else None,
        "model": str(model_dir) if model_dir else None,
        "lumi_fb": config.study.lumi,
        "executor": config.run.executor,
        "seconds": seconds,
        "notes": prepared.notes,
        "thresholds": {s: asdict(t) for s, t in thresholds.items()},
        "yields": {s: {r: y.to_dict() for r, y in ys.items()} for s, ys in yields.items()},
        "metrics": {s: {m: v.to_dict() for m, v in ms.items()} for s, ms in metrics.items()},
    }
    files["metrics"] = out_dir / "metrics.json"
    files["metrics"].write_text(json.dumps(summary, indent=2, default=_json_default))
    result = AnalysisResult(config, out_dir, thresholds, yields, metrics, rocs, table, files, seconds)
    result.fitted_baselines = fitted
    return result


__all__ = ["run_analysis", "prepare_inputs", "run_processor", "analyse_columns", "results_table", "coffea_runner"]
