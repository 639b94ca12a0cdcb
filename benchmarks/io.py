"""I/O benchmark: eventlm's vectorized CSV reader against a per-line ``str.split`` parser, and ROOT.

    python benchmarks/io.py [--events 200000] [--update-docs]

Writes N random events (Dark Machines-like multiplicities and ranges) as a ``.csv`` through eventlm's
writer and as a ``.root`` ntuple into a temporary directory, then reads them, each reader in a fresh
subprocess so that its peak memory is its own: eventlm ``read_events`` on the CSV, the naive parser on
the same CSV (one Python loop over lines, ``str.split`` on ``;`` and ``,``, ``float()`` per value, then
the same event arrays built from the lists), eventlm streaming the CSV in 50k-event chunks, eventlm
``read_events`` on the same events gzipped and on the ROOT file, and uproot alone reading the same
branches (the floor for any reader built on uproot). Targets: CSV >= 10x the naive parser, ROOT >= 5x our CSV.
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



def random_events(n: int, seed: int = 0):
    import numpy as np

    from eventlm.events import make_events, make_particles

    rng = np.random.default_rng(seed)
    counts = rng.poisson(7.0, size=n).clip(0, 30)
    total = int(counts.sum())
    kind = rng.choice(np.array([0, 0, 0, 0, 1, 1, 2, 3, 4]), size=total).astype(np.int8)
    charge = np.where((kind == 2) | (kind == 3), rng.choice([-1, 1], size=total), 0).astype(np.int8)
    pt = (20.0 + rng.exponential(60.0, size=total)).astype(np.float32)
    eta = rng.uniform(-2.7, 2.7, size=total).astype(np.float32)
    phi = rng.uniform(-np.pi, np.pi, size=total).astype(np.float32)
    mass = np.where(kind <= 1, rng.uniform(2.0, 15.0, size=total), 0.0)
    E = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2).astype(np.float32)
    processes = np.array(["ttbar", "wjets", "4top", "ttbarW"])
    return make_events(
        event_id=np.arange(n),
        process=processes[rng.integers(0, 4, size=n)],
        weight=rng.uniform(0.5, 2.0, size=n),
        met=rng.exponential(80.0, size=n).astype(np.float32),
        met_phi=rng.uniform(-np.pi, np.pi, size=n).astype(np.float32),
        particles=make_particles(kind, charge, pt, eta, phi, E, counts),
    )


def naive_read(path: str):
    """The straightforward parser: a Python loop over lines, str.split, float() per value."""
    import numpy as np

    from eventlm.events import DARKMACHINES_CODES, make_events, make_particles

    ids, procs, weights, mets, met_phis, counts = [], [], [], [], [], []
    kinds, charges, pts, etas, phis, Es = [], [], [], [], [], []
    with open(path) as fh:
        for line in fh:
            fields = line.rstrip("\n").split(";")
            ids.append(int(fields[0]))
            procs.append(fields[1])
            weights.append(float(fields[2]))
            mets.append(float(fields[3]) / 1000.0)
            met_phis.append(float(fields[4]))
            objects = fields[5:-1]
            counts.append(len(objects))
            for obj in objects:
                code, E, pt, eta, phi = obj.split(",")
                kind, charge = DARKMACHINES_CODES[code]
                kinds.append(int(kind))
                charges.append(charge)
                Es.append(float(E) / 1000.0)
                pts.append(float(pt) / 1000.0)
                etas.append(float(eta))
                phis.append(float(phi))
    particles = make_particles(kinds, charges, pts, etas, phis, Es, np.array(counts))
    return make_events(event_id=ids, process=procs, weight=weights, met=mets, met_phi=met_phis, particles=particles)


def _child(reader: str, path: str) -> None:
    """Run one reader in this (fresh) process; print seconds, events and memory as JSON."""
    import awkward as ak

    import eventlm.io  # noqa: F401  (imports are not part of the timing)
    import eventlm.io.csv  # noqa: F401
    import eventlm.io.root  # noqa: F401

    if reader == "uproot":
        _uproot_arrays(path, entry_stop=1000)
    elif reader != "naive":  # first-call costs (lazy imports, kernel look-ups) are not per-event costs
        eventlm.io.read_events(path, max_events=1000, step_size=1000)
    base = _vm_hwm_mib()
    t0 = time.perf_counter()
    if reader == "naive":
        n = len(naive_read(path))
    elif reader == "stream":
        n = sum(len(chunk) for chunk in eventlm.io.iter_events(path, step_size=50_000))
    elif reader == "uproot":  # uproot alone, the same branches and threads, no event model built
        n = len(_uproot_arrays(path))
    else:
        events = eventlm.io.read_events(path)
        n = len(events)
        ak.sum(events.particles.pt)  # touch it
    seconds = time.perf_counter() - t0
    peak = _vm_hwm_mib()
    print(json.dumps({"seconds": seconds, "events": n, "peak_mib": peak, "above_import_mib": peak - base}))


def _uproot_arrays(path: str, entry_stop=None):
    """What eventlm's ROOT reader asks of uproot, and nothing more: the floor of any uproot reader."""
    from concurrent.futures import ThreadPoolExecutor

    import uproot

    from eventlm.io.root import EVENT_BRANCHES, PARTICLE_BRANCHES

    with uproot.open(path, handler=uproot.source.file.MemmapSource) as f, ThreadPoolExecutor(2) as pool:
        return f["Events"].arrays([*EVENT_BRANCHES, *PARTICLE_BRANCHES], entry_stop=entry_stop, array_cache=None,
                                  decompression_executor=pool, interpretation_executor=pool)


