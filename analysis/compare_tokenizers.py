"""Compare tokenizers (look-up-table variants, VQ-VAE, graph VQ) and objectives (masked, causal).

Each variant is trained on the same background split (same seed, same events), scores the same
background test events and every signal in data/; the baselines are fitted once on the same training
split. The figures of merit come from the study core (:func:`eventlm.analysis.study.compare`: ROC-AUC,
length-matched AUC, eff_S at eff_B = 1e-2/1e-3, max SIC, bootstrap errors, the object count and HT
alone as references), for both event scores of each variant (the default ``anomaly_score`` and the
mean per-token NLL ``anomaly_score_mean``). Prints a Markdown table and writes it with ROC/SIC figures (one set per score) and every event's
scores and object multiplicity (``scores.npz``, keys ``"<method>|<dataset>"``) to --out::

    .venv/bin/python analysis/compare_tokenizers.py --out runs/compare                 # full settings
    .venv/bin/python analysis/compare_tokenizers.py --out runs/compare --background 20000 --epochs 2
    .venv/bin/python analysis/compare_tokenizers.py --variants lut_tail_causal,lut_paper --quick

``--figures DIR`` also copies the figures there (docs/figures/analysis_compare_*.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: name -> (tokenizer kind, tokenizer params, objective)
VARIANTS: dict[str, tuple[str, dict, str]] = {
    "lut_tail_causal": ("lut", {"preset": "tail"}, "causal"),  # the default
    "lut_tail_abs_phi_causal": ("lut", {"preset": "tail", "phi_reference": "absolute"}, "causal"),
    "lut_tail_masked": ("lut", {"preset": "tail"}, "masked"),
    "vqvae_causal": ("vqvae", {}, "causal"),
    "lut_paper": ("lut", {"preset": "paper"}, "masked"),
    "lut_no_met": ("lut", {"preset": "no_met"}, "masked"),
    "lut_coarse": ("lut", {"preset": "coarse"}, "masked"),
    "lut_fine": ("lut", {"preset": "fine"}, "masked"),
    "vqvae": ("vqvae", {}, "masked"),
    "graph_vq": ("graph", {}, "masked"),
    "lut_paper_causal": ("lut", {"preset": "paper"}, "causal"),
}
#: the two event scores of every variant: (column, suffix of the method's name)
SCORES = (("anomaly_score", ""), ("anomaly_score_mean", " (mean)"))
DEFAULT_VARIANTS = "lut_tail_causal,lut_tail_abs_phi_causal,lut_tail_masked,lut_paper,lut_paper_causal,vqvae_causal"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/compare", help="output directory")
    p.add_argument("--data", default=str(ROOT / "data"), help="directory of the bundled samples")
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated subset of {list(VARIANTS)}")
    p.add_argument("--signals", help="comma-separated signal names (default: every signal in --data)")
    p.add_argument("--background", type=int, default=None, help="background events read (default: all)")
    p.add_argument("--signal", type=int, default=None, help="events per signal (default: all)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per variant")
    p.add_argument("--n-bootstrap", type=int, default=50)
    p.add_argument("--baselines", default="isolation_forest,autoencoder,deep_svdd,flow,combined")
    p.add_argument("--baseline-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    p.add_argument("--figures", help="also copy the figures to this directory")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from eventlm.analysis.baselines import LABELS, TrainSettings, fit_baselines
    from eventlm.analysis.features import fixed_features
    from eventlm.metrics import roc_curve
    from eventlm.analysis.inputs import rescale_to_full
    from eventlm.config import RunConfig
    from eventlm.io import read_events
    from eventlm.plotting.analysis import label_for, plot_roc, plot_sic
    from eventlm.modeldir import ModelDir
    from eventlm.train import train

    if args.quick:
        args.background, args.signal, args.epochs, args.n_bootstrap, args.baseline_epochs = 3000, 300, 1, 5, 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        print(f"unknown variants {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    data = Path(args.data)
    t_all = time.perf_counter()
    background = read_events(data / "background.csv.gz", max_events=args.background)
    from eventlm.demo import signal_names

    signal_list = args.signals.split(",") if args.signals else signal_names(data)
    signals = {s: read_events(data / f"{s}.csv.gz", max_events=args.signal) for s in signal_list}
    scores: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, dict] = {}
    test = train_events = calibration_events = None
    for name in names:
        kind, params, objective = VARIANTS[name]
        config = RunConfig(seed=args.seed).replace(
            tokenizer={"kind": kind, "params": params}, train={"objective": objective, "epochs": args.epochs}
        )
        t0 = time.perf_counter()
        print(f"== {name}: {kind} {params} {objective}, {args.epochs} epoch(s)", flush=True)
        result = train(config, background, out / name, progress=True)
        t_train = time.perf_counter() - t0
        if test is None:  # every variant has the same split (same seed, same events)
            md = ModelDir(out / name)
            test = rescale_to_full(md.select(background, "test"), background)
            train_events = md.select(background, "train")
            calibration_events = md.select(background, "validation")  # calibrates the "combined" baseline
        scorer = ModelDir(out / name).open_scorer()
        t0 = time.perf_counter()
        for column, suffix in SCORES:
            scores[name + suffix] = {}
        for dataset, ev in {"background": test, **signals}.items():
            scored = scorer.score(ev)
            for column, suffix in SCORES:
                scores[name + suffix][dataset] = np.asarray(scored[column], dtype=np.float64)
        info[name] = {"kind": kind, "params": params, "objective": objective, "epochs_run": result.epochs_run,
                      "best_val_loss": result.best_val_loss, "train_s": t_train,
                      "score_s": time.perf_counter() - t0, "vocab": scorer.tokenizer.vocab_size}
    baseline_names = [b for b in args.baselines.split(",") if b]
    if baseline_names:
        print(f"== baselines: {baseline_names}", flush=True)
        n_train = min(len(train_events), 40_000)
        rng = np.random.default_rng([args.seed, 11])
        sub = train_events[np.sort(rng.choice(len(train_events), n_train, replace=False))]
        fitted = fit_baselines(fixed_features(sub), baseline_names, seed=args.seed,
                               settings=TrainSettings(epochs=args.baseline_epochs),
                               x_calibration=fixed_features(calibration_events))
        feats = {"background": fixed_features(test), **{s: fixed_features(ev) for s, ev in signals.items()}}
        for b, model in fitted.items():
            scores[b] = {k: model.score(x) for k, x in feats.items()}
            info[b] = {"kind": "baseline"}
    from eventlm.analysis.study import compare, comparison_table, references

    w_b = ak.to_numpy(test.weight)
    results: dict[str, dict] = {}
    label = label_for("ATLAS", "Internal", 13.0, None)
    lines = []
    refs = {"background": references(test), **{s: references(ev) for s, ev in signals.items()}}
    for s, ev in signals.items():
        w_s = ak.to_numpy(ev.weight)
        methods = {LABELS.get(m, m): (by_ds["background"], by_ds[s]) for m, by_ds in scores.items()}
        kinds = {}
        for ref in refs["background"]:
            methods[ref] = (refs["background"][ref], refs[s][ref])
            kinds[ref] = "reference"
        comp = compare(s, methods, refs["background"]["object count"], refs[s]["object count"], w_b, w_s,
                       kinds=kinds, n_bootstrap=args.n_bootstrap, seed=args.seed)
        results[s] = comp.to_dict()
        lines.append(comparison_table(comp))
        curves = {k: roc_curve(v[0], v[1], w_b, w_s) for k, v in methods.items()}
        aucs = {k: f"AUC = {r.metrics.values['auc']:.3f}" for k, r in comp.methods.items()}
        # one figure per score, the baselines and references in both
        for column, suffix in SCORES:
            keep = [LABELS.get(m, m) for m in scores
                    if info.get(m, {}).get("kind") == "baseline" or m.endswith(" (mean)") == bool(suffix)]
            keep += list(refs["background"])
            tag = "_mean" if suffix else ""
            plot_roc({k: curves[k] for k in keep}, out / f"analysis_compare_roc{tag}_{s}.png",
                     aucs={k: aucs[k] for k in keep}, label=label, title=f"{s}, {column}")
            plot_sic({k: curves[k] for k in keep}, out / f"analysis_compare_sic{tag}_{s}.png", label=label,
                     title=f"{s}, {column}")
    settings = (f"Settings: {len(background)} background events read ({len(test)} test), "
                f"{', '.join(f'{len(ev)} {s}' for s, ev in signals.items())}; {args.epochs} epoch(s) per variant; "
                f"seed {args.seed}; {args.n_bootstrap} bootstrap resamplings; total "
                f"{time.perf_counter() - t_all:.0f} s. Each variant is listed twice: its default event score "
                "(`anomaly_score`) and its mean per-token NLL (`anomaly_score_mean`, \"(mean)\").")
    table = "\n".join([settings, "", *lines])
    # every event's scores and object multiplicity, for studies of the scores beyond this table
    n_objects = {"background": ak.to_numpy(ak.num(test.particles)),
                 **{s: ak.to_numpy(ak.num(ev.particles)) for s, ev in signals.items()}}
    columns = {f"{m}|{ds}": v for m, by_ds in scores.items() for ds, v in by_ds.items()}
    np.savez_compressed(out / "scores.npz", **columns, **{f"n_objects|{ds}": n for ds, n in n_objects.items()})
    plot_multiplicity(scores, n_objects, out / "analysis_compare_score_vs_n.png", label)
    (out / "compare.md").write_text(table + "\n")
    (out / "compare.json").write_text(json.dumps({"settings": vars(args), "variants": info, "metrics": results},
                                                 indent=2, default=str))
    print(table)
    if args.figures:
        dest = Path(args.figures)
        dest.mkdir(parents=True, exist_ok=True)
        for png in out.glob("analysis_compare_*.png"):
            shutil.copy(png, dest / png.name)
    return 0


#: the variants drawn against multiplicity (where present): one per tokenizer kind
MULTIPLICITY_VARIANTS = ("lut_tail_causal", "lut_paper", "vqvae_causal")


def plot_multiplicity(scores: dict, n_objects: dict, path: Path, label) -> None:
    """The mean-NLL score per object multiplicity, background and signals, one tokenizer per colour:
    whether a variant's score separates the signals at a fixed multiplicity, or only through it."""
    from eventlm.plotting.analysis import plot_score_vs_multiplicity, score_by_multiplicity

    names = [v for v in MULTIPLICITY_VARIANTS if v in scores] or [m for m in scores if "(mean)" not in m][:3]
    curves = {m: {ds: score_by_multiplicity(n_objects[ds], scores[m][ds]) for ds in n_objects if ds in scores[m]}
              for m in names}
    plot_score_vs_multiplicity(curves, path, label=label, ylabel="mean anomaly_score [nats]")


if __name__ == "__main__":
    sys.exit(main())
