"""Scoring: what a score costs, per objective, on this CPU; 1 and 2 worker processes; peak memory.

    python benchmarks/score.py [--input data/background.csv.gz] [--events 10000] [--copies 10] [--update-docs]

For each objective (masked and causal, passed explicitly) a default-size model is trained for one
epoch on 10k background events, then ``--events`` events (written to Parquet) are scored, each
measurement in its own subprocess (its own peak RSS):

- one worker on the file, and on the file ``--copies`` times over (events/s, peak memory growth;
  streaming should keep the peak flat: target < 20 %);
- two workers (``eventlm.parallel``, one torch thread each) on the same ``--copies`` file: the ratio to
  one worker (target >= 1.7x on 2 cores).

The cost accounting: forward passes per event (the masked pseudo-likelihood runs one copy of the
event per maskable token; the causal likelihood one pass per event), FLOPs per event counted from the
model's shapes at each event's own length (the matmuls: 24 C^2 per token and layer; attention: 4 T C
per token and layer; the head: 2 C V per predicted token), and the fraction of this machine's matmul
rate that scoring reaches, the rate measured in the same run with a plain ``torch.matmul`` of the
model's MLP shapes on one thread.
"""

from __future__ import annotations

import os
import sys

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = ("masked", "causal")

CHILD = r"""
import json, sys
from eventlm.parallel import score_files_parallel
model, inp, copies, out, step, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
import eventlm.io, eventlm.score, torch  # imports are not part of the measurement

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
summary = score_files_parallel(model, [inp] * copies, out, step_size=step, workers=workers)
summary.update(peak_rss_mib=status("VmHWM"), rss_after_imports_mib=base, peak_reset=reset)
print(json.dumps(summary))
"""


def measure(model, inp, copies, out, step, workers=1) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, str(model), str(inp), str(copies), str(out), str(step),
                          str(workers)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def cost_per_event(model_dir, events) -> dict:
    """Forward passes, tokens through the model and FLOPs per event, from the model's shapes."""
    import numpy as np

    from eventlm.batching import jagged_to_flat
    from eventlm.modeldir import ModelDir

    scorer = ModelDir(model_dir).open_scorer()
    cfg = scorer.model.config
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    _, offsets = jagged_to_flat(scorer.tokenizer.encode(events))
    n = np.diff(offsets).astype(np.float64)  # tokens per event (particles and MET)
    if scorer.objective == "causal":
        passes = np.ones_like(n)
        T = n + 1  # BOS t1 .. tn
        predicted = n + 1  # the n tokens and the stop token
    else:
        n_met = 0 if scorer._load()["mask_met"] else scorer.tokenizer.n_met_tokens
        passes = np.maximum(n - n_met, 0)  # one masked copy per maskable token
        T = n
        predicted = passes  # the head runs at the masked position of each copy only
    flops = passes * L * (24 * C * C * T + 4 * C * T * T) + predicted * 2 * C * V
    return {"objective": scorer.objective, "tokens": float(n.mean()), "passes": float(passes.mean()),
            "positions": float((passes * T).mean()), "flops": float(flops.mean()), "C": C, "L": L, "V": V,
            "params": scorer.model.num_params()}


def matmul_rate(C: int, rows: int = 8192, seconds: float = 1.0) -> float:
    """FLOP/s of ``torch.matmul`` on one thread for the model's MLP shapes: (rows, C) x (C, 4C) and
    (rows, 4C) x (4C, C), float32."""
    import torch

    torch.set_num_threads(1)
    a, w1 = torch.randn(rows, C), torch.randn(C, 4 * C)
    h, w2 = torch.randn(rows, 4 * C), torch.randn(4 * C, C)
    for _ in range(3):
        a @ w1, h @ w2  # noqa: B018
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ w1, h @ w2  # noqa: B018
        n += 1
    return n * 2 * (2 * rows * C * 4 * C) / (time.perf_counter() - t0)