def _vm_hwm_mib() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss not inherited from the parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measure(reader: str, path: Path, repeat: int) -> dict:
    """The median run (by seconds) of ``repeat`` fresh processes, with the spread of the seconds."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--child", reader, str(path)], check=True, capture_output=True, text=True
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["seconds"])
    return {**runs[len(runs) // 2], "min": runs[0]["seconds"], "max": runs[-1]["seconds"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per reader; the median is shown")
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return

    import awkward as ak
    import numpy as np
    report = _report
    machine, update_section = report.machine, report.update_section

    from eventlm.io import write_events

    events = random_events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        csv = write_events(events, Path(tmp) / "bench.csv")
        gz = write_events(events, Path(tmp) / "bench.csv.gz")
        root = write_events(events, Path(tmp) / "bench.root")
        sizes = {k: p.stat().st_size / 2**20 for k, p in (("csv", csv), ("gz", gz), ("root", root))}
        rows = [
            ("per-line `str.split` parser (baseline)", "CSV", _measure("naive", csv, args.repeat)),
            ("eventlm `read_events`", "CSV", _measure("eventlm", csv, args.repeat)),
            ("eventlm `iter_events` (50k-event chunks)", "CSV", _measure("stream", csv, args.repeat)),
            ("eventlm `read_events`", "CSV.gz", _measure("eventlm", gz, args.repeat)),
            ("eventlm `read_events`", "ROOT", _measure("eventlm", root, args.repeat)),
            ("uproot `arrays` of the same branches, no event model (floor)", "ROOT",
             _measure("uproot", root, args.repeat)),
        ]
    naive_s, csv_s = rows[0][2]["seconds"], rows[1][2]["seconds"]
    n_particles = int(np.sum(ak.num(events.particles)))
    lines = [
        f"Reading {args.events:,} events ({n_particles:,} objects; CSV {sizes['csv']:.0f} MiB, CSV.gz "
        f"{sizes['gz']:.0f} MiB, ROOT "
        f"{sizes['root']:.0f} MiB) — `python benchmarks/io.py --events {args.events}`.",
        "",
        f"| reader | file | seconds (median of {args.repeat}) | range | events/s | vs naive | peak RSS (MiB) "
        "| above imports (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, fmt, r in rows:
        lines.append(
            f"| {name} | {fmt} | {r['seconds']:.3f} | {r['min']:.3f}-{r['max']:.3f} | "
            f"{r['events'] / r['seconds']:,.0f} | {naive_s / r['seconds']:.1f}x | {r['peak_mib']:.0f} | "
            f"{r['above_import_mib']:.0f} |"
        )
    gz_s, root_s, floor_s = rows[3][2]["seconds"], rows[4][2]["seconds"], rows[5][2]["seconds"]
    lines += [
        "",
        f"eventlm CSV vs naive: **{naive_s / csv_s:.1f}x** (target >= 10x); "
        f"ROOT vs eventlm CSV: **{csv_s / root_s:.1f}x** (target >= 5x); ROOT vs naive: **{naive_s / root_s:.0f}x**; "
        f"ROOT vs eventlm CSV.gz (the form Dark Machines files come in): {gz_s / root_s:.1f}x. "
        f"uproot's own read of the branches takes {floor_s:.3f} s before any event is built, so no uproot-based "
        f"reader could be more than {csv_s / floor_s:.1f}x our CSV reader here.",
        f"Each reader runs {args.repeat} times, each time in a fresh subprocess, and the median run is shown; "
        "peak RSS is that process's maximum resident memory "
        "(\"above imports\" subtracts the peak after importing numpy/awkward/uproot/eventlm and, for "
        "eventlm, a 1000-event warm-up read that takes first-call costs out of the timing).",
        "",
        f"Machine: {machine()}.",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if args.update_docs:
        update_section("io", markdown)


if __name__ == "__main__":
    main()
