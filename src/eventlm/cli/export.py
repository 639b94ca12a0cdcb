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
    p.add_argument("--reference", metavar="EVENTS", help="event file whose first events go into the JSON "
                   "with their token ids and scores (a test vector for a C++ tokenizer)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export")
    p.add_argument("--mkdir", action="store_true", help="create the output directories if they do not exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from pathlib import Path

    from eventlm.cli import resolve_model
    from eventlm.errors import EventlmError
    from eventlm.export import export_onnx

    resolve_model(args)
    onnx = Path(args.onnx)
    preprocess = Path(args.preprocess) if args.preprocess else onnx.with_name("preprocess.json")
    if preprocess.resolve() == onnx.resolve():
        raise EventlmError(f"--preprocess {preprocess} is the ONNX file itself; give another path")
    for path in (onnx, preprocess):
        if not path.parent.is_dir():
            if not args.mkdir:
                raise EventlmError(f"{path}: the directory {path.parent} does not exist (--mkdir creates it)")
            path.parent.mkdir(parents=True, exist_ok=True)
    reference = None
    if args.reference:
        from eventlm.io import read_events

        reference = read_events(args.reference, max_events=8)
    out = export_onnx(args.model, args.onnx, preprocess=args.preprocess, which=args.which,
                      reference_events=reference)
    logging.getLogger("eventlm.export").info("wrote %s (%s objective) and %s", out["onnx"], out["objective"],
                                             out["preprocess"])
    return 0
