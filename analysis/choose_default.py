"""How the default anomaly_score's two free numbers (w, q) were chosen: on the validation signals only.

The default (docs/method.md) combines the event NLL's background tail probability ``p_nll`` with the
scale's ``p_scale`` (S_T for the object count) as ``t = ((w (-ln p_nll))^q + (-ln p_scale)^q)^(1/q)``.
This script scans ``w`` x ``q`` on the VALIDATION signals (``make validation-signals``: the test
families at other masses, never the seven test signals in ``data/``) against the learned baselines
(isolation forest, autoencoder, Deep SVDD, flow, Combined, fitted on the model's training rows) and
the one-number references (HT alone, the object count alone), and applies the rule fixed before
looking: the most signals on which the score is at least every learned baseline in both ROC-AUC and
eps_S at eps_B = 1e-2, then the smallest worst shortfall against HT and the object count alone
(AUC shortfall + eps_S shortfall / 5). Writes ``OUT/choose_default.md`` and ``.json``::

    make validation-signals
    .venv/bin/python analysis/choose_default.py --model runs/validation/model \\
        --signals generated/validation_signals --out runs/choose_default
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (1.0, 1.5, 2.0, 3.0)
NORMS = (1.0, 2.0, 3.0, np.inf)
LEARNED = ("isolation_forest", "autoencoder", "deep_svdd", "flow", "combined")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a default model directory trained on --background")
    p.add_argument("--signals", required=True, help="folder of validation signal files (*.csv.gz)")
    p.add_argument("--background", default=str(ROOT / "data" / "background.csv.gz"))
    p.add_argument("--background-events", type=int, default=50_000, help="the events the model was trained on")
    p.add_argument("--out", default="runs/choose_default")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


def terms(scorer, events) -> dict:
    from eventlm.score import n_objects_of, token_scale

    tokens = scorer.tokenizer.encode(events)
    cols = scorer.score_tokens(tokens)
    return {"nll": cols["anomaly_score_nll"].astype(np.float64), "scale": token_scale(scorer.tokenizer, tokens),
            "n": n_objects_of(scorer.tokenizer, tokens)}


def _q(q) -> str:
    return "∞" if q is None or np.isinf(q) else f"{q:g}"


def figures(scores_b, scores_s) -> tuple[float, float]:
    from eventlm.metrics import auc, efficiency_at, roc_curve

    eff = efficiency_at(roc_curve(scores_b, scores_s), 1e-2, n_background=len(scores_b))
    return float(auc(scores_b, scores_s)), float(eff or 0.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from eventlm.analysis.baselines import TrainSettings, fit_baselines
    from eventlm.analysis.features import fixed_features, variables_of
    from eventlm.calibration import DEFAULT_NLL_WEIGHT, DEFAULT_Q, DefaultScore
    from eventlm.io import read_events
    from eventlm.modeldir import ModelDir

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    background = read_events(args.background, max_events=args.background_events)
    md = ModelDir(args.model)
    scorer = md.open_scorer(calibrated=False)
    rows = {split: md.select(background, split) for split in ("train", "validation", "test")}
    signals = {p.name[: -len(".csv.gz")]: read_events(p) for p in sorted(Path(args.signals).glob("*.csv.gz"))}
    if not signals:
        print(f"error: {args.signals}: no *.csv.gz signal files (make validation-signals)", file=sys.stderr)
        return 2
    print(f"validation signals: {', '.join(signals)}", flush=True)
    t = {name: terms(scorer, ev) for name, ev in {**rows, **signals}.items()}
    fitted = fit_baselines(fixed_features(rows["train"], 10), seed=args.seed, settings=TrainSettings(epochs=20),
                           x_calibration=fixed_features(rows["validation"], 10))
    evaluated = {"test": rows["test"], **signals}
    feats = {name: fixed_features(ev, 10) for name, ev in evaluated.items()}
    variables = {name: variables_of(ev) for name, ev in evaluated.items()}
    refs = {}
    for s in signals:
        r = {"HT alone": figures(variables["test"]["ht"], variables[s]["ht"]),
             "object count alone": figures(variables["test"]["n_particles"].astype(float),
                                           variables[s]["n_particles"].astype(float))}
        for name, b in fitted.items():
            r[name] = figures(b.score(feats["test"]), b.score(feats[s]))
        refs[s] = r
    val, train = t["validation"], t["train"]
    scale_rows = (np.concatenate([val["scale"], train["scale"]]), np.concatenate([val["n"], train["n"]]))
    scan = []
    for w, q in itertools.product(WEIGHTS, NORMS):
        d = DefaultScore.fit(val["nll"], val["scale"], val["n"], scale_rows=scale_rows, q=q, nll_weight=w)
        score = {name: d.transform(t[name]["nll"], t[name]["scale"], t[name]["n"]) for name in evaluated}
        per, learned_wins, regret = {}, 0, []
        for s in signals:
            a, e = figures(score["test"], score[s])
            la = max(refs[s][b][0] for b in LEARNED)
            le = max(refs[s][b][1] for b in LEARNED)
            ra = max(v[0] for v in refs[s].values())
            re_ = max(v[1] for v in refs[s].values())
            learned_wins += int(a >= la and e >= le)
            regret.append(min(a - ra, 0.0) + min(e - re_, 0.0) / 5)
            per[s] = (a, e)
        scan.append({"w": w, "q": None if np.isinf(q) else q, "learned_wins": learned_wins,
                     "worst_shortfall": min(regret), "signals": per})
    best = max(scan, key=lambda r: (r["learned_wins"], r["worst_shortfall"]))
    chosen_q = np.inf if best["q"] is None else best["q"]
    lines = [f"Model `{args.model}`; validation signals {', '.join(signals)}; background test rows "
             f"{len(rows['test'])}. ROC-AUC / eps_S at eps_B = 1e-2.", "",
             "| w | q | learned baselines beaten (of %d) | worst shortfall vs HT / count alone | "
             % len(signals) + " | ".join(signals) + " |",
             "|---|---|---|---|" + "---|" * len(signals)]
    for r in scan:
        mark = " **(chosen)**" if r is best else ""
        lines.append(f"| {r['w']:g} | {_q(r['q'])} | {r['learned_wins']}{mark} | "
                     f"{r['worst_shortfall']:+.3f} | "
                     + " | ".join(f"{a:.3f} / {e:.3f}" for a, e in r["signals"].values()) + " |")
    lines += ["", "References on the same events:", "",
              "| reference | " + " | ".join(signals) + " |", "|---|" + "---|" * len(signals)]
    for name in ("HT alone", "object count alone", *LEARNED):
        lines.append(f"| {name} | " + " | ".join(f"{refs[s][name][0]:.3f} / {refs[s][name][1]:.3f}"
                                                 for s in signals) + " |")
    agrees = best["w"] == DEFAULT_NLL_WEIGHT and chosen_q == DEFAULT_Q
    lines += ["", f"Chosen: w = {best['w']:g}, q = {_q(best['q'])}.",
              f"The package's default (eventlm.calibration): w = {DEFAULT_NLL_WEIGHT:g}, q = {_q(DEFAULT_Q)}"
              f" ({'the same' if agrees else 'DIFFERENT: update eventlm.calibration'})."]
    text = "\n".join(lines) + "\n"
    (out / "choose_default.md").write_text(text)
    (out / "choose_default.json").write_text(json.dumps({"scan": scan, "references": refs, "chosen": best},
                                                        indent=1))
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
