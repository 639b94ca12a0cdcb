"""The validation study: the default score against the baselines and references on every signal.

:func:`run_validation` scores the background test split and every signal with a trained model and
compares, per signal (through :func:`eventlm.analysis.study.compare`):

- the default ``anomaly_score`` and its named variants (``anomaly_score_nll``, the event NLL;
  ``anomaly_score_calibrated``, ``anomaly_score_mean``, ``anomaly_score_sum`` where it differs from
  the NLL);
- the isolation forest, dense autoencoder, Deep SVDD and flow baselines, fitted on the model's training
  split, and the challenge's "Combined" (Deep SVDD + flow, calibrated on the model's validation split);
- HT alone and the object count alone (the one-number references);
- a supervised classifier (gradient-boosted trees on the baselines' fixed-length features, trained on
  half of the signal and as many training-background events; evaluated on the other half): the upper
  bound of what the inputs hold;

with ROC-AUC, length-matched AUC, eff_S at eff_B = 1e-2 and 1e-3 and max SIC, with bootstrap errors;
and the CR -> SR closure of the default and the calibrated score on the background test split.
``eventlm demo`` and ``analysis/validation.py`` call it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

log = logging.getLogger(__name__)

#: CR and SR of the bundled studies (analysis/*.toml): jets include b-jets.
CR = "4 <= n_jets <= 5"
SR = "n_jets >= 6 and n_bjets >= 2"
DEFAULT_LABEL = "eventlm anomaly_score (default)"
#: score column -> its row label
SCORE_LABELS = {
    "anomaly_score": DEFAULT_LABEL,
    "anomaly_score_nll": "eventlm anomaly_score_nll (-log p(event))",
    "anomaly_score_calibrated": "eventlm anomaly_score_calibrated",
    "anomaly_score_mean": "eventlm anomaly_score_mean (paper)",
    "anomaly_score_sum": "eventlm anomaly_score_sum",
}


@dataclass(frozen=True)
class ValidationSettings:
    """How the comparison is made (never how the default model is trained: that is its RunConfig)."""

    #: training epochs of the autoencoder, Deep SVDD and flow baselines
    baseline_epochs: int = 20
    #: training-split events the baselines are fitted on (a seeded subsample where there are more)
    baseline_events: int = 40_000
    #: bootstrap resamplings behind every error
    n_bootstrap: int = 100
    #: the seed of the subsamples, the bootstrap and the supervised classifier
    seed: int = 1234


def score_all(model_dir: Path, datasets: dict[str, ak.Array]) -> dict[str, dict[str, np.ndarray]]:
    """The event score columns of every dataset (float64 arrays), with a progress bar."""
    from tqdm.auto import tqdm

    from eventlm.modeldir import ModelDir
    from eventlm.score import EVENT_SCORES

    scorer = ModelDir(model_dir).open_scorer()
    out = {}
    total = sum(len(ev) for ev in datasets.values())
    with tqdm(total=total, desc=f"scoring with {Path(model_dir).name}", unit="event", dynamic_ncols=True,
              disable=None) as bar:
        for name, events in datasets.items():
            cols = {}
            for start in range(0, len(events), 5000):
                part = scorer.score(events[start:start + 5000])
                for k in EVENT_SCORES:
                    if k in part:
                        cols.setdefault(k, []).append(np.asarray(part[k], dtype=np.float64))
                bar.update(min(5000, len(events) - start))
            out[name] = {k: np.concatenate(v) for k, v in cols.items()}
    return out


def supervised(x_train_b, x_s, x_test_b, seed: int):
    """Scores of a gradient-boosted classifier on (test background, held-out half of the signal)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng([seed, 5])
    order = rng.permutation(len(x_s))
    half = len(x_s) // 2
    train_s, test_s = order[:half], order[half:]
    pick_b = rng.choice(len(x_train_b), min(len(x_train_b), max(half * 2, 1)), replace=False)
    x = np.concatenate([x_train_b[pick_b], x_s[train_s]])
    y = np.concatenate([np.zeros(len(pick_b)), np.ones(len(train_s))])
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed,
                                         class_weight="balanced").fit(x, y)
    return clf.predict_proba(x_test_b)[:, 1], clf.predict_proba(x_s[test_s])[:, 1], test_s


