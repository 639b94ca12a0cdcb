"""``eventlm export``: the model as an ONNX graph for C++ frameworks (CMSSW, Athena)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX",
        description="Write the scoring graph of the model in DIR as ONNX (dynamic batch and token axes; "
        "input token_ids float32 (batch, tokens) 0-padded; outputs nll_sum, nll_mean, n_terms, token_nll) "
        "and a preprocess.json with the tokenizer's bins and special ids. See docs/export.md.",
    )
    p.add_argument("model", metavar="DIR", help="model directory from `eventlm train`")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--preprocess", metavar="JSON", help="the preprocessing JSON (default: preprocess.json "
                   "beside OUT.onnx)")
    p.add_argument("--reference", metavar="EVENTS", help="event file whose first events go into the JSON "
                   "with their token ids and scores (a test vector for a C++ tokenizer)")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from eventlm.export import export_onnx

    reference = None
    if args.reference:
        from eventlm.io import read_events

        reference = read_events(args.reference, max_events=8)
    out = export_onnx(args.model, args.onnx, preprocess=args.preprocess, which=args.which,
                      reference_events=reference)
    logging.getLogger("eventlm.export").info("wrote %s (%s objective) and %s", out["onnx"], out["objective"],
                                             out["preprocess"])
    return 0
