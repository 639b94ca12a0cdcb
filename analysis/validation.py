"""The validation study of docs/results.md: the default score against the baselines on every signal.

Trains the default model (or takes ``--model``) on the bundled background and runs
:func:`eventlm.analysis.validation.run_validation` on every signal in ``data/`` (see its docstring for
what is compared and how). ``--seeds`` trains the default with more seeds for the seed spread of its
AUC. Writes ``OUT/validation.md``, ``OUT/validation.json`` and a ROC figure per signal::

    .venv/bin/python analysis/validation.py --out runs/validation --seeds 2,3 --figures docs/figures
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOT_SIGNALS = ("background", "fixture")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/validation")
    p.add_argument("--data", default=str(ROOT / "data"))
    p.add_argument("--model", help="a trained model directory (default: train the default model)")
    p.add_argument("--signals", help="comma-separated signal names (default: every signal in --data)")
    p.add_argument("--background", type=int, default=50_000, help="background events to train on")
    p.add_argument("--signal-events", type=int, default=None, help="events per signal (default: all)")
    p.add_argument("--epochs", type=int, default=None, help="override the default training epochs")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--seeds", default="", help="more seeds for the default model's seed spread, e.g. 2,3")
    p.add_argument("--baseline-epochs", type=int, default=20)
    p.add_argument("--baseline-events", type=int, default=40_000)
    p.add_argument("--n-bootstrap", type=int, default=100)
    p.add_argument("--figures", help="also copy the figures here (docs/figures)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test")
    return p.parse_args(argv)


def signal_names(data: Path) -> list[str]:
    names = sorted(p.name[: -len(".csv.gz")] for p in data.glob("*.csv.gz"))
    return [n for n in names if n not in NOT_SIGNALS]


def train_default(background, out: Path, *, seed: int, epochs: int | None) -> Path:
    from eventlm.config import RunConfig
    from eventlm.apply import calibrate
    from eventlm.train import train

    if (out / "best.pt").exists() and (out / "calibration.json").exists():
        print(f"  reusing {out}", flush=True)
        return out
    config = RunConfig(seed=seed)
    if epochs is not None:
        config = config.replace(train={"epochs": epochs})
    result = train(config, background, out, progress=True)
    calibrate(out, background)
    print(f"  trained {out} in {result.seconds:.0f} s ({result.epochs_run} epochs)", flush=True)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from eventlm.analysis.validation import ValidationSettings, run_validation
    from eventlm.io import read_events

    out = Path(args.out)
    data = Path(args.data)
    if args.quick:
        args.background, args.signal_events, args.epochs = 3000, 400, 1
        args.baseline_epochs, args.baseline_events, args.n_bootstrap = 2, 2000, 5
    names = args.signals.split(",") if args.signals else signal_names(data)
    print(f"signals: {', '.join(names)}", flush=True)
    background = read_events(data / "background.csv.gz", max_events=args.background)
    signals = {n: read_events(data / f"{n}.csv.gz", max_events=args.signal_events) for n in names}
    model = Path(args.model) if args.model else train_default(background, out / "model", seed=args.seed,
                                                                epochs=args.epochs)
    seeds = [train_default(background, out / f"model_seed{s}", seed=int(s), epochs=args.epochs)
             for s in args.seeds.split(",") if s]
    settings = ValidationSettings(baseline_epochs=args.baseline_epochs, baseline_events=args.baseline_events,
                                  n_bootstrap=args.n_bootstrap, seed=args.seed)
    result = run_validation(model, background, signals, out, settings=settings, seed_models=seeds)
    print(result["markdown"], flush=True)
    if args.figures:
        for f in out.glob("validation_roc_*.png"):
            shutil.copy(f, Path(args.figures) / f"analysis_{f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
