"""The scaling study of docs/results.md: detection against the number of training events and the model size.

Trains the default model on the first 10k, 30k, 100k and 300k events of the generated background pool
(``make scaling-data``: independent parts, each data/'s background mixture with its own seed) and three
model sizes (n_layer x n_embd 1x32, 2x64, 4x128) on 100k, then evaluates every model on the same test
set, the bundled data/background.csv.gz and the seven bundled signals (see
:mod:`eventlm.analysis.scaling`). Resumable: trained model directories and their evaluations are
reused. Writes ``OUT/scaling.json``, ``OUT/scaling.md``, ``OUT/scaling_events.png`` and
``OUT/scaling_model_size.png``::

    make scaling-data
    .venv/bin/python analysis/scaling.py --pool generated/scaling --out runs/scaling --figures docs/figures

``--points NAME,...`` trains and evaluates only those points (e.g. two processes side by side) and
writes no report; ``--quick``: tiny settings on the bundled fixture (a smoke test, seconds).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIGNALS = ("gluino_1000", "tttt_H500", "zprime_1500", "wprime_1500", "stop_800", "ttbar_S200_inv", "A3_ttbar_750")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(float(x)) for x in text.split(",") if x)


def _models(text: str) -> tuple[tuple[int, int], ...]:
    return tuple(tuple(int(v) for v in m.lower().split("x")) for m in text.split(",") if m)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", default="generated/scaling",
                   help="a folder of parts (part*/background.csv.gz, concatenated in order) or one event file")
    p.add_argument("--data", default=str(ROOT / "data"), help="the test set: background.csv.gz and the signals")
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--sizes", type=_ints, default=(3_000, 10_000, 30_000, 50_000, 100_000, 200_000, 300_000),
                   help="training events")
    p.add_argument("--models", type=_models, default=((1, 32), (2, 64), (4, 128)), help="n_layer x n_embd, e.g. 1x32,4x128")
    p.add_argument("--model-events", type=int, default=30_000, help="training events of the model-size axis")
    p.add_argument("--skip-model", action="append", default=[], metavar="LxE:REASON",
                   help="leave a model size out of the model axis, with the reason the report prints")
    p.add_argument("--epochs", type=int, default=None, help="override the default's epochs")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--n-bootstrap", type=int, default=50)
    p.add_argument("--points", default="", help="comma-separated point names (n<N>_L<l>x<e>): only these, no report")
    p.add_argument("--figures", help="also copy the figures here (docs/figures)")
    p.add_argument("--quick", action="store_true", help="tiny settings on data/fixture.csv.gz: a smoke test")
    return p.parse_args(argv)


def read_pool(pool: Path, max_events: int | None = None):
    """The pool's events: ``pool`` itself (a file) or its parts ``part*/background.csv.gz`` in order."""
    import awkward as ak

    from eventlm.io import read_events

    if pool.is_file():
        return read_events(pool, max_events=max_events), str(pool)
    parts = sorted(pool.glob("part*/background.csv.gz"), key=lambda f: int(f.parent.name.removeprefix("part")))
    if not parts:
        raise SystemExit(f"{pool}: no part*/background.csv.gz (make scaling-data writes them)")
    events, n = [], 0
    for path in parts:
        if max_events is not None and n >= max_events:
            break
        events.append(read_events(path, max_events=None if max_events is None else max_events - n))
        n += len(events[-1])
    return ak.concatenate(events), " + ".join(str(p) for p in parts[: len(events)])


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("eventlm").setLevel(logging.WARNING)
    log = logging.getLogger("eventlm.analysis.scaling")
    log.setLevel(logging.INFO)
    from eventlm.analysis.scaling import ScalingSettings, data_axis, model_axis, run_scaling
    from eventlm.io import read_events
    from eventlm.plotting.scaling import plot_scaling

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signals = SIGNALS
    test_background = signal_events = None
    if args.quick:  # the fixture's background (its first 400 rows) as the pool; a slice of data/ as the test set
        from eventlm.generate.bundle import BACKGROUNDS

        fixture = read_events(data / "fixture.csv.gz")
        pool = fixture[[p in BACKGROUNDS for p in fixture.process.to_list()]]
        pool_note = f"{data / 'fixture.csv.gz'} (its background)"
        settings = ScalingSettings(sizes=(100, 200), models=((1, 16),), model_events=100, seed=args.seed,
                                   n_bootstrap=5, epochs=1, validation_fraction=0.25, min_validation=50)
        signals, test_background, signal_events = ("gluino_1000", "tttt_H500"), 600, 200
    else:
        settings = ScalingSettings(sizes=args.sizes, models=args.models, model_events=args.model_events,
                                   seed=args.seed, n_bootstrap=args.n_bootstrap, epochs=args.epochs,
                                   skipped={tuple(int(v) for v in s.split(":", 1)[0].split("x")): s.split(":", 1)[1]
                                            for s in args.skip_model})
        need = max(n + settings.validation_events(n) for n in (*settings.sizes, settings.model_events))
        pool, pool_note = read_pool(Path(args.pool), max_events=need)
    background = read_events(data / "background.csv.gz", max_events=test_background)
    test_signals = {s: read_events(data / f"{s}.csv.gz", max_events=signal_events) for s in signals}
    print(f"pool: {len(pool)} events ({pool_note}); test set: {len(background)} background events, "
          f"{', '.join(f'{s} {len(v)}' for s, v in test_signals.items())}", flush=True)
    start = time.perf_counter()
    only = set(args.points.split(",")) if args.points else None
    result = run_scaling(pool, background, test_signals, out, settings=settings, only=only, pool_note=pool_note)
    print(f"{len(result['points'])} points in {time.perf_counter() - start:.0f} s", flush=True)
    if only is not None:
        return 0
    figures = []
    if len(data_axis(result)) >= 2:
        figures.append(plot_scaling(data_axis(result), result["ht"], out / "scaling_events.png", x="n_train",
                                    xlabel="Training events (default model)"))
    if len(model_axis(result)) >= 2:
        figures.append(plot_scaling(model_axis(result), result["ht"], out / "scaling_model_size.png",
                                    x="n_parameters",
                                    xlabel=f"Parameters ({result['settings']['model_events']:,} training events)",
                                    point_labels=True))
    print(result["markdown"], flush=True)
    if args.figures:
        for f in figures:
            shutil.copy(f, Path(args.figures) / f.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
