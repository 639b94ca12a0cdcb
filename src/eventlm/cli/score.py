"""``eventlm score``: add anomaly scores to every event of the input files."""

from __future__ import annotations

import argparse

from eventlm.cli import add_model, add_no_progress, add_on_error, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score events with a trained model",
        usage="%(prog)s [-h] [MODEL] INPUT [INPUT ...] -o OUT [options]   (or --model MODEL INPUT ...)",
        description="Read INPUT files in steps, score every event with the model in MODEL and write OUT "
        "(.root ntuple or .parquet): every input event once, in input order, as the event model (event, "
        "weight, process, MET_pt/MET_phi, the selected objects as Particle_*; from NanoAOD and PHYSLITE also "
        "the event identity run, luminosityBlock (and mcChannelNumber), so the output joins back to the input; "
        "the input's other branches only with --copy-branches), in_training_phase_space (whether the event "
        "lies inside the phase space the model was trained on; see eventlm info MODEL) and the "
        "score columns (eventlm.score.SCORE_COLUMNS; docs/method.md): anomaly_score (the default: the event's "
        "likelihood and its energy scale for its object count, as one background tail probability, -log10; "
        "the event NLL where the model has no calibration), anomaly_score_nll (-log p(event)), "
        "anomaly_score_calibrated (the event NLL per object count, where the model has a calibration), anomaly_score_mean, "
        "anomaly_score_sum, anomaly_score_max, reco_accuracy, log_likelihood (causal model), token_nll, and "
        "anomaly_score_nll split over the objects: object_nll (one value per Particle), met_nll, stop_nll, count_nll.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="event files (CSV, ROOT, Parquet); the first "
                   "argument is the model directory unless --model is given")
    add_model(p)
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output .root or .parquet file")
    p.add_argument("--max-events", type=positive_int, metavar="N", help="score the first N events of the inputs")
    p.add_argument("--step-size", type=positive_int, default=50_000, metavar="N", help="events read per step")
    p.add_argument("--confusion", metavar="PLOT.png", help="also draw token confusion matrices")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda or cuda:N")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="scoring processes, each with one torch thread (default 1; see eventlm.parallel)")
    p.add_argument("--copy-branches", nargs="+", default=(), metavar="BRANCH",
                   help="input branches to copy through, names or glob patterns (NanoAOD, PHYSLITE), e.g. "
                   "'HLT_*' Flag_goodVertices")
    add_on_error(p)
    add_no_progress(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)  # as the model was trained with (a difference is warned about)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from eventlm.cli import check_inputs, check_output, warn_skipped
    from eventlm.modeldir import ModelDir, check_device
    from eventlm.parallel import score_files_parallel

    from eventlm.cli import resolve_model

    resolve_model(args, "inputs")
    # everything is checked before the first event is read
    check_inputs(args.inputs)
    check_output(args.output, formats=("root", "parquet"), inputs=args.inputs)
    if args.confusion:
        from eventlm.extras import require_extra

        require_extra("plots", "--confusion")
        check_output_png(args.confusion)
    check_device(args.device)
    ModelDir(args.model).open_scorer(args.device)  # the model directory, checked whole
    from eventlm.cli.reader_options import options
    from eventlm.io import ReadReport

    report = ReadReport()
    summary = score_files_parallel(args.model, args.inputs, args.output, workers=args.workers,
                                   step_size=args.step_size, device=args.device, confusion=args.confusion,
                                   progress=not args.no_progress, on_error=args.on_error, report=report,
                                   max_events=args.max_events, reader=options(args),
                                   copy_branches=tuple(args.copy_branches))
    warn_skipped("eventlm.score", report, " (not scored, not written)")
    logging.getLogger("eventlm.score").info(
        "wrote %s: %d events in %.1f s (%.0f events/s)", summary["output"], summary["events"],
        summary["seconds"], summary["events_per_s"],
    )
    return 0


def check_output_png(path) -> None:
    from eventlm.atomic import check_location

    check_location(path)
