"""The baselines alone on every bundled signal, without a language model (quick; CPU).

Fits every baseline of :mod:`eventlm.analysis.baselines` (isolation forest, dense autoencoder, Deep
SVDD, the flow and the challenge's "Combined") on background rows ``[0, --train)`` of
data/background.csv.gz, calibrates "Combined" on rows ``[--train, --test-start)`` (held out from every
fit) and scores rows ``[--test-start, --test-end)`` and every signal. Prints the study core's table
per signal (:func:`eventlm.analysis.study.compare`: ROC-AUC, length-matched AUC, eff_S at eff_B =
1e-2/1e-3, max SIC with bootstrap errors; HT and the object count alone beside them) and writes every
event's scores to ``--scores`` (keys ``"<baseline>/<dataset>"``, ``"background_rows"``: the row indices
of the background test events in data/background.csv.gz).

``--model DIR``: the split of that model instead, as the validation study uses it (the first
``--test-end`` background events; fitted on its training split, at most 40,000 events as
:class:`~eventlm.analysis.validation.ValidationSettings` subsamples them, "Combined" calibrated on its
validation split, scored on its test split)::

    nice .venv/bin/python analysis/baselines.py --scores runs/baseline_scores.npz
    nice .venv/bin/python analysis/baselines.py --model runs/default --scores runs/baseline_scores_split.npz
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data"), help="directory of the bundled samples")
    p.add_argument("--train", type=int, default=35_000, help="background rows [0, N) the baselines are fitted on")
    p.add_argument("--test-start", type=int, default=40_000, help="first background test row (rows from --train "
                   "up to here calibrate Combined)")
    p.add_argument("--test-end", type=int, default=50_000, help="background test rows end here")
    p.add_argument("--model", help="use this model's train/validation/test split of the first --test-end events")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the torch baselines")
    p.add_argument("--flow-epochs", type=int, help="epochs of the flow (default: twice --epochs)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--n-bootstrap", type=int, default=30)
    p.add_argument("--scores", default="runs/baseline_scores.npz", help="where every event's scores go")
    p.add_argument("--markdown", help="also write the tables there")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from eventlm.analysis.baselines import NAMES, TrainSettings, fit_baselines
    from eventlm.analysis.features import fixed_features
    from eventlm.analysis.study import compare, comparison_table, references
    from eventlm.atomic import atomic_path
    from eventlm.demo import signal_names
    from eventlm.io import read_events

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Path(args.data)
    background = read_events(data / "background.csv.gz", max_events=args.test_end)
    if len(background) < args.test_end:
        raise SystemExit(f"data/background.csv.gz has {len(background)} events, fewer than --test-end {args.test_end}")
    x = fixed_features(background, 10)
    if args.model:
        from eventlm.analysis.validation import ValidationSettings
        from eventlm.modeldir import ModelDir

        md = ModelDir(args.model)
        train_rows, cal_rows, rows = (np.flatnonzero(md.in_split(background, split))
                                      for split in ("train", "validation", "test"))
        limit = ValidationSettings().baseline_events
        if len(train_rows) > limit:  # the validation study's seeded subsample
            rng = np.random.default_rng([args.seed, 11])
            train_rows = train_rows[np.sort(rng.choice(len(train_rows), limit, replace=False))]
    else:
        train_rows, cal_rows = np.arange(args.train), np.arange(args.train, args.test_start)
        rows = np.arange(args.test_start, args.test_end)
    torch_settings = TrainSettings(epochs=args.epochs, flow_epochs=args.flow_epochs)
    t0 = time.perf_counter()
    fitted = fit_baselines(x[train_rows], NAMES, seed=args.seed, settings=torch_settings,
                           x_calibration=x[cal_rows])
    print(f"fitted {', '.join(NAMES)} on {len(train_rows)} events in {time.perf_counter() - t0:.0f} s "
          f"(Combined calibrated on {len(cal_rows)}, {len(rows)} test events)", flush=True)
    flow = fitted["flow"]
    print(f"flow: best epoch {flow.best_epoch + 1} of {len(flow.validation_curve)}; validation NLL per epoch "
          + ", ".join(f"{v:.2f}" for v in flow.validation_curve), flush=True)

    datasets = {"background": background[rows]}
    datasets.update({n: read_events(data / f"{n}.csv.gz") for n in signal_names(data)})
    scores = {f"{m}/{ds}": b.score(fixed_features(ev, 10)) for m, b in fitted.items() for ds, ev in datasets.items()}
    refs = {ds: references(ev) for ds, ev in datasets.items()}
    w = {ds: ak.to_numpy(ev.weight).astype(np.float64) for ds, ev in datasets.items()}
    n_obj = {ds: refs[ds]["object count"] for ds in datasets}
    tables = []
    for name in datasets:
        if name == "background":
            continue
        methods = {m: (scores[f"{m}/background"], scores[f"{m}/{name}"]) for m in fitted}
        methods.update({r: (refs["background"][r], refs[name][r]) for r in refs["background"]})
        comp = compare(name, methods, n_obj["background"], n_obj[name], w["background"], w[name],
                       kinds={r: "reference" for r in refs["background"]}, n_bootstrap=args.n_bootstrap,
                       seed=args.seed)
        tables.append(comparison_table(comp, title=name))
    text = "\n".join(tables)
    print(text, flush=True)
    if args.markdown:
        Path(args.markdown).write_text(text)
    out = Path(args.scores)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, background_rows=rows, **scores)
    print(f"scores of {len(datasets)} datasets written to {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