MATMUL_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from score import matmul_rate
print(matmul_rate(int(sys.argv[2]), seconds=float(sys.argv[3])))
"""


def parallel_ceiling(C: int, seconds: float = 3.0) -> float:
    """What two processes get together against one, on this machine now: the summed matmul rate of
    two concurrent one-thread processes over the rate of one alone (2.0 on two idle cores)."""
    here = str(Path(__file__).resolve().parent)

    def start():
        return subprocess.Popen([sys.executable, "-c", MATMUL_CHILD, here, str(C), str(seconds)],
                                stdout=subprocess.PIPE, text=True)

    one = float(start().communicate()[0])
    pair = [start(), start()]
    return sum(float(p.communicate()[0]) for p in pair) / one


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=str(ROOT / "data" / "background.csv.gz"), help="background events")
    parser.add_argument("--events", type=int, default=10_000, help="events in the input file")
    parser.add_argument("--copies", type=int, default=10, help="copies of the file in the long runs")
    parser.add_argument("--step-size", type=int, default=5_000)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)

    from eventlm.config import RunConfig
    from eventlm.io import read_events, write_events
    from eventlm.train import train

    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        events = read_events(args.input, max_events=args.events)
        inp = tmp / "input.parquet"
        write_events(events, inp)
        for objective in OBJECTIVES:
            model = tmp / f"model_{objective}"
            train(RunConfig().replace(train={"objective": objective, "epochs": 1, "max_events": 10_000}),
                  [args.input], model, progress=False)
            cost = cost_per_event(model, events)
            assert cost["objective"] == objective, cost
            one = measure(model, inp, 1, tmp / "one.root", args.step_size)
            many = measure(model, inp, args.copies, tmp / "many.root", args.step_size)
            two = measure(model, inp, args.copies, tmp / "two.root", args.step_size, workers=2)
            results[objective] = {"cost": cost, "one": one, "many": many, "two": two}
        rate = matmul_rate(results["masked"]["cost"]["C"])
        ceiling = parallel_ceiling(results["masked"]["cost"]["C"])
    load_after = os.getloadavg()

    c0 = results["masked"]["cost"]
    md = [
        "## Scoring (`benchmarks/score.py`)",
        "",
        f"Default-size model ({c0['L']} layers x {c0['C']}, {c0['params']:,} parameters, vocabulary {c0['V']}) trained "
        f"1 epoch per objective on 10k events of `{Path(args.input).name}`; {args.events:,} of its events scored from "
        f"Parquet to ROOT, step size {args.step_size}, CPU, one torch thread per process; every row in its own "
        "process. The objective is passed explicitly (`[train] objective`).",
        "",
        "| objective | forward passes / event | token positions / event | MFLOP / event | events/s, 1 worker "
        f"| events/s, 1 worker, x{args.copies} | events/s, 2 workers, x{args.copies} | 2 workers / 1 "
        "| share of matmul rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for objective, r in results.items():
        c = r["cost"]
        eps = r["many"]["events_per_s"]
        md.append(
            f"| {objective} | {c['passes']:.1f} | {c['positions']:.0f} | {c['flops'] / 1e6:.2f} | "
            f"{r['one']['events_per_s']:,.0f} | {eps:,.0f} | {r['two']['events_per_s']:,.0f} | "
            f"**{r['two']['events_per_s'] / eps:.2f}x** | {100 * eps * c['flops'] / rate:.1f} % |"
        )
    md += [
        "",
        f"Matmul rate of this machine, same run: {rate / 1e9:.1f} GFLOP/s (one thread, float32, `torch.matmul` of "
        f"(8192, {c0['C']}) x ({c0['C']}, {4 * c0['C']}) and back). An event has {c0['tokens']:.1f} tokens on average "
        "(particles and MET). The masked pseudo-likelihood scores each maskable token in its own copy of the event: "
        f"{c0['passes']:.1f} forward passes per event here, each over the whole event; the causal event "
        "log-likelihood needs one pass per event (all next-token terms at once), so it costs about "
        f"{results['masked']['cost']['flops'] / results['causal']['cost']['flops']:.0f}x fewer FLOPs per event.",
        "2 workers: `eventlm score --workers 2` (`eventlm.parallel`), each with one torch thread; events/s counts "
        "from the first event read, the start-up (spawning the workers, loading the model in each, a 64-event "
        "warm-up) is apart: " + ", ".join(f"{o} {r['two']['startup_seconds']:.1f} s" for o, r in results.items())
        + f". What this machine gave two processes at the time: two concurrent one-thread matmul processes reached "
        f"**{ceiling:.2f}x** the rate of one alone (2.0 on two idle cores), the ceiling for the 2-worker ratio.",
    ]
    for objective, r in results.items():
        one, many = r["one"], r["many"]
        growth = many["peak_rss_mib"] / one["peak_rss_mib"] - 1
        md.append(
            f"Peak memory, {objective}: {one['peak_rss_mib']:.0f} MiB for one file, {many['peak_rss_mib']:.0f} MiB for "
            f"{args.copies} copies (**{100 * growth:+.1f} %**, target < 20 %; measured from after the imports, "
            f"{'peak reset through /proc/self/clear_refs' if one['peak_reset'] else 'peak NOT reset'})."
        )
    md += [
        "",
        f"Machine: {_report.machine()}; load average (1/5/15 min) {load_before[0]:.1f}/{load_before[1]:.1f}/"
        f"{load_before[2]:.1f} before and {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} after (the 2 "
        "cores are shared: with a load above 2 the second worker competes with other work). GPU: "
        "`benchmarks/gpu.py` (below).",
    ]
    _report.publish("score", md, update_docs=args.update_docs, input_path=args.input)
    return 0


if __name__ == "__main__":
    sys.exit(main())