def run_validation(model_dir, background: ak.Array, signals: dict[str, ak.Array], out_dir, *,
                   settings: ValidationSettings = ValidationSettings(), seed_models=(), figures=True,
                   fitted_baselines=None) -> dict:
    """The study on ``signals`` with the model in ``model_dir`` (trained on ``background``).

    ``seed_models``: more model directories of the same configuration trained with other seeds (for the
    seed spread of the default's AUC). Writes ``validation.md``, ``validation.json`` and a ROC figure
    per signal into ``out_dir``. ``fitted_baselines``: baselines already fitted on the model's training
    split (``{name: Baseline}``), else they are fitted here. Returns ``{"markdown", "signals", "closure", "seed_spread"}``.
    """
    import torch

    from eventlm.analysis.baselines import TrainSettings, fit_baselines
    from eventlm.analysis.features import fixed_features, variables_of
    from eventlm.metrics import auc, roc_curve
    from eventlm.analysis.regions import Region
    from eventlm.analysis.study import closure, compare, comparison_table, references
    from eventlm.modeldir import ModelDir

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = ModelDir(model_dir)
    test = md.select(background, "test")
    train_events = md.select(background, "train")
    datasets = {"background": test, **signals}
    scores = score_all(Path(model_dir), datasets)
    seed_scores = [score_all(Path(d), datasets) for d in seed_models]

    fitted = fitted_baselines
    if fitted is None:
        rng = np.random.default_rng([settings.seed, 11])
        base_train = train_events
        if len(base_train) > settings.baseline_events:
            base_train = base_train[np.sort(rng.choice(len(base_train), settings.baseline_events, replace=False))]
        torch.manual_seed(settings.seed)
        # "combined" is calibrated on the model's validation split: background no baseline was fitted on
        fitted = fit_baselines(fixed_features(base_train, 10), seed=settings.seed,
                               settings=TrainSettings(epochs=settings.baseline_epochs),
                               x_calibration=fixed_features(md.select(background, "validation"), 10))
    feats = {n: fixed_features(ev, 10) for n, ev in datasets.items()}
    x_train_all = fixed_features(train_events, 10)
    base_scores = {m.replace("_", " "): {n: b.score(x) for n, x in feats.items()} for m, b in fitted.items()}
    refs = {n: references(ev) for n, ev in datasets.items()}
    n_obj = {n: refs[n]["object count"] for n in datasets}
    w = {n: ak.to_numpy(ev.weight).astype(np.float64) for n, ev in datasets.items()}

    sections, results, spreads = [], {}, {}
    for name in signals:
        methods, kinds = {}, {}
        for col, label in SCORE_LABELS.items():
            if col not in scores[name]:
                continue
            if col == "anomaly_score_sum" and np.allclose(scores[name][col], scores[name]["anomaly_score_nll"]):
                continue  # the causal event NLL is the summed NLL itself
            methods[label] = (scores["background"][col], scores[name][col])
        for m, by in base_scores.items():
            methods[m] = (by["background"], by[name])
        for ref in refs["background"]:
            methods[ref] = (refs["background"][ref], refs[name][ref])
            kinds[ref] = "reference"
        sb, ss, test_s = supervised(x_train_all, feats[name], feats["background"], settings.seed)
        methods["supervised classifier"] = (sb, ss, n_obj["background"], n_obj[name][test_s], w["background"],
                                            w[name][test_s])
        kinds["supervised classifier"] = "upper bound"
        comp = compare(name, methods, n_obj["background"], n_obj[name], w["background"], w[name], kinds=kinds,
                       n_bootstrap=settings.n_bootstrap, seed=settings.seed)
        results[name] = comp.to_dict()
        text = comparison_table(comp, title=name)
        if seed_scores:
            aucs = [comp.methods[DEFAULT_LABEL].metrics.values["auc"]]
            aucs += [auc(sc["background"]["anomaly_score"], sc[name]["anomaly_score"], w["background"], w[name])
                     for sc in seed_scores]
            spreads[name] = {"mean": float(np.mean(aucs)), "std": float(np.std(aucs, ddof=1)), "n": len(aucs),
                             "aucs": aucs}
            text += (f"\nDefault `anomaly_score` over {len(aucs)} training seeds: ROC-AUC "
                     f"{spreads[name]['mean']:.3f} ± {spreads[name]['std']:.3f} (standard deviation).\n")
        sections.append(text)
        if figures:
            from eventlm.plotting import PlotLabel
            from eventlm.plotting.analysis import plot_roc

            curves = {k: roc_curve(v[0], v[1], *(v[4:6] if len(v) == 6 else (w["background"], w[name])))
                      for k, v in methods.items()}
            plot_roc(curves, out / f"validation_roc_{name}.png", label=PlotLabel(),
                     aucs={k: f"{r.metrics.values['auc']:.3f}" for k, r in comp.methods.items()}, title=name)

    v = variables_of(test)
    in_cr, in_sr = Region("CR", CR).mask(v), Region("SR", SR).mask(v)
    clos = {}
    for col in ("anomaly_score", "anomaly_score_calibrated"):
        if col in scores["background"] and in_cr.any() and in_sr.any():
            clos[col] = {f"{eff:g}": closure(scores["background"][col], in_cr, in_sr, w["background"],
                                             efficiency=eff) for eff in (0.1, 0.01)}
    lines = ["#### CR → SR closure (background test split)", "",
             f"CR: `{CR}` ({int(in_cr.sum())} events), SR: `{SR}` ({int(in_sr.sum())} events). The background "
             "efficiency in the SR at the threshold that keeps a given efficiency of the CR background "
             "(SR/CR = 1: the threshold transfers).", "",
             "| score | ε_B(CR) | ε_B(SR) | SR/CR |", "|---|---|---|---|"]
    for col, by in clos.items():
        for c in by.values():
            lines.append(f"| `{col}` | {c['cr']:.4f} | {c['sr']:.4f} | {c['ratio']:.2f} |")
    sections.append("\n".join(lines) + "\n")
    seconds = time.perf_counter() - t0
    header = (f"Model `{model_dir}`; {len(train_events)} training and {len(test)} test background events; "
              f"{settings.n_bootstrap} bootstrap resamplings; {seconds:.0f} s.\n\n")
    text = header + "\n".join(sections)
    (out / "validation.md").write_text(text)
    payload = {"signals": results, "closure": clos, "seed_spread": spreads, "seconds": seconds}
    (out / "validation.json").write_text(json.dumps(payload, indent=1))
    # the scores too (not in validation.json): the demo's limits for every signal are computed on them
    return {"markdown": text, **payload, "scores": scores}
