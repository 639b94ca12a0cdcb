"""Client memory of the coffea processor: per-event columns through the accumulator vs skims from the workers.

The processor runs with coffea's futures executor (2 worker processes), so the client is this process
alone: it receives and adds the chunks' outputs. Two ways to get the scored events:

- ``columns`` (before): every chunk returns its per-event columns (``keep_columns=True``); the client
  concatenates them;
- ``skims`` (now): every chunk writes its scored events as a ROOT skim from the worker and returns
  histograms and the file name; the client then reads back only the columns the threshold and ROC need
  (``read_skim_columns``, in steps).

Each mode runs on N events and on 10 N events (the same ntuple copied ten times), each in its own
process; the peak resident memory (VmHWM, reset after the imports) is compared. Target for the skims:
the peak grows by less than 20 % for 10x the events. The scores are stored in the ntuple (no model):
the model runs on the workers and does not touch the client's memory.

    python benchmarks/client_memory.py [--events 20000] [--update-docs]
"""

from __future__ import annotations

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
mode, skim_dir, files = sys.argv[1], sys.argv[2], sys.argv[3:]
from coffea import processor
from eventlm.analysis import AnomalyProcessor, EventlmNanoAODSchema, Region
from eventlm.analysis.skims import columns_of, read_skim_columns, skims_of
from eventlm.analysis.execution import _quiet_coffea_bars

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")

regions = [Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6")]
proc = AnomalyProcessor(regions, keep_columns=mode == "columns", skim_dir=skim_dir if mode == "skims" else None)
runner = processor.Runner(processor.FuturesExecutor(workers=2, status=False), schema=EventlmNanoAODSchema,
                          chunksize=10_000)
base = status("VmRSS")
reset = True
try:  # reset the peak (VmHWM): measure the run, not the imports
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    reset = False
t0 = time.perf_counter()
with _quiet_coffea_bars():
    out = runner({"background": files}, proc, treename="Events")
run_peak = status("VmHWM")
if mode == "columns":
    cols = columns_of(out, "background")
else:
    cols = read_skim_columns(skims_of(out, "background"), step_size=100_000)
n = len(cols["event"])
print(json.dumps({"events": n, "seconds": time.perf_counter() - t0, "peak_mib": status("VmHWM"), "run_peak_mib": run_peak,
                  "after_imports_mib": base, "peak_reset": reset}))
"""


def measure(mode: str, files: list[Path], skim_dir: Path) -> dict:
    shutil.rmtree(skim_dir, ignore_errors=True)
    run = subprocess.run([sys.executable, "-c", CHILD, mode, str(skim_dir), *map(str, files)],
                         capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(run.stderr[-3000:])
    return json.loads(run.stdout.strip().splitlines()[-1])


def make_ntuple(n_events: int, out: Path) -> Path:
    import numpy as np

    from eventlm.io import read_events, write_events

    events = read_events(ROOT / "data" / "background.csv.gz", max_events=n_events)
    rng = np.random.default_rng(1)
    scores = {"anomaly_score": rng.normal(3.0, 1.0, len(events)).astype(np.float32),
              "anomaly_score_sum": rng.normal(30.0, 5.0, len(events)).astype(np.float32)}
    return write_events(events, out, extra_columns=scores)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events of the 1x input")
    parser.add_argument("--update-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="eventlm-client-memory-") as tmp:
        tmp = Path(tmp)
        one = make_ntuple(args.events, tmp / "background_0.root")
        ten = [one] + [Path(shutil.copy(one, tmp / f"background_{i}.root")) for i in range(1, 10)]
        rows = {}
        for mode in ("columns", "skims"):
            for label, files in (("1x", [one]), ("10x", ten)):
                rows[mode, label] = measure(mode, files, tmp / "skims")
                r = rows[mode, label]
                print(f"{mode:8s} {label:4s} {r['events']:8d} events  run {r['run_peak_mib']:.0f} MiB  peak {r['peak_mib']:.0f} MiB  "
                      f"({r['seconds']:.1f} s)", file=sys.stderr)
    n1 = rows["skims", "1x"]["events"]
    lines = [
        "## Client memory of the coffea processor (`benchmarks/client_memory.py`)",
        "",
        f"`AnomalyProcessor` over {n1} and {10 * n1} events of `background.csv.gz` (the ntuple copied ten "
        "times; scores stored in it), coffea futures executor with 2 worker processes, chunks of 10000; "
        "peak resident memory of the client process (the workers are separate processes), reset after the "
        f"imports, each run in its own process. Machine: {_report.machine()}.",
        "",
        "| scored events returned as | events | client peak: processor run | growth | "
        "client peak: + columns in memory | growth |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    growth, run_growth = {}, {}
    for mode, text in (("columns", "per-event columns in the accumulator (before)"),
                       ("skims", "skims written by the workers, columns read back (now)")):
        a, b = rows[mode, "1x"], rows[mode, "10x"]
        growth[mode] = b["peak_mib"] / a["peak_mib"] - 1
        run_growth[mode] = b["run_peak_mib"] / a["run_peak_mib"] - 1
        lines.append(f"| {text} | {a['events']} | {a['run_peak_mib']:.0f} MiB | | {a['peak_mib']:.0f} MiB | |")
        lines.append(f"| {text} | {b['events']} | {b['run_peak_mib']:.0f} MiB | {100 * run_growth[mode]:+.1f} % "
                     f"| {b['peak_mib']:.0f} MiB | {100 * growth[mode]:+.1f} % |")
    reset = all(r["peak_reset"] for r in rows.values())
    lines += [
        "",
        f"Client peak growth for 10x the events with skims: **{100 * growth['skims']:+.1f} %** in all "
        f"(target < 20 %), {100 * run_growth['skims']:+.1f} % while the processor runs; with per-event columns "
        f"{100 * growth['columns']:+.1f} % ({100 * run_growth['columns']:+.1f} % during the run). After the imports the client holds "
        f"{rows['skims', '1x']['after_imports_mib']:.0f} MiB"
        f"{'' if reset else ' (peak NOT reset: the figures include the imports)'}. The columns read back "
        "for the threshold and the ROC curves (event, weight, process code, two scores, two region flags: "
        "34 bytes per event) are what still grows with the events.",
    ]
    _report.publish("client_memory", lines, update_docs=args.update_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
