"""``eventlm export``: the model as an ONNX graph for C++ frameworks (CMSSW, Athena)."""

from __future__ import annotations

import argparse

from eventlm.cli import add_model


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX",
        description="Write the scoring graph of the model in MODEL as ONNX (dynamic batch and token axes; "
        "input token_ids float32 (batch, tokens) 0-padded; outputs nll_sum, nll_mean, n_terms, token_nll) "
        "and preprocess.json: the whole preprocessing as data (schema_version 2: categories, order, "
        "truncation, phi reference, bins, token ids, selection, object-count term, calibration) with "
        "reference vectors. See docs/export.md.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="model directory from `eventlm train`")
    add_model(p)
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--preprocess", metavar="JSON", help="the preprocessing JSON (default: preprocess.json "
                   "beside OUT.onnx)")
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)  # how --reference is read
    p.add_argument("--reference", metavar="EVENTS", help="event file whose first events go into the JSON "
                   "with their token ids and scores (a test vector for a C++ tokenizer)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export")
    p.add_argument("--mkdir", action="store_true", help="create the output directories if they do not exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from pathlib import Path

    from eventlm.atomic import check_location, removed_on_error
    from eventlm.cli import resolve_model
    from eventlm.errors import EventlmError
    from eventlm.export import export_onnx

    resolve_model(args)
    onnx = Path(args.onnx)
    preprocess = Path(args.preprocess) if args.preprocess else onnx.with_name("preprocess.json")
    for path in (onnx, preprocess):  # --mkdir: a missing directory is created
        if not args.mkdir and not path.parent.exists():
            raise EventlmError(f"{path}: directory {path.parent} does not exist (--mkdir creates it)")
        check_location(path.parent if args.mkdir and not path.parent.is_dir() else path,
                       directory=args.mkdir and not path.parent.is_dir())
    if preprocess.resolve() == onnx.resolve():
        raise EventlmError(f"--preprocess {preprocess} is the ONNX file itself; give another path")
    reference = None
    if args.reference:
        from eventlm.io import read_events

        from eventlm.cli.reader_options import options

        reference = read_events(args.reference, max_events=8, **options(args))
    # the ONNX file and its JSON come together or not at all (a full disk at the second removes the first)
    with removed_on_error(onnx), removed_on_error(preprocess):
        for path in (onnx, preprocess):
            path.parent.mkdir(parents=True, exist_ok=True)
        out = export_onnx(args.model, args.onnx, preprocess=args.preprocess, which=args.which,
                          reference_events=reference)
    logging.getLogger("eventlm.export").info("wrote %s (%s objective) and %s", out["onnx"], out["objective"],
                                             out["preprocess"])
    return 0

