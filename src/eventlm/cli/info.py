"""``eventlm info FILE...``: events, processes (counts, summed weights) and object multiplicities."""

from __future__ import annotations

import argparse

from eventlm.cli import add_on_error


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="summarise event files (events, processes, object multiplicities) or a model's card",
        description="Print, per file, the number of events, the processes with their event counts and "
        "summed weights, and the object multiplicities per type. Streams, so any size works. For a model "
        "directory, print its model card: reader options, training inputs, process mix, sum of weights and "
        "the training phase space (object counts, HT and MET ranges).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help=".csv, .csv.gz, .root or .parquet files, or "
                   "model directories")
    add_on_error(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eventlm.cli import check_inputs

    marks = ("model_card.json", "best.pt", "checkpoint.pt", "classifier.json")  # else: "is a directory"
    models = [f for f in args.files if Path(f).is_dir() and any((Path(f) / m).exists() for m in marks)]
    check_inputs([f for f in args.files if f not in models])
    from eventlm.cli.reader_options import options

    for i, path in enumerate(args.files):
        if i:
            print()
        print(model_info(path) if path in models else summarize(path, on_error=args.on_error, **options(args)))
    return 0


def model_info(path) -> str:
    """The model card of a model directory (``eventlm info MODEL``)."""
    from eventlm.card import format_card, read_card
    from eventlm.errors import ModelDirError
    from eventlm.modeldir import ModelDir

    ModelDir(path).check(calibration=False)  # a model directory, whole (one line if not)
    card = read_card(path)
    if card is None:
        raise ModelDirError(f"{path}: no model card (model_card.json): trained before eventlm wrote one; "
                            "retrain to record the reader options and the training phase space")
    return format_card(card, path)


def summarize(path, *, on_error: str = "raise", **read_options) -> str:
    """The ``info`` table of one file, as text."""
    from collections import Counter, defaultdict

    import awkward as ak
    import numpy as np

    from eventlm.events import Kind
    from eventlm.io import ReadReport, extra_fields, iter_events
    from eventlm.io.root import string_labels

    n_events = 0
    counts: Counter[str] = Counter()
    weights: defaultdict[str, float] = defaultdict(float)
    n_kinds = len(Kind)
    total = np.zeros(n_kinds, dtype=np.int64)
    with_any = np.zeros(n_kinds, dtype=np.int64)
    most = np.zeros(n_kinds, dtype=np.int64)
    max_objects = 0
    extras: list[str] = []
    report = ReadReport()
    if _empty_csv(path):  # what `convert` writes for zero events: the format has no header
        return f"{path}: 0 events (empty file)"
    for chunk in iter_events(path, on_error=on_error, report=report, **read_options):
        n_events += len(chunk)
        extras = extra_fields(chunk)
        labels = string_labels(chunk.process)
        w = ak.to_numpy(chunk.weight)
        names, inverse = np.unique(labels, return_inverse=True)
        for j, name in enumerate(names):
            counts[str(name)] += int(np.count_nonzero(inverse == j))
            weights[str(name)] += float(w[inverse == j].sum())
        kind = chunk.particles.kind
        max_objects = max(max_objects, int(ak.max(ak.num(kind), initial=0)))
        for k in Kind:
            per_event = ak.to_numpy(ak.sum(kind == int(k), axis=1))
            total[k] += per_event.sum()
            with_any[k] += np.count_nonzero(per_event)
            most[k] = max(most[k], int(per_event.max(initial=0)))

    lines = [f"{path}: {n_events} events"]
    if report.n_skipped:
        lines[0] += f" ({report.n_skipped} bad lines/entries skipped)"
    lines.append("")
    lines += _table(
        ["process", "events", "sum of weights"],
        [[name, f"{counts[name]}", f"{weights[name]:.6g}"] for name in sorted(counts)],
    )
    lines.append("")
    denom = max(n_events, 1)
    lines += _table(
        ["object", "total", "per event", "events with >= 1", "max per event"],
        [[k.name.lower(), f"{total[k]}", f"{total[k] / denom:.3f}", f"{with_any[k]}", f"{most[k]}"] for k in Kind],
    )
    lines.append(f"\nmost objects in one event: {max_objects}")
    if extras:
        lines.append(f"extra columns: {', '.join(extras)}")
    return "\n".join(lines)


def _empty_csv(path) -> bool:
    """A Dark Machines CSV (or .csv.gz) that holds no line at all."""
    import gzip
    from pathlib import Path

    path = Path(path)
    name = path.name.lower()
    if not path.is_file() or not (name.endswith(".csv") or name.endswith(".csv.gz")):
        return False
    if name.endswith(".csv"):
        return path.stat().st_size == 0
    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(1) == b""
    except (OSError, EOFError):
        return False  # a broken gzip: the reader says what is wrong


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def fmt(cells):
        first = f"{cells[0]:<{widths[0]}}"
        return "  ".join([first] + [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:])])

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
