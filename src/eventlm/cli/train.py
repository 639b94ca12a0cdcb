"""``eventlm train``: train the transformer on background events and write a model directory."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the transformer on background events",
        description="Split BACKGROUND into train/validation/test, fit the tokenizer on the training part, "
        "train the transformer and write the model directory DIR (see docs/model.md). "
        "Flags override the --config file; --resume continues an interrupted run with its saved config.",
    )
    p.add_argument("background", nargs="+", metavar="BACKGROUND", help="background event files (CSV, ROOT, Parquet)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--config", metavar="RUN.toml", help="run configuration (TOML); defaults otherwise")
    p.add_argument("--tokenizer", choices=("lut", "vqvae", "graph"), help="tokenizer kind")
    p.add_argument("--objective", choices=("masked", "causal"), help="training objective")
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument("--max-events", type=int, metavar="N", help="read at most N background events")
    p.add_argument("--seed", type=int, metavar="S", help="the one seed of the run")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from eventlm.config import RunConfig, load_config
    from eventlm.train import train

    config = load_config(args.config) if args.config else RunConfig()
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    if args.device is not None:
        config = config.replace(device=args.device)
    if args.tokenizer is not None and args.tokenizer != config.tokenizer.kind:
        config = config.replace(tokenizer={"kind": args.tokenizer, "params": {}})
    overrides = {k: v for k, v in (("objective", args.objective), ("epochs", args.epochs),
                                   ("max_events", args.max_events)) if v is not None}
    if overrides:
        config = config.replace(train=overrides)
    result = train(config, args.background, args.out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from eventlm.score import calibrate

    calibrate(args.out, args.background)  # anomaly_score_calibrated (docs/method.md)
    logging.getLogger("eventlm.train").info(
        "wrote %s: %d epochs, best validation loss %.4f at epoch %d (unigram entropy %.4f), %.0f s",
        result.out_dir, result.epochs_run, result.best_val_loss, result.best_epoch,
        result.metrics["unigram_entropy"], result.seconds,
    )
    return 0
