"""``eventlm finetune MODEL --signal FILES --background FILES --out DIR``: a classifier on the transformer."""

from __future__ import annotations

import argparse

from eventlm.cli import add_model, add_no_progress, seed_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="train a signal-vs-background classifier on a pre-trained model",
        description="Put a small classifier head on the pooled representation of the pre-trained transformer "
        "in MODEL, train it (balanced binary cross entropy) on labelled signal and background events and "
        "write the classifier directory DIR. `eventlm score --model DIR` then writes its P(signal) as the "
        "column score_<name>. Background events of MODEL's test split are left out of the training. "
        "See docs/multitask.md.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="pre-trained model directory from `eventlm train`")
    add_model(p, "pre-trained model directory from `eventlm train`")
    p.add_argument("--signal", nargs="+", required=True, metavar="FILE", help="labelled signal event files")
    p.add_argument("--background", nargs="+", required=True, metavar="FILE", help="labelled background event files")
    p.add_argument("--out", required=True, metavar="DIR", help="classifier directory to write")
    p.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=False,
                   help="keep the pre-trained backbone fixed and train the head only (default: --no-freeze)")
    p.add_argument("--scratch", action="store_true", help="same architecture, random weights (a baseline)")
    p.add_argument("--epochs", type=int, default=10, metavar="N", help="training epochs (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, metavar="S", help="the one seed of the run (default 0)")
    p.add_argument("--max-signal", type=int, metavar="N", help="use N labelled signal events (a seeded subset)")
    p.add_argument("--max-background", type=int, metavar="N", help="use N background events (a seeded subset)")
    p.add_argument("--name", metavar="NAME", help="score column score_NAME (default: the name of DIR)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu, cuda or cuda:N")
    add_no_progress(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from eventlm.atomic import check_location, removed_on_error
    from eventlm.cli import resolve_model
    from eventlm.finetune import FinetuneError, finetune

    resolve_model(args)
    for flag in ("epochs", "max_signal", "max_background"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise FinetuneError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    check_location(args.out, directory=True)
    with removed_on_error(args.out):  # a failed run leaves no classifier directory behind
        from eventlm.cli.reader_options import read_with

        result = finetune(args.model, read_with(args, args.signal), read_with(args, args.background), args.out,
                          freeze=args.freeze,
                          epochs=args.epochs, seed=args.seed, max_signal=args.max_signal,
                          max_background=args.max_background, scratch=args.scratch, name=args.name,
                          progress=not args.no_progress, device=args.device)
    info = result.info
    logging.getLogger("eventlm.finetune").info(
        "wrote %s: column %s, validation AUC %.4f at epoch %d, %d signal / %d background events, %.0f s",
        args.out, info["column"], info["val_auc"], info["best_epoch"], info["n_signal"], info["n_background"],
        info["seconds"],
    )
    return 0
