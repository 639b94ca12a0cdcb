"""Transfer: does the background-trained transformer make a classifier that needs fewer labelled events?

For each signal file and each number of labelled signal events (default 100, 300, 1000, 3000, all),
trains ``eventlm.finetune`` classifiers three ways on the same labelled events and seeds:

- ``fine-tuned``: the pre-trained backbone and the head, every weight trained;
- ``frozen``: the pre-trained backbone fixed, the head alone trained on its pooled features;
- ``scratch``: the same architecture with random weights, every weight trained.

Each run uses a fixed number of background events (a seeded subset of the model's *training* split),
and every classifier is evaluated on one fixed held-out set: background events of the model's test
split and signal events kept out of every training set. The AUC is reported as mean and standard
deviation over the seeds::

    python analysis/transfer.py --model runs/multitask_causal --signals data/gluino_1000.csv.gz \\
        data/tttt_H500.csv.gz --figures docs/figures --out runs/transfer
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

METHODS = {"fine-tuned": dict(freeze=False, scratch=False), "frozen": dict(freeze=True, scratch=False),
           "scratch": dict(freeze=False, scratch=True)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/multitask_causal", help="pre-trained model directory")
    p.add_argument("--background", nargs="+", default=[str(ROOT / "data/background.csv.gz")])
    p.add_argument("--signals", nargs="+", default=[str(ROOT / "data/gluino_1000.csv.gz"),
                                                    str(ROOT / "data/tttt_H500.csv.gz")])
    p.add_argument("--sizes", default="100,300,1000,3000,all", help="labelled signal events per run")
    p.add_argument("--seeds", type=int, default=3, help="seeds per size below --many-above")
    p.add_argument("--seeds-large", type=int, default=2, help="seeds per size at or above --many-above")
    p.add_argument("--many-above", type=int, default=3000)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-background", type=int, default=4000, help="background events per training run")
    p.add_argument("--test-signal", type=int, default=1500, help="held-out signal events per signal")
    p.add_argument("--test-background", type=int, default=4000, help="held-out background events (test split)")
    p.add_argument("--seed", type=int, default=11, help="seed of the held-out selection")
    p.add_argument("--out", default="runs/transfer")
    p.add_argument("--figures", help="write the figures here (default: --out)")
    p.add_argument("--prefix", default="multitask_transfer_")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    torch.set_num_threads(1)
    from eventlm.finetune import finetune
    from eventlm.plotting.multitask import plot_transfer
    from eventlm.io import as_events
    from eventlm.modeldir import ModelDir

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(args.figures or out)
    figures.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    md = ModelDir(args.model)
    background = as_events(args.background)
    bkg_train = md.select(background, "train")
    bkg_test = md.select(background, "test")
    bkg_test = bkg_test[np.sort(rng.choice(len(bkg_test), min(args.test_background, len(bkg_test)), replace=False))]
    methods = args.methods.split(",")

    jobs = []
    signals = {}
    for path in args.signals:
        sig = as_events(path)
        name = Path(path).name.split(".")[0]
        test = np.zeros(len(sig), dtype=bool)
        test[rng.choice(len(sig), min(args.test_signal, len(sig) // 2), replace=False)] = True
        signals[name] = (sig[~test], sig[test])
        pool = int((~test).sum())
        sizes = sorted({pool if s == "all" else min(int(s), pool) for s in args.sizes.split(",")})
        for n in sizes:
            n_seeds = args.seeds if n < args.many_above else args.seeds_large
            for seed in range(n_seeds):
                for method in methods:
                    jobs.append((name, n, seed, method))
    rows = []
    bar = tqdm(total=len(jobs), desc="transfer", unit="run", dynamic_ncols=True)
    for name, n, seed, method in jobs:
        train_sig, test_sig = signals[name]
        t1 = time.perf_counter()
        result = finetune(args.model, train_sig, bkg_train, epochs=args.epochs, seed=seed, max_signal=n,
                          max_background=args.train_background, progress=False, **METHODS[method])
        test_events = ak.concatenate([bkg_test, test_sig])
        y = np.concatenate([np.zeros(len(bkg_test)), np.ones(len(test_sig))])
        auc = float(roc_auc_score(y, result.predict(test_events)))
        rows.append({"signal": name, "n_signal": n, "seed": seed, "method": method, "auc": auc,
                     "best_epoch": result.info["best_epoch"], "seconds": time.perf_counter() - t1})
        bar.set_postfix(signal=name, n=n, method=method, auc=f"{auc:.3f}", refresh=False)
        bar.update()
        (out / "runs.json").write_text(json.dumps(rows, indent=1))
    bar.close()

    summary = []
    for name in signals:
        for method in methods:
            for n in sorted({r["n_signal"] for r in rows if r["signal"] == name}):
                aucs = [r["auc"] for r in rows if r["signal"] == name and r["method"] == method and r["n_signal"] == n]
                summary.append({"signal": name, "method": method, "n_signal": n, "auc_mean": float(np.mean(aucs)),
                                "auc_std": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0,
                                "n_seeds": len(aucs)})
        plot_transfer([s for s in summary if s["signal"] == name], figures / f"{args.prefix}{name}.png", signal=name,
                      note=f"{name}: {len(bkg_test)} bkg + {len(signals[name][1])} sig test events")
    seconds = time.perf_counter() - t0
    (out / "transfer.json").write_text(json.dumps({"summary": summary, "runs": rows, "seconds": seconds,
                                                   "settings": vars(args)}, indent=1))
    print("| signal | labelled signal | " + " | ".join(methods) + " |")
    print("|---|---:|" + "---:|" * len(methods))
    for name in signals:
        for n in sorted({s["n_signal"] for s in summary if s["signal"] == name}):
            cells = []
            for method in methods:
                s = next(s for s in summary if s["signal"] == name and s["method"] == method and s["n_signal"] == n)
                cells.append(f"{s['auc_mean']:.3f} ± {s['auc_std']:.3f} ({s['n_seeds']})")
            print(f"| {name} | {n} | " + " | ".join(cells) + " |")
    print(f"total {seconds:.0f} s for {len(rows)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
