"""The ``eventlm`` command line: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (which registers the parser and sets
``func``) and imports its heavy dependencies inside the function it runs, so ``eventlm --help`` is fast.
Errors that eventlm raises on purpose become a one-line message and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from eventlm._version import __version__
from eventlm.errors import EventlmError

#: Subcommands in the order ``eventlm --help`` lists them (pipeline order).
SUBCOMMANDS = ("info", "convert", "generate", "tokens", "train", "sample", "finetune", "score", "analyze", "demo")
#: Third-party loggers kept at WARNING unless ``--verbose``.
NOISY_LOGGERS = ("distributed", "dask", "numba", "fsspec", "coffea")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventlm",
        description="Masked-token transformer anomaly detection for LHC events.",
    )
    parser.add_argument("--version", action="version", version=f"eventlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"eventlm.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"eventlm.cli.{name}":
                raise
            continue  # tests/test_cli.py requires every subcommand to be present
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the cluster's own bookkeeping is not news to the user
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except EventlmError as err:
        print(f"eventlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"eventlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eventlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``eventlm info big.root | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as the shell reports it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
