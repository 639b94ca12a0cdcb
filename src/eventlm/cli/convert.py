"""``eventlm convert IN OUT``: convert events between Dark Machines CSV, ROOT and Parquet (streaming)."""

from __future__ import annotations

import argparse

from eventlm.cli import add_on_error, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert events between .csv/.csv.gz, .root and .parquet",
        description="Convert events between formats (by suffix), streaming chunk by chunk. "
        "Extra columns (e.g. scores) cannot go into CSV and are dropped there, with a warning.",
    )
    p.add_argument("input", metavar="IN", help="input file (.csv, .csv.gz, .root, .parquet)")
    p.add_argument("output", metavar="OUT", help="output file; the format follows its suffix")
    add_on_error(p)
    p.add_argument("--step-size", type=positive_int, default=100_000, metavar="N", help="events per chunk")
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from tqdm import tqdm

    from eventlm.errors import EventFormatError
    from eventlm.cli.reader_options import options
    from eventlm.io import EventWriter, ReadReport, detect_format, extra_fields, iter_events

    log = logging.getLogger("eventlm.convert")
    from eventlm.cli import check_inputs, check_output

    src, dst = Path(args.input), Path(args.output)
    check_inputs([src])
    check_output(dst, inputs=[src])
    to_csv = detect_format(dst) == "csv"
    report = ReadReport()
    large = src.stat().st_size > 20 << 20
    dropped: list[str] = []
    from eventlm.progress import count_events

    total = count_events([src]) if large else None  # ROOT and Parquet know their entries; CSV does not
    with EventWriter(dst) as out, tqdm(total=total, unit=" events", disable=not large or None, desc=src.name) as bar:
        for chunk in iter_events(src, step_size=args.step_size, on_error=args.on_error, report=report,
                                 **options(args)):
            if to_csv and extra_fields(chunk):
                dropped = extra_fields(chunk)
                chunk = chunk[[f for f in chunk.fields if f not in dropped]]
            try:
                out.write(chunk)
            except ValueError as err:  # what the output format cannot hold (a ',' in a label, for CSV)
                raise EventFormatError(dst, f"cannot write these events: {err}") from None
            bar.update(len(chunk))
    if dropped:
        log.warning("CSV has no place for extra columns; dropped %s", ", ".join(dropped))
    skipped = f", skipped {report.n_skipped} bad lines/entries" if report.n_skipped else ""
    print(f"wrote {out.n_events} events to {dst}{skipped}")
    return 0
