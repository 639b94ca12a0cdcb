"""``eventlm score``: add anomaly scores to every event of the input files."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score events with a trained model",
        description="Read INPUT files in steps, score every event with the model in DIR and write OUT "
        "(.root ntuple or .parquet) with all input columns plus anomaly_score, anomaly_score_max, "
        "reco_accuracy and token_nll, in input order.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="event files (CSV, ROOT, Parquet)")
    p.add_argument("--model", required=True, metavar="DIR", help="model directory from `eventlm train`")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output .root or .parquet file")
    p.add_argument("--step-size", type=int, default=50_000, metavar="N", help="events read per step")
    p.add_argument("--confusion", metavar="PLOT.png", help="also draw token confusion matrices")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="scoring processes, each with one torch thread (default 1; see eventlm.parallel)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from eventlm.errors import EventlmError
    from eventlm.parallel import score_files_parallel

    if args.workers < 1:
        raise EventlmError(f"--workers must be at least 1, not {args.workers}")
    summary = score_files_parallel(args.model, args.inputs, args.output, workers=args.workers,
                                   step_size=args.step_size, device=args.device, confusion=args.confusion,
                                   progress=not args.no_progress)
    logging.getLogger("eventlm.score").info(
        "wrote %s: %d events in %.1f s (%.0f events/s)", summary["output"], summary["events"],
        summary["seconds"], summary["events_per_s"],
    )
    return 0
