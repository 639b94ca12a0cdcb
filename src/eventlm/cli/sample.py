"""``eventlm sample MODEL --events N --seed S --out FILE``: generate events with a causal model."""

from __future__ import annotations

import argparse

from eventlm.cli import add_model, add_no_progress, positive_float, seed_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="generate events with a causal model",
        description="Draw N token sequences from the causal model in MODEL (the token grammar enforced: "
        "particles in token order, then the MET tokens, then the stop token), decode each token into "
        "values drawn inside its bins from the training background (MODEL/sampling.npz, written by "
        "`eventlm train`; --reference rebuilds it) and write the events (process 'generated') to OUT "
        "(.csv.gz, .root or .parquet). See docs/multitask.md.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="model directory from `eventlm train --objective causal`")
    add_model(p, "model directory from `eventlm train --objective causal`")
    p.add_argument("--events", "-n", type=int, required=True, metavar="N", help="events to generate")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S", help="the one seed of the tokens and values (default 0)")
    p.add_argument("--out", "-o", required=True, metavar="FILE", help="output file (.csv.gz, .root, .parquet)")
    p.add_argument("--temperature", type=positive_float, default=1.0, metavar="T", help="softmax temperature (default 1)")
    p.add_argument("--top-k", type=int, metavar="K", help="draw only from the K most likely allowed tokens")
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)  # how --reference is read (as the model was trained)
    p.add_argument("--reference", nargs="+", metavar="BACKGROUND",
                   help="the training background: (re)build MODEL/sampling.npz from its training split")
    p.add_argument("--first-id", type=int, default=0, metavar="ID", help="event id of the first event (default 0)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda or cuda:N")
    p.add_argument("--mkdir", action="store_true", help="create the output directory if it does not exist")
    add_no_progress(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from pathlib import Path

    from eventlm.cli import INT64, check_output, resolve_model
    from eventlm.cli.reader_options import read_with
    from eventlm.errors import EventlmError
    from eventlm.io import write_events
    from eventlm.sample import sample_events

    resolve_model(args)
    if args.mkdir:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    check_output(args.out)  # before the first event is drawn: a missing directory is an error
    if args.events < 0:
        raise EventlmError(f"--events must be >= 0, got {args.events}")
    low, high = INT64
    if not low <= args.first_id <= high - max(args.events - 1, 0):
        raise EventlmError(f"--first-id {args.first_id}: the ids of {args.events} events would not fit in int64 "
                           f"[{low}, {high}] (ids are never wrapped)")
    if args.top_k is not None and args.top_k < 1:
        raise EventlmError(f"--top-k must be >= 1, got {args.top_k}")
    t0 = time.perf_counter()
    events = sample_events(args.model, args.events, seed=args.seed, temperature=args.temperature, top_k=args.top_k,
                           reference=read_with(args, args.reference), device=args.device, first_id=args.first_id,
                           progress=not args.no_progress)
    write_events(events, args.out)
    seconds = time.perf_counter() - t0
    logging.getLogger("eventlm.sample").info("wrote %s: %d generated events in %.1f s", args.out, len(events), seconds)
    return 0
