"""``eventlm demo`` (the job of ``make demo``): train, score, analyse both studies, print the results.

An application over the whole pipeline (it trains, scores and analyses), so it lives beside the
package's layers rather than in :mod:`eventlm.analysis`.

On the bundled samples (``data/``):

1. train the default model (the ``tail`` look-up table, causal objective) on the background and
   calibrate its score per object count on the validation split;
2. score the background test split and both studies' signals (writing scored ntuples and the token
   confusion matrices of background and signal);
3. fit the baselines (isolation forest, dense autoencoder, Deep SVDD, a normalizing flow) once on
   the background training split, and the challenge's "Combined" (Deep SVDD + flow) calibrated on the
   validation split;
4. run the analysis of the studies ``tttt_H500`` and ``gluino_1000`` (:func:`study_configs`) through the
   coffea processor on the scored ntuples (CR -> SR threshold, yields, plots);
5. the validation study (:mod:`eventlm.analysis.validation`) on every signal in ``data/``: the
   default score, its variants, the baselines, HT and the object count alone and a supervised
   classifier, with length-matched AUCs and the CR -> SR closure;
6. print and write the results (``OUT/results.md``).

Installed from a wheel it runs too: the two study configs ship inside the package (``eventlm/studies/``,
the wheel's copies of ``analysis/*.toml``), and the samples, too large to ship, are found with
``--data DIR`` (the ``data/`` folder of a source checkout); without them it stops with one line
naming ``--data``.

``quick=True`` is a reduced configuration for the end-to-end test (a few thousand events, one
short epoch, few bootstrap resamplings); its numbers mean nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import EventlmError


#: The source checkout this module sits in (``src/eventlm/demo.py``); installed, a site-packages folder.
ROOT_DIR = Path(__file__).resolve().parents[2]
STUDIES = ("tttt_H500", "gluino_1000")


def study_configs(analysis_dir=None) -> dict[str, Path]:
    """The demo's study configs: ``analysis_dir/<study>.toml`` when given, else the source checkout's
    ``analysis/``, else the copies installed with the package (``eventlm/studies/``)."""
    from importlib.resources import files

    places = [Path(analysis_dir)] if analysis_dir else [ROOT_DIR / "analysis", Path(str(files("eventlm") / "studies"))]
    for place in places:
        if all((place / f"{name}.toml").is_file() for name in STUDIES):
            return {name: place / f"{name}.toml" for name in STUDIES}
    raise EventlmError(f"the study configs {', '.join(n + '.toml' for n in STUDIES)} are in none of "
                       f"{', '.join(str(p) for p in places)} (a source checkout has them in analysis/)")


def sample_files(data_dir=None) -> dict[str, Path]:
    """The bundled samples the demo runs on: ``data_dir`` (``--data``), else the source checkout's
    ``data/``; one line naming ``--data`` when they are not there."""
    folder = Path(data_dir) if data_dir else ROOT_DIR / "data"
    out = {name: folder / f"{name}.csv.gz" for name in ("background", *STUDIES)}
    missing = [p.name for p in out.values() if not p.is_file()]
    if missing:
        raise EventlmError(f"the demo's samples {', '.join(missing)} are not in {folder}: pass --data DIR, the "
                           "data/ folder of an eventlm source checkout (the samples are not installed with "
                           "the package)")
    return out


@dataclass(frozen=True)
class DemoSettings:
    """What the demo runs; :meth:`quick` is the reduced configuration of the end-to-end test."""

    max_background: int | None = None  # background events read (None: all)
    max_signal: int | None = None  # events per signal
    train: dict = field(default_factory=dict)  # RunConfig section overrides, e.g. {"train": {"epochs": 3}}
    baseline_epochs: int = 20
    baseline_train_events: int = 40_000
    n_bootstrap: int = 100
    executor: str = "iterative"
    workers: int = 2
    #: CR background efficiency of the studies' [statistics] threshold (their configs say 0.01; the quick
    #: run's few hundred test events need 0.1 for events above it in every region)
    statistics_efficiency: float = 0.01

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(
            max_background=3000, max_signal=400,
            train={"train": {"epochs": 1, "batch_size": 128},
                   "model": {"n_layer": 1, "n_embd": 32, "n_head": 2}},
            baseline_epochs=2, baseline_train_events=2000, n_bootstrap=5, statistics_efficiency=0.1,
        )

    @classmethod
    def full(cls) -> DemoSettings:
        # measured on the 2-core CPU machine to fit in ~10 minutes end to end (docs/results.md)
        return cls(train={"train": {"epochs": 10}})


def _step(i: int, n: int, text: str) -> None:
    print(f"[{i}/{n}] {text}", flush=True)  # the demo's own output (a log line too printed it twice)


def score_events(scorer, events: ak.Array, path: Path, matrices: dict | None, *, chunk: int = 5000,
                 desc: str = "scoring") -> Path:
    """Score ``events`` in chunks (progress bar), write them with the score columns to ``path`` and add
    the (true, predicted) token counts to ``matrices`` (keys "Background"/"Signal")."""
    from tqdm.auto import tqdm

    from eventlm.io import write_events
    from eventlm.score import confusion_counts

    vocab = scorer.tokenizer.vocab_size
    background = set(scorer.background_processes)
    parts: dict[str, list] = {}
    with tqdm(total=len(events), desc=desc, unit="event", dynamic_ncols=True, disable=None) as bar:
        for start in range(0, len(events), chunk):
            sub = events[start:start + chunk]
            cols = scorer.score(sub, return_tokens=matrices is not None)
            if matrices is not None:
                true, pred = cols.pop("token_true"), cols.pop("token_pred")
                is_bkg = np.isin(np.asarray(ak.to_list(sub.process), dtype=object), list(background))
                for name, sel in (("Background", is_bkg), ("Signal", ~is_bkg)):
                    if sel.any():
                        matrices.setdefault(name, np.zeros((vocab, vocab), dtype=np.int64))
                        matrices[name] += confusion_counts(
                            ak.to_numpy(ak.flatten(true[sel])), ak.to_numpy(ak.flatten(pred[sel])), vocab
                        )
            for k, v in cols.items():
                parts.setdefault(k, []).append(v)
            bar.update(len(sub))
    extra = {}
    for k, vs in parts.items():
        extra[k] = ak.concatenate(vs) if isinstance(vs[0], ak.Array) else np.concatenate(vs)
    return write_events(events, path, extra_columns=extra)


def run_demo(out_dir="demo_out", *, quick: bool = False, settings: DemoSettings | None = None,
             data_dir=None, analysis_dir=None) -> dict:
    """Run the demo; returns ``{"results": markdown, "seconds": {...}, "studies": {name: AnalysisResult}}``."""
    import torch

    from eventlm.analysis.baselines import TrainSettings, fit_baselines
    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.features import fixed_features
    from eventlm.analysis.inputs import rescale_to_full
    from eventlm.analysis.runner import run_analysis
    from eventlm.config import RunConfig
    from eventlm.io import read_events
    from eventlm.analysis.validation import ValidationSettings, run_validation
    from eventlm.apply import calibrate, plot_token_confusion
    from eventlm.modeldir import ModelDir
    from eventlm.plotting.training import plot_loss
    from eventlm.train import train

    settings = settings or (DemoSettings.quick() if quick else DemoSettings.full())
    out_dir = Path(out_dir)
    samples = sample_files(data_dir)
    data_dir = samples["background"].parent
    configs = study_configs(analysis_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t_all = time.perf_counter()
    n_steps = 6

    # 1. train ------------------------------------------------------------------------------------
    config = RunConfig().replace(**settings.train) if settings.train else RunConfig()
    _step(1, n_steps, f"training the default model ({config.tokenizer.kind} tokenizer, {config.train.objective} "
                      "objective) on the background")
    t0 = time.perf_counter()
    background = read_events(data_dir / "background.csv.gz", max_events=settings.max_background)
    all_background = background
    model_dir = out_dir / "model"
    result = train(config, background, model_dir, progress=True)
    plot_loss(result.metrics, model_dir / "loss.png")
    calibrate(model_dir, background)
    seconds["train"] = time.perf_counter() - t0
    print(f"      {len(background)} background events, {result.epochs_run} epoch(s), best validation loss "
          f"{result.best_val_loss:.3f} ({seconds['train']:.0f} s)", flush=True)

    # 2. score ------------------------------------------------------------------------------------
    _step(2, n_steps, "scoring the background test split and both signals")
    t0 = time.perf_counter()
    md = ModelDir(model_dir)
    test = rescale_to_full(md.select(background, "test"), background)
    train_events = md.select(background, "train")
    calibration_events = md.select(background, "validation")  # held out: calibrates the "combined" baseline
    del background
    scorer = md.open_scorer()
    scored_dir = out_dir / "scored"
    scored_dir.mkdir(exist_ok=True)
    matrices: dict[str, np.ndarray] = {}
    scored = {"background": score_events(scorer, test, scored_dir / "background.root", matrices,
                                         desc="background")}
    for name in STUDIES:
        events = read_events(data_dir / f"{name}.csv.gz", max_events=settings.max_signal)
        scored[name] = score_events(scorer, events, scored_dir / f"{name}.root", matrices, desc=name)
    plot_token_confusion(matrices, out_dir / "token_confusion.png", scorer.tokenizer)
    seconds["score"] = time.perf_counter() - t0

    # 3. baselines --------------------------------------------------------------------------------
    _step(3, n_steps, "fitting the baselines on the background training split")
    t0 = time.perf_counter()
    study0 = load_analysis_config(configs[STUDIES[0]])
    bc = study0.baselines
    if len(train_events) > settings.baseline_train_events:
        rng = np.random.default_rng([study0.study.seed, 11])
        train_events = train_events[np.sort(rng.choice(len(train_events), settings.baseline_train_events,
                                                       replace=False))]
    torch.manual_seed(study0.study.seed)
    fitted = fit_baselines(fixed_features(train_events, bc.n_objects), bc.names, seed=study0.study.seed,
                           settings=TrainSettings(epochs=settings.baseline_epochs),
                           x_calibration=fixed_features(calibration_events, bc.n_objects))
    seconds["baselines"] = time.perf_counter() - t0

    # 4. studies ----------------------------------------------------------------------------------
    _step(4, n_steps, f"analysing {', '.join(STUDIES)} (coffea, {settings.executor} executor)")
    t0 = time.perf_counter()
    studies = {}
    for name in STUDIES:
        cfg = load_analysis_config(configs[name]).with_overrides(
            inputs={"background": (scored["background"],), "signals": {name: (scored[name],)},
                    "background_events": "all", "max_events": None},
            metrics={"n_bootstrap": settings.n_bootstrap},
            run={"executor": settings.executor, "workers": settings.workers},
            statistics={"background_efficiency": settings.statistics_efficiency},
        )
        print(f"      {name} ...", flush=True)
        res = run_analysis(cfg, out_dir / name, model=model_dir, progress=False, fitted_baselines=fitted)
        studies[name] = res
    seconds["analysis"] = time.perf_counter() - t0

    # 5. validation on every signal -----------------------------------------------------------------
    names = signal_names(data_dir)
    _step(5, n_steps, f"validation study on {len(names)} signals ({', '.join(names)})")
    t0 = time.perf_counter()
    signals = {n: read_events(data_dir / f"{n}.csv.gz", max_events=settings.max_signal) for n in names}
    validation = run_validation(model_dir, all_background, signals, out_dir / "validation",
                                settings=ValidationSettings(n_bootstrap=settings.n_bootstrap,
                                                            seed=study0.study.seed),
                                fitted_baselines=fitted)
    seconds["validation"] = time.perf_counter() - t0
    print(f"      background estimate and limits for every signal ({study0.study.name}'s regions) ...", flush=True)
    t0 = time.perf_counter()
    # (30 resamplings: the closure table repeats the first study's, measured there with all of them)
    search = limits_for_every_signal(study0, test, signals, validation["scores"], out_dir / "limits",
                                     n_bootstrap=min(settings.n_bootstrap, 30), efficiency=settings.statistics_efficiency)
    seconds["limits"] = time.perf_counter() - t0

    # 6. results ----------------------------------------------------------------------------------
    _step(6, n_steps, "results")
    seconds["total"] = time.perf_counter() - t_all
    header = [
        "# eventlm demo results", "",
        f"Model: `{model_dir}` ({config.tokenizer.kind} tokenizer, {config.train.objective} objective, "
        f"{config.model.n_layer} layers x {config.model.n_embd}, {result.epochs_run} epoch(s)); "
        f"{'QUICK reduced configuration: numbers are not meaningful. ' if quick else ''}"
        f"total {seconds['total']:.0f} s (train {seconds['train']:.0f}, score {seconds['score']:.0f}, "
        f"baselines {seconds['baselines']:.0f}, analysis {seconds['analysis']:.0f}, "
        f"validation {seconds['validation']:.0f}, limits {seconds['limits']:.0f}).", "",
    ]
    text = ("\n".join(header) + "\n".join(r.table for r in studies.values())
            + "\n## Validation: every signal, the baselines and the references\n\n" + validation["markdown"]
            + "\n## Background estimate and limits for every bundled signal\n\n" + search.markdown)
    (out_dir / "results.md").write_text(text)
    print(text, flush=True)
    print(f"outputs in {out_dir}/ (figures: {out_dir}/<study>/*.png, token confusion: "
          f"{out_dir}/token_confusion.png)", flush=True)
    return {"results": text, "seconds": seconds, "studies": studies, "model_dir": model_dir,
            "validation": validation}


def limits_for_every_signal(config, background: ak.Array, signals: dict[str, ak.Array], scores: dict, out_dir,
                            *, n_bootstrap: int, efficiency: float):
    """The [statistics] chain (:func:`eventlm.analysis.search.run_search`) with ``config``'s regions on
    the background test split (weights rescaled to the full sample) and every signal, from their
    ``anomaly_score`` (``scores[dataset]``, as :func:`eventlm.analysis.validation.score_all` gives them)."""
    from eventlm.analysis.features import variables_of
    from eventlm.analysis.search import run_search

    names = {n: (Path(n),) for n in signals}  # only the names matter: the events are given
    cfg = config.with_overrides(inputs={"signals": names}, metrics={"n_bootstrap": n_bootstrap},
                                statistics={"background_efficiency": efficiency},
                                study={"title": f"every bundled signal, the regions of {config.study.name}"})
    scale = cfg.study.lumi / cfg.study.weights_lumi  # the bundled weights are at weights_lumi
    columns, variables = {}, {}
    for ds, events in {"background": background, **signals}.items():
        v = variables_of(events)
        variables[ds] = v
        columns[ds] = {"weight": ak.to_numpy(events.weight).astype(np.float64) * scale,
                       "anomaly_score": np.asarray(scores[ds]["anomaly_score"], np.float64),
                       **{f"in_{r.name}": r.mask(v) for r in cfg.regions}}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return run_search(cfg, columns, variables, out_dir)


def signal_names(data_dir: Path) -> list[str]:
    """Every bundled signal: the ``*.csv.gz`` samples of ``data_dir`` but the background and the fixture."""
    names = sorted(p.name[: -len(".csv.gz")] for p in Path(data_dir).glob("*.csv.gz"))
    return [n for n in names if n not in ("background", "fixture")]
