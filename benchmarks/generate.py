"""Generator benchmark and validation figures.

Generates ``--events`` events per process (Dark Machines preselection, one worker, so the times are CPU
times of one core), reports Pythia and detector-model milliseconds per generated event with the
detector / Pythia ratio (the baseline measured in the same run), and renders the validation figures
``docs/figures/generator_*.png`` from the same events.

    python benchmarks/generate.py --events 1000 [--update-docs] [--figures]
"""

from __future__ import annotations

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--update-docs", action="store_true")
    parser.add_argument("--figures", action="store_true", help="write docs/figures/generator_*.png")
    args = parser.parse_args(argv)

    from importlib.metadata import version

    from eventlm.generate import PROCESSES, generate

    samples, rows = {}, []
    for name in PROCESSES:
        start = time.perf_counter()
        sample = generate(name, args.events, seed=args.seed, jobs=1, progress=False)
        wall = time.perf_counter() - start
        n_gen = sample.n_generated_total
        ms_py = 1000 * sample.time_pythia / n_gen
        ms_det = 1000 * sample.time_detector / n_gen
        rows.append(
            f"| {name} | {sample.n_events} | {n_gen} | {sample.acceptance:.3f} | {sample.sigma_pb:.4g} | "
            f"{ms_py:.2f} | {ms_det:.2f} | {ms_det / ms_py:.2f} | {1000 * wall / sample.n_events:.2f} |"
        )
        print(rows[-1], flush=True)
        samples[name] = sample.events

    md = "\n".join(
        [
            "## generate: Pythia 8 + detector model",
            "",
            f"`python benchmarks/generate.py --events {args.events}`: {args.events} events per process passing the",
            "Dark Machines preselection, one worker process (`--jobs 1`), 13 TeV, hadronization on. Times per",
            "*generated* event (before the preselection), CPU of one core; `det/pythia` is the ratio of the",
            "detector model (truth record extraction, FastJet anti-kT, isolation, smearing, b-tagging) to Pythia",
            "itself, measured in the same run. The last column includes Pythia initialization and the events",
            "the preselection rejected, per kept event. Other processes shared the two cores during the run, so",
            "absolute numbers are upper bounds; the ratio is the portable figure.",
            "",
            f"Machine: {_report.machine()}; pythia8mc {version('pythia8mc')}, fastjet {version('fastjet')}.",
            "",
            "| process | kept | generated | acceptance | sigma [pb] | Pythia ms/event | detector ms/event "
            "| det/pythia | wall ms per kept event |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(md)
    if args.update_docs:
        _report.update_section("generate", md)
    if args.figures:
        from eventlm.plotting import PlotLabel
        from eventlm.plotting.kinematics import plot_generator_validation

        paths = plot_generator_validation(
            samples, ROOT / "docs" / "figures", label=PlotLabel(text="Internal"),  # mplhep adds "Simulation"
            note="Dark Machines preselection",
        )
        print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
