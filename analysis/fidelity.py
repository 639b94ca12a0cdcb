"""Fidelity of generated events: histograms against held-out real background and a two-sample test.

Generates N events with ``eventlm.sample`` from a causal model, compares them with the model's
held-out test split of the real background (``split.json``), draws ATLAS-style histograms with ratio
panels (object multiplicity per kind, leading-jet pT, HT, MET, |dphi| of the two leading jets) and
runs a two-sample classifier test (on all generated events, and on generated events that pass the
real sample's selection, HT >= 300 GeV, >= 4 jets, >= 1 b-jet): a HistGradientBoostingClassifier
separating generated from real events on fixed-length features (10 leading objects as kind one-hot, log pT, eta, sin/cos phi; MET;
multiplicities, HT), AUC from 5-fold stratified cross-validation (mean and standard deviation over the
folds), with permutation importances of the feature groups. Two references run the same test:
real vs real (two halves of the test split: the AUC of identical distributions) and real vs
"re-decoded real" (the real test events tokenized and decoded again by eventlm.sample: what the
tokenization and the within-bin value draws alone cost, without the model)::

    python analysis/fidelity.py --model runs/multitask_causal --background data/background.csv.gz \\
        --figures docs/figures --out runs/fidelity
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from eventlm.events import Kind  # noqa: E402

KINDS = {"jets": Kind.JET, "bjets": Kind.BJET, "electrons": Kind.ELECTRON, "muons": Kind.MUON,
         "photons": Kind.PHOTON}


def observables(events: ak.Array) -> dict[str, np.ndarray]:
    """Per-event quantities of the comparison (jets include b-jets for HT, leading jet and dphi)."""
    p = ak.to_packed(events.particles)
    out = {f"n_{name}": ak.to_numpy(ak.sum(p.kind == int(k), axis=1)).astype(float) for name, k in KINDS.items()}
    jets = p[(p.kind == int(Kind.JET)) | (p.kind == int(Kind.BJET))]
    jets = jets[ak.argsort(jets.pt, axis=1, ascending=False)]
    out["lead_jet_pt"] = ak.to_numpy(ak.fill_none(ak.firsts(jets.pt), 0.0)).astype(float)
    out["ht"] = ak.to_numpy(ak.sum(jets.pt, axis=1)).astype(float)
    out["met"] = ak.to_numpy(events.met).astype(float)
    two = ak.pad_none(jets.phi[:, :2], 2, axis=1)
    dphi = np.abs(ak.to_numpy(ak.fill_none(two[:, 0] - two[:, 1], np.nan)).astype(float))
    out["dphi_jj"] = np.where(dphi > np.pi, 2 * np.pi - dphi, dphi)  # NaN: fewer than two jets
    return out


#: name -> (x label, bins, log y)
FIGURES = {
    "n_jets": ("Number of light jets", np.arange(-0.5, 14.5), False),
    "n_bjets": ("Number of b-jets", np.arange(-0.5, 7.5), False),
    "n_electrons": ("Number of electrons", np.arange(-0.5, 4.5), True),
    "n_muons": ("Number of muons", np.arange(-0.5, 4.5), True),
    "n_photons": ("Number of photons", np.arange(-0.5, 4.5), True),
    "lead_jet_pt": (r"Leading jet $p_{\mathrm{T}}$ [GeV]", np.linspace(0, 1000, 41), True),
    "ht": (r"$H_{\mathrm{T}}$ [GeV]", np.linspace(0, 2500, 51), True),
    "met": (r"$E_{\mathrm{T}}^{\mathrm{miss}}$ [GeV]", np.linspace(0, 600, 41), True),
    "dphi_jj": (r"$|\Delta\phi(j_1, j_2)|$", np.linspace(0, np.pi, 26), False),
}


def passes_selection(events: ak.Array) -> np.ndarray:
    """The bundled samples' selection (data/README.md): HT >= 300 GeV, >= 4 jets (b-jets count), >= 1 b-jet."""
    obs = observables(events)
    return (obs["ht"] >= 300.0) & (obs["n_jets"] + obs["n_bjets"] >= 4) & (obs["n_bjets"] >= 1)


