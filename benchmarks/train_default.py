"""Wall time of training the default model: ``train(RunConfig(), 50k events)`` end to end, as a user runs it.

Everything ``eventlm train`` does is timed: the split, fitting the tokenizer, tokenizing, every epoch
with its validation pass, the checkpoints and the calibration on the validation split. The baseline
in the same run is the paper's configuration (masked objective, ``paper`` table) on the same events,
so the ratio says what the new default costs. Target: under 5 minutes for 50k events on the 2-core CPU
machine (issue 10).

    python benchmarks/train_default.py [--events 50000] [--update-docs]
"""

from __future__ import annotations

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run(config, events, out: Path) -> tuple[float, object]:
    from eventlm.apply import calibrate
    from eventlm.train import train

    t0 = time.perf_counter()
    result = train(config, events, out, progress=False)
    calibrate(out, events)
    return time.perf_counter() - t0, result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", default=str(ROOT / "data" / "background.csv.gz"))
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--no-baseline", action="store_true", help="time only the default")
    p.add_argument("--update-docs", action="store_true")
    args = p.parse_args(argv)

    from eventlm.config import RunConfig
    from eventlm.io import read_events

    events = read_events(args.input, max_events=args.events)
    load = os.getloadavg()[0]
    rows = []
    configs = [("default (`tail` table, causal)", RunConfig())]
    if not args.no_baseline:
        configs.append(("paper (`paper` table, masked)",
                        RunConfig().replace(tokenizer={"kind": "lut", "params": {"preset": "paper"}},
                                            train={"objective": "masked"})))
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in configs:
            seconds, result = run(config, events, Path(tmp) / name.split()[0])
            n_train = round(len(events) * config.split.train)
            rows.append((name, seconds, result.epochs_run, n_train * result.epochs_run / seconds))
            print(f"{name}: {seconds:.0f} s, {result.epochs_run} epochs", flush=True)
    load_end = os.getloadavg()[0]
    lines = [
        "## Training the default model (`benchmarks/train_default.py`)", "",
        f"`train(config, events)` plus the calibration, end to end, on the first {len(events)} events of "
        f"`{Path(args.input).name}` (70 % of them trained on), 1 torch thread. Machine: {_report.machine()}; "
        f"1-minute load average {load:.1f} at the start, {load_end:.1f} at the end.", "",
        "| configuration | wall time | epochs | training events x epochs / s |", "|---|---:|---:|---:|",
    ]
    for name, seconds, epochs, rate in rows:
        lines.append(f"| {name} | {seconds:.0f} s | {epochs} | {rate:.0f} |")
    if len(rows) > 1:
        lines += ["", f"The default costs {rows[0][1] / rows[1][1]:.2f}x the paper's configuration "
                      f"(target for the default: under 300 s; measured {rows[0][1]:.0f} s)."]
    _report.publish("train_default", lines, update_docs=args.update_docs, input_path=args.input)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
