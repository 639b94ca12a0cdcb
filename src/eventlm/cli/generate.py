"""``eventlm generate PROCESS --events N --seed S --out FILE``: Pythia 8 + detector model -> events."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

#: Listed without importing the generator (keeps ``eventlm --help`` fast and pythia-free).
PROCESS_NAMES = (
    "ttbar", "ttbarHiggs", "single_top", "w_jets",  # backgrounds
    "gluino_1000", "tttt_H500",  # signals with more objects than the background
    "zprime_1500", "wprime_1500", "stop_800", "ttbar_S200_inv", "A3_ttbar_750",  # background-like object counts
    "zprime_1000", "wprime_2500", "tttt_H400", "ttbar_S100_inv", "A3_ttbar_500",  # the validation signals
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate events with Pythia 8 and the parametric detector model",
        description=(
            "Generate N events of PROCESS (13 TeV pp) that pass the selection, through the ATLAS-like "
            "detector model, and write them (Dark Machines CSV, ROOT or Parquet, from the suffix). "
            "Weights are sigma / N_generated * luminosity, where N_generated counts every Pythia event "
            "up to the last kept one, so the weights sum to sigma x acceptance x luminosity. "
            f"Processes: {', '.join(PROCESS_NAMES)}. Needs: pip install eventlm[generate]."
        ),
    )
    parser.add_argument("process", metavar="PROCESS", help=f"one of {', '.join(PROCESS_NAMES)}")
    parser.add_argument("--events", "-n", type=int, required=True, help="events to keep (after the selection)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0); the output depends only "
                        "on PROCESS, --events, --seed and --select")
    parser.add_argument("--out", "-o", required=True, help="output file, e.g. ttbar.csv.gz")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--lumi", type=float, default=10.0, help="luminosity for the weights in fb^-1 (default 10)")
    parser.add_argument(
        "--select",
        choices=("darkmachines", "analysis"),
        default="darkmachines",
        help="darkmachines: the format's preselection (default); analysis: also HT >= 300 GeV, "
        ">= 4 jets, >= 1 b-jet",
    )
    parser.add_argument("--first-id", type=int, default=0, help="event id of the first event (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eventlm.atomic import check_location
    from eventlm.errors import EventlmError
    from eventlm.generate.pythia import generate, get_process, require_generator

    check_location(args.out)  # before Pythia starts (write_events then writes atomically)
    get_process(args.process)  # unknown or unavailable (wtop) processes fail before Pythia is needed
    require_generator()
    if args.jobs < 1:
        raise EventlmError(f"--jobs must be at least 1, got {args.jobs}")
    from eventlm.io import write_events

    sample = generate(
        args.process,
        args.events,
        seed=args.seed,
        jobs=args.jobs,
        luminosity=args.lumi,
        selection=args.select,
        first_id=args.first_id,
    )
    write_events(sample.events, args.out)
    ms = 1000.0 * (sample.time_pythia + sample.time_detector) / max(sample.n_generated_total, 1)
    print(
        f"{args.process}: {sample.n_events} events -> {args.out}; sigma = {sample.sigma_pb:.4g} "
        f"+- {sample.sigma_err_pb:.2g} pb, acceptance = {sample.acceptance:.4f} "
        f"({sample.n_events}/{sample.n_generated} generated), weight = {sample.weight:.4g} "
        f"at {args.lumi:g} fb^-1; {ms:.2f} ms per generated event (time summed over workers)"
    )
    return 0