def features(events: ak.Array) -> tuple[np.ndarray, list[str]]:
    from eventlm.analysis.features import fixed_features

    x = fixed_features(events, n_objects=10)
    obj_names = ["kind"] * 5 + ["log_pt", "eta", "sin_phi", "cos_phi"]
    names = [f"obj{i}_{n}" for i in range(10) for n in obj_names] + ["log_met", "sin_met_phi", "cos_met_phi"]
    obs = observables(events)
    extra = ["n_jets", "n_bjets", "n_electrons", "n_muons", "n_photons", "ht", "lead_jet_pt", "dphi_jj"]
    x = np.concatenate([x, np.stack([np.nan_to_num(obs[k], nan=-1.0) for k in extra], axis=1)], axis=1)
    return x.astype(np.float32), names + extra


def two_sample_auc(a: ak.Array, b: ak.Array, seed: int, importances: bool = False) -> dict:
    """5-fold CV AUC of a gradient-boosted classifier separating ``b`` (label 1) from ``a`` (label 0)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    xa, names = features(a)
    xb, _ = features(b)
    x = np.concatenate([xa, xb])
    y = np.concatenate([np.zeros(len(xa)), np.ones(len(xb))])
    aucs, imp = [], None
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    for k, (tr, te) in enumerate(folds.split(x, y)):
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed + k)
        clf.fit(x[tr], y[tr])
        aucs.append(roc_auc_score(y[te], clf.predict_proba(x[te])[:, 1]))
        if importances and k == 0:
            groups = {}
            for j, n in enumerate(names):  # group an object's columns: obj3_kind x5 -> "obj3 kind"
                groups.setdefault(n, []).append(j)
            imp = _group_importance(clf, x[te], y[te], groups, seed)
    out = {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs)), "fold_aucs": [float(v) for v in aucs],
           "n": [len(xa), len(xb)]}
    if imp is not None:
        out["importance"] = imp
    return out


def _group_importance(clf, x, y, groups: dict, seed: int, repeats: int = 3) -> dict:
    """Drop in AUC when one feature group's columns are permuted together (mean of ``repeats``)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    base = roc_auc_score(y, clf.predict_proba(x)[:, 1])
    out = {}
    for name, cols in groups.items():
        drops = []
        for _ in range(repeats):
            xp = x.copy()
            perm = rng.permutation(len(x))
            xp[:, cols] = x[perm][:, cols]
            drops.append(base - roc_auc_score(y, clf.predict_proba(xp)[:, 1]))
        out[name] = float(np.mean(drops))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/multitask_causal", help="causal model directory")
    p.add_argument("--background", nargs="+", default=[str(ROOT / "data/background.csv.gz")],
                   help="the background the model was trained on (its test split is the real sample)")
    p.add_argument("--events", type=int, default=0, help="generated events (default: as many as real ones)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--out", default="runs/fidelity", help="results directory (fidelity.json, events)")
    p.add_argument("--figures", help="write the figures here (default: --out)")
    p.add_argument("--prefix", default="multitask_fidelity_")
    p.add_argument("--plots-only", action="store_true", help="draw the figures, skip the two-sample tests")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("fidelity")
    import torch

    torch.set_num_threads(1)
    from eventlm.io import write_events
    from eventlm.plotting.multitask import plot_ratio
    from eventlm.sample import (
        SAMPLING_FILE,
        SamplingTable,
        decode_tokens,
        load_causal_model,
        prepare_sampling,
        sample_events,
    )
    from eventlm.tokenize.particles import tokens_to_flat
    from eventlm.io import as_events
    from eventlm.modeldir import ModelDir

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures or out)
    figures.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model)
    background = as_events(args.background)
    real = ModelDir(model_dir).select(background, "test")
    log.info("real: %d events of the model's test split", len(real))
    _, tokenizer, _ = load_causal_model(model_dir)
    if not (model_dir / SAMPLING_FILE).exists():
        prepare_sampling(model_dir, background, tokenizer=tokenizer)
    n_gen = args.events or len(real)
    t1 = time.perf_counter()
    gen = sample_events(model_dir, n_gen, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                        progress=True)
    sample_seconds = time.perf_counter() - t1
    write_events(gen, out / "generated.parquet")
    # the real events passed the selection; generated ones are compared before and after it (a second,
    # larger draw with another seed supplies N selected events)
    passing = passes_selection(gen)
    efficiency = float(passing.mean())
    extra = sample_events(model_dir, int(n_gen / max(efficiency, 0.05) * 1.1), seed=args.seed + 1000,
                          temperature=args.temperature, top_k=args.top_k, progress=True)
    selected = extra[passes_selection(extra)][:n_gen]
    log.info("%.1f %% of generated events pass the selection; %d selected generated events", 100 * efficiency,
             len(selected))
    # the reference of the decoding alone: real test events tokenized, then decoded like generated ones
    table = SamplingTable.load(model_dir / SAMPLING_FILE, tokenizer)
    redecoded = decode_tokens(*tokens_to_flat(tokenizer.encode(real)), tokenizer, table, seed=args.seed)

    obs_real, obs_gen, obs_sel = observables(real), observables(gen), observables(selected)
    note = f"{model_dir.name}, T = {args.temperature:g}" + (f", top-k {args.top_k}" if args.top_k else "")
    paths = []
    for name, (xlabel, bins, logy) in FIGURES.items():
        r, g = obs_real[name], obs_gen[name]
        path = figures / f"{args.prefix}{name}.png"
        sel = obs_sel[name]
        plot_ratio({"Real (test split)": r[np.isfinite(r)], "Generated": g[np.isfinite(g)],
                    "Generated, selected": sel[np.isfinite(sel)]}, bins, path, xlabel=xlabel, logy=logy, note=note)
        paths.append(str(path))
    summary = {name: {"real_mean": float(np.nanmean(obs_real[name])),
                      "generated_mean": float(np.nanmean(obs_gen[name])),
                      "selected_mean": float(np.nanmean(obs_sel[name]))}
               for name in FIGURES}

    if args.plots_only:
        return 0
    half = np.random.default_rng(args.seed).permutation(len(real))
    real_a, real_b = real[np.sort(half[: len(real) // 2])], real[np.sort(half[len(real) // 2:])]
    results = {
        "model": str(model_dir),
        "n_real": len(real),
        "n_generated": n_gen,
        "seed": args.seed,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "sampling_seconds": sample_seconds,
        "events_per_s": n_gen / sample_seconds,
        "selection_efficiency": efficiency,
        "generated_vs_real": two_sample_auc(real, gen, args.seed, importances=True),
        "selected_vs_real": two_sample_auc(real, selected, args.seed, importances=True),
        "redecoded_vs_real": two_sample_auc(real, redecoded, args.seed, importances=True),
        "real_vs_real": two_sample_auc(real_a, real_b, args.seed),
        "means": summary,
        "figures": paths,
        "seconds": time.perf_counter() - t0,
    }
    (out / "fidelity.json").write_text(json.dumps(results, indent=1))
    print(f"selection efficiency of generated events: {efficiency:.4f}")
    for key in ("generated_vs_real", "selected_vs_real", "redecoded_vs_real", "real_vs_real"):
        r = results[key]
        top = list(r.get("importance", {}).items())[:6]
        print(f"{key}: AUC {r['auc']:.4f} +- {r['auc_std']:.4f}  top features: "
              + ", ".join(f"{k} {v:.3f}" for k, v in top))
    for name, s in summary.items():
        print(f"{name}: real {s['real_mean']:.3f}  generated {s['generated_mean']:.3f}  "
              f"selected {s['selected_mean']:.3f}")
    print(f"sampling {n_gen} events: {sample_seconds:.0f} s ({n_gen / sample_seconds:.0f} events/s); "
          f"total {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
