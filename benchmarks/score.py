"""Scoring: events/s on CPU, and peak memory for one file vs the same file ten times over.

Each measurement runs ``score_files`` in its own subprocess (peak RSS of that process), so memory does
not carry over. Streaming means the peak should not grow with the input size (target: < 20 %).

    python benchmarks/score.py [--model DIR] [--input data/background.csv.gz] [--events 10000] [--update-docs]

Without ``--model`` a small model is trained first (1 epoch on 10k background events).
"""

from __future__ import annotations

import os
import sys

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse
import json
import subprocess
import tempfile
from pathlib import Path




ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from eventlm.score import score_files
model, inp, copies, out, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
import eventlm.io, eventlm.train, torch  # imports are not part of the measurement

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")

base = status("VmRSS")
reset = True
try:  # reset the peak (VmHWM) so it measures the scoring, not the imports
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    reset = False
summary = score_files(model, [inp] * copies, out, step_size=step)
summary.update(peak_rss_mib=status("VmHWM"), rss_after_imports_mib=base, peak_reset=reset)
print(json.dumps(summary))
"""


def measure(model, inp, copies, out, step) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(model), str(inp), str(copies), str(out), str(step)],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: train a small one)")
    parser.add_argument("--input", default=str(ROOT / "data" / "background.csv.gz"), help="background events")
    parser.add_argument("--events", type=int, default=10_000, help="events in the input file")
    parser.add_argument("--step-size", type=int, default=5_000)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)

    from eventlm.io import read_events, write_events

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        events = read_events(args.input, max_events=args.events)
        inp = tmp / "input.parquet"
        write_events(events, inp)
        model = args.model
        if model is None:
            from eventlm.config import RunConfig
            from eventlm.train import train

            model = tmp / "model"
            train(RunConfig().replace(train={"epochs": 1, "max_events": 10_000}),
                  [args.input], model, progress=False)
        one = measure(model, inp, 1, tmp / "one.root", args.step_size)
        ten = measure(model, inp, 10, tmp / "ten.root", args.step_size)
    growth = ten["peak_rss_mib"] / one["peak_rss_mib"] - 1
    md = [
        "## Scoring (`benchmarks/score.py`)",
        "",
        f"Masked-objective scoring of `{Path(args.input).name}` events written to Parquet ({args.events} events), "
        f"ROOT output, step size {args.step_size}, default model, CPU, 1 torch thread; each row in its own "
        f"process. Machine: {_report.machine()}.",
        "",
        "| input | events | events/s | peak RSS |",
        "|---|---:|---:|---:|",
        f"| one file | {one['events']} | {one['events_per_s']:.0f} | {one['peak_rss_mib']:.0f} MiB |",
        f"| the same file x10 | {ten['events']} | {ten['events_per_s']:.0f} | {ten['peak_rss_mib']:.0f} MiB |",
        "",
        f"Peak memory growth for 10x the input: **{100 * growth:+.1f} %** (target < 20 %). Peak RSS is measured "
        f"from after the imports (the process holds {one['rss_after_imports_mib']:.0f} MiB then; "
        f"{'peak reset through /proc/self/clear_refs' if one['peak_reset'] else 'peak NOT reset: includes imports'}"
        f"); growth beyond it: {one['peak_rss_mib'] - one['rss_after_imports_mib']:.0f} MiB for one file, "
        f"{ten['peak_rss_mib'] - ten['rss_after_imports_mib']:.0f} MiB for ten. GPU figures are absent: no GPU was "
        "available to this session.",
    ]
    _report.publish("score", md, update_docs=args.update_docs, input_path=args.input)
    return 0


if __name__ == "__main__":
    sys.exit(main())
