"""``eventlm train``: train the transformer on background events and write a model directory."""

from __future__ import annotations

import argparse

from eventlm.cli import add_no_progress, add_on_error, positive_int, seed_int

#: The smallest value of the numeric run-config keys (``(section, key) -> (minimum, strict)``).
RANGES = {
    ("train", "epochs"): (1, False), ("train", "batch_size"): (1, False), ("train", "lr"): (0, True),
    ("train", "min_lr"): (0, False), ("train", "weight_decay"): (0, False), ("train", "warmup_steps"): (0, False),
    ("train", "grad_clip"): (0, False), ("train", "patience"): (1, False), ("train", "max_events"): (0, False),
    ("train", "bucket_batches"): (1, False), ("train", "num_workers"): (0, False), ("train", "threads"): (0, False),
    ("train", "score_batch_events"): (1, False), ("model", "n_layer"): (1, False), ("model", "n_head"): (1, False),
    ("model", "n_embd"): (1, False), ("model", "dropout"): (0, False), ("model", "max_len"): (1, False),
}
#: Options that may not differ from the interrupted run's when resuming (flag -> (section, key)).
RESUME_FIXED = {"--epochs": ("train", "epochs"), "--objective": ("train", "objective"),
                "--max-events": ("train", "max_events"), "--seed": (None, "seed"),
                "--tokenizer": ("tokenizer", "kind")}


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
    p.add_argument("--epochs", type=positive_int, metavar="N")
    p.add_argument("--max-events", type=positive_int, metavar="N", help="read at most N background events")
    p.add_argument("--seed", type=seed_int, metavar="S", help="the one seed of the run")
    p.add_argument("--event-weights", choices=("none", "abs", "signed"),
                   help="event weights in the loss ([train] event_weights; default none: every event once)")
    p.add_argument("--device", metavar="DEV", help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    add_on_error(p)
    add_no_progress(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)  # recorded in the model card (model_card.json; `eventlm info MODEL` prints it)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os

    from eventlm.atomic import check_location, removed_on_error
    from eventlm.cli import check_inputs, warn_skipped
    from eventlm.config import RunConfig, load_config
    from eventlm.errors import ConfigError
    from eventlm.modeldir import LAST, check_device
    from eventlm.train import train

    check_inputs(args.background)
    try:
        config = load_config(args.config) if args.config else RunConfig()
    except (ValueError, TypeError) as err:  # wrong key, type or value in the TOML
        raise ConfigError(str(err)) from None
    except OSError as err:
        raise ConfigError(f"{args.config}: cannot read the config ({err.strerror or err})") from None
    if args.seed is not None:
        config = config.replace(seed=args.seed)
    if args.device is not None:
        config = config.replace(device=args.device)
    if args.tokenizer is not None and args.tokenizer != config.tokenizer.kind:
        config = config.replace(tokenizer={"kind": args.tokenizer, "params": {}})
    overrides = {k: v for k, v in (("objective", args.objective), ("epochs", args.epochs),
                                   ("event_weights", args.event_weights),
                                   ("max_events", args.max_events)) if v is not None}
    if overrides:
        config = config.replace(train=overrides)
    validate_run_config(config, args.config or "the run config")
    check_location(args.out, directory=True)
    check_device(config.device)
    if args.resume:
        check_resume(args, config)
    from eventlm.cli.reader_options import options
    from eventlm.io import read_events

    reader = options(args)
    # read once here, with the reader options (training, calibration and the sampling table use the
    # same events); bad lines/entries left out and reported with --on-error skip
    background, report = read_events(args.background, on_error=args.on_error, return_report=True,
                                     max_events=config.train.max_events or None, **reader)
    warn_skipped("eventlm.train", report, " of the background")
    # a failed run leaves no model directory behind (one stopped by Ctrl-C or SIGTERM keeps it when
    # --resume can continue it)
    with removed_on_error(args.out, keep_interrupted=lambda path: (path / LAST).exists()):
        result = train(config, background, args.out, resume=args.resume, progress=not args.no_progress,
                       reader=reader, sources=args.background)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0
        from eventlm.apply import calibrate

        calibrate(args.out, background)  # anomaly_score_calibrated (docs/method.md)
        if config.train.objective == "causal" and config.tokenizer.kind == "lut":
            from eventlm.sample import prepare_sampling

            prepare_sampling(args.out, background)  # what `eventlm sample` needs, while the background is at hand
        from eventlm.extras import missing_of

        if result.metrics["epoch"] and not missing_of("plots"):
            from eventlm.plotting.training import plot_loss

            plot_loss(result.metrics, result.out_dir / "loss.png")
    if result.metrics["epoch"] and missing_of("plots"):
        logging.getLogger("eventlm.train").info(
            "loss.png not drawn: matplotlib and mplhep are not installed (pip install 'eventlm[plots]')")
    logging.getLogger("eventlm.train").info(
        "wrote %s: %d epochs, best validation loss %.4f at epoch %d (unigram entropy %.4f), %.0f s",
        result.out_dir, result.epochs_run, result.best_val_loss, result.best_epoch,
        result.metrics["unigram_entropy"], result.seconds,
    )
    return 0


def validate_run_config(config, source: str) -> None:
    """Types and ranges of every run-config key, before any work starts (one-line :class:`ConfigError`)."""
    import dataclasses
    import math
    import typing

    from eventlm.errors import ConfigError

    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if not dataclasses.is_dataclass(value):
            _check_type(source, section.name, value, typing.get_type_hints(type(config))[section.name])
            continue
        hints = typing.get_type_hints(type(value))
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            _check_type(source, f"[{section.name}] {f.name}", v, hints[f.name])
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{source}: [{section.name}] {f.name} = {v!r} must be a finite number")
            bound = RANGES.get((section.name, f.name))
            if bound is not None:
                low, strict = bound
                if v < low or (strict and v == low):
                    raise ConfigError(f"{source}: [{section.name}] {f.name} = {v!r} must be "
                                      f"{'>' if strict else '>='} {low}")
    _check_consistency(config, source)


def _check_consistency(config, source: str) -> None:
    """Values that are each in range but do not fit together (or the generators' limits)."""
    from eventlm.cli import MAX_SEED
    from eventlm.errors import ConfigError
    from eventlm.tokenize.particles import DEFAULT_MAX_PARTICLES

    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"{source}: seed = {config.seed} must be in [0, 2**63 - 1]")
    model = config.model
    if model.dropout >= 1:
        raise ConfigError(f"{source}: [model] dropout = {model.dropout} must be < 1")
    if model.n_embd % model.n_head:
        raise ConfigError(f"{source}: [model] n_embd = {model.n_embd} is not a multiple of n_head = {model.n_head}")
    if model.position == "rotary" and (model.n_embd // model.n_head) % 2:
        raise ConfigError(f"{source}: [model] n_embd / n_head = {model.n_embd // model.n_head}: the rotary "
                          "position embedding needs an even head dimension")
    if model.position == "learned":
        max_particles = config.tokenizer.params.get("max_particles", DEFAULT_MAX_PARTICLES)
        longest = None if max_particles is None else max_particles + 4  # BOS, particles, 2 MET tokens, EOS
        if longest is not None and model.max_len < longest:
            raise ConfigError(f"{source}: [model] max_len = {model.max_len} is shorter than the longest token "
                              f"sequence ({longest}: BOS, {max_particles} particles, MET, EOS) that position = "
                              "\"learned\" must embed")
    from eventlm.train import EVENT_WEIGHTS

    if config.train.event_weights not in EVENT_WEIGHTS:
        raise ConfigError(f"{source}: [train] event_weights = {config.train.event_weights!r} must be one of "
                          f"{', '.join(EVENT_WEIGHTS)}")


def _check_type(source: str, key: str, value, hint) -> None:
    import types
    import typing

    from eventlm.errors import ConfigError

    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return
        if t is bool and isinstance(value, bool):
            return
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if t is str and isinstance(value, str):
            return
        if t in (dict, list, tuple) or typing.get_origin(t) in (dict, list, tuple):
            origin = typing.get_origin(t) or t
            if isinstance(value, origin):
                return
        if t not in (bool, int, float, str, type(None), dict, list, tuple) and typing.get_origin(t) is None:
            return  # a type this check does not know: left to the dataclass
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{source}: {key} = {value!r} must be {names}")


def check_resume(args, config) -> None:
    """``--resume`` continues the interrupted run with its own settings: a flag that asks for another
    value (``--epochs 20`` on a run of 8) is refused, not silently ignored."""
    from pathlib import Path

    from eventlm.errors import ConfigError
    from eventlm.modeldir import LAST, read_checkpoint

    path = Path(args.out) / LAST
    if not path.exists():
        return  # nothing to resume: a new run (train() logs it)
    saved = read_checkpoint(path)["run_config"]
    given = {"--epochs": args.epochs, "--objective": args.objective, "--max-events": args.max_events,
             "--seed": args.seed, "--tokenizer": args.tokenizer}
    for flag, value in given.items():
        if value is None:
            continue
        section, key = RESUME_FIXED[flag]
        before = saved[key] if section is None else saved[section][key]
        if value != before:
            raise ConfigError(
                f"{flag} {value}: the run in {args.out} was started with {before}; --resume continues it "
                "with its own settings (the learning-rate schedule depends on them): drop the flag, "
                "or train into a new --out"
            )
    if args.config:  # the file with the flags applied must be the run's config (the device may differ)
        differ = _differences(config.to_dict(), dict(saved))
        if differ:
            raise ConfigError(f"--config {args.config}: differs from the run config of {args.out} "
                              f"({', '.join(differ[:5])}); --resume continues that run with its own settings")


def _differences(mine: dict, theirs: dict) -> list[str]:
    """Keys (``seed``, ``[train] epochs``) whose values differ, the device left out."""
    import json

    mine, theirs = (json.loads(json.dumps(d, sort_keys=True, default=str)) for d in (mine, theirs))
    out = []
    for section in sorted(set(mine) | set(theirs)):
        a, b = mine.get(section), theirs.get(section)
        if section == "device" or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"[{section}] {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(section)
    return out
