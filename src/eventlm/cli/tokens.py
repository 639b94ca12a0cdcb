"""``eventlm tokens FILE... --tokenizer PATH [--out DIR]``: what the tokens look like.

Prints, per process, how much of the vocabulary the events use and the most frequent tokens, and
draws the token frequency of each process on one plot (``token_frequency.png``); for learned
tokenizers also the decoded-vs-input pT, eta, phi (``resolution_*.png``) and their widths.
``--fit lut|vqvae|graph`` fits a new tokenizer on the first FILE (background!) instead of loading one,
and saves it to ``DIR/tokenizer.json``.
"""

from __future__ import annotations

import argparse

from eventlm.cli import add_on_error, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "tokens",
        help="vocabulary use and token-frequency plots of a tokenizer on event files",
        description="Tokenize FILEs, print vocabulary use (tokens used / vocabulary, top tokens) per "
        "process and draw the token frequency of each process on one plot (plus input-vs-decoded "
        "resolution plots for learned tokenizers).",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="event files (.csv, .csv.gz, .root, .parquet)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokenizer", metavar="PATH",
                     help="tokenizer JSON, or a model directory (its tokenizer.json, checked against its checkpoint)")
    src.add_argument("--fit", choices=("lut", "vqvae", "graph"),
                     help="fit a new tokenizer of this kind on the first FILE (background) and save it")
    p.add_argument("--out", metavar="DIR", default=None, help="write the plots (and a fitted tokenizer) here")
    p.add_argument("--max-events", type=positive_int, default=None, metavar="N", help="read at most N events per file")
    p.add_argument("--top", type=positive_int, default=10, metavar="K", help="list the K most frequent tokens")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs with --fit vqvae/graph")
    add_on_error(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import contextlib

    from eventlm.atomic import removed_on_error

    with removed_on_error(args.out) if args.out else contextlib.nullcontext():  # a failed run leaves no --out
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import awkward as ak
    import numpy as np

    from eventlm.cli.reader_options import options
    from eventlm.io import read_events

    reader = options(args)
    from eventlm.tokenize import get_tokenizer

    from eventlm.atomic import check_location
    from eventlm.cli import check_inputs
    from eventlm.errors import EventFormatError

    check_inputs(args.files)
    tokenizer = None if args.fit else _load(args.tokenizer)
    out = Path(args.out) if args.out else None
    if out:
        check_location(out, directory=True)
    samples = []
    for path in args.files:
        events, report = read_events(path, max_events=args.max_events, on_error=args.on_error, return_report=True,
                                     **reader)
        if report.n_skipped:
            print(f"{path}: skipped {report.n_skipped} bad lines/entries")
        samples.append(events)
    if args.fit and not len(samples[0]):
        raise EventFormatError(args.files[0], "no events to fit a tokenizer on")
    if not sum(len(s) for s in samples):
        raise EventFormatError(args.files[0] if len(args.files) == 1 else ", ".join(args.files),
                               "no events: nothing to tokenize")
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if args.fit:
        tokenizer = get_tokenizer(args.fit)
        fit_kwargs = {} if args.fit == "lut" else {"epochs": args.epochs}
        tokenizer.fit(samples[0], **fit_kwargs)
        if out:
            print(f"fitted {args.fit} tokenizer on {args.files[0]}: saved {tokenizer.save(out / 'tokenizer.json')}")

    n_ids = tokenizer.vocab_size
    counts: dict[str, np.ndarray] = {}
    events_by_process: dict[str, list] = {}
    for path, events in zip(args.files, samples):
        if not len(events):
            print(f"{path}: 0 events")
            continue
        tokens = tokenizer.encode(events)
        process = np.asarray(ak.to_list(events.process), dtype=object)
        for name in dict.fromkeys(process.tolist()):
            mask = process == name
            c = np.bincount(ak.to_numpy(ak.flatten(tokens[mask])), minlength=n_ids)[:n_ids]
            counts[name] = counts.get(name, 0) + c
            events_by_process.setdefault(name, []).append(events[mask])

    print(f"tokenizer: {tokenizer.kind}, vocabulary {tokenizer.vocab_size} ids "
          f"({tokenizer.n_content} content + PAD/MASK/BOS/EOS), fingerprint {tokenizer.fingerprint()}")
    label = getattr(tokenizer, "token_label", str)
    total = sum(counts.values())
    for name, c in [*counts.items(), ("all", total)]:
        used = int((c[1:tokenizer.n_content + 1] > 0).sum())
        n_tok = int(c.sum())
        top = np.argsort(c, kind="stable")[::-1][: args.top]
        top_text = ", ".join(f"{int(t)} [{label(int(t))}] {c[t] / max(n_tok, 1):.1%}" for t in top if c[t] > 0)
        print(f"{name}: {n_tok:,} tokens, {used}/{tokenizer.n_content} content ids used "
              f"({used / tokenizer.n_content:.0%}); top: {top_text}")

    if out:
        from eventlm.plotting.tokens import plot_resolution, plot_token_frequency

        boundaries = []
        if tokenizer.n_met_tokens:
            first_met = tokenizer.n_content - tokenizer.met.n_tokens + 1
            boundaries = [(first_met, "MET"), (first_met + tokenizer.met.n_met, r"MET $\phi$")]
        path = plot_token_frequency(counts, out / "token_frequency.png", n_content=tokenizer.n_content,
                                    boundaries=boundaries, title=f"{tokenizer.kind} tokenizer")
        print(f"wrote {path}")
        if hasattr(tokenizer, "resolution_report") and len(samples[0]):
            background = samples[0]
            report = tokenizer.resolution_report(background)
            print("resolution on " + args.files[0] + ": " + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()))
            for p in plot_resolution(tokenizer.resolution_arrays(background), out):
                print(f"wrote {p}")
    return 0


def _load(path):
    """A tokenizer from its JSON file, or from a model directory (checked against its checkpoint)."""
    from pathlib import Path

    from eventlm.errors import EventFormatError
    from eventlm.tokenize import load_tokenizer

    path = Path(path)
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise EventFormatError(path, "--tokenizer: a directory without tokenizer.json (give the JSON file "
                                         "or a model directory)")
        if (path / "best.pt").exists() or (path / "checkpoint.pt").exists():
            from eventlm.modeldir import ModelDir

            return ModelDir(path).load_tokenizer()
        path = path / "tokenizer.json"
    if not path.exists():
        raise EventFormatError(path, "--tokenizer: no such file")
    return load_tokenizer(path)
