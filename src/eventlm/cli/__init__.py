"""The ``eventlm`` command line: one subcommand per module in this package.

Each subcommand module defines ``add_parser(subparsers)`` (which registers the parser and sets
``func``) and imports its heavy dependencies inside the function it runs, so ``eventlm --help`` is fast.
Errors that eventlm raises on purpose, a file that cannot be opened (missing, a directory, no
permission) and a bad option become a one-line message and exit status 2 (with ``-v`` the traceback
too); anything else is a bug and keeps its traceback. SIGTERM ends a command like Ctrl-C (status 143),
so an output being written is removed, never left as a hidden temporary file.

The helpers below are shared by the subcommands: option types (:func:`positive_int`) and the checks
of input files and output paths that run before any work starts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from eventlm._version import __version__
from eventlm.errors import EventlmError, one_line

#: Subcommands in the order ``eventlm --help`` lists them (pipeline order).
SUBCOMMANDS = ("info", "convert", "generate", "tokens", "train", "sample", "finetune", "score", "export", "analyze",
               "demo")
#: Third-party loggers kept at WARNING unless ``--verbose``.
NOISY_LOGGERS = ("distributed", "dask", "numba", "fsspec", "coffea")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (``eventlm train: error: argument --epochs: ...``)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


#: The largest seed: numpy's and torch's generators both take every integer in [0, 2**63 - 1].
MAX_SEED = 2**63 - 1
#: The range of an event id (int64): an id beyond it is refused, never wrapped.
INT64 = (-(2**63), 2**63 - 1)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"a seed must be in [0, 2**63 - 1], got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (``nan`` and ``inf`` refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so ``with`` blocks clean up as on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def add_on_error(parser: argparse.ArgumentParser) -> None:
    """``--on-error raise|skip``: what a bad line or entry of an input does."""
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                        help="bad lines/entries: stop with an error (default) or skip them (counted and reported)")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (without a terminal there is one line per file instead of a bar)")


def add_model(parser: argparse.ArgumentParser, help: str = "model directory from `eventlm train`") -> None:
    """The model directory, the same way in every subcommand: first positional argument ``MODEL`` or
    ``--model MODEL`` (either; :func:`resolve_model` takes it out of the positionals)."""
    parser.add_argument("--model", dest="model_option", metavar="MODEL", help=f"{help} (or as the first argument)")


def resolve_model(args, positionals: str | None = None) -> None:
    """Set ``args.model`` from ``--model`` or the first positional argument.

    ``positionals`` names a list attribute (e.g. the input files) whose first entry is the model when
    ``--model`` is absent; without it the positional ``model`` attribute is used.
    """
    from eventlm.errors import EventlmError

    option = getattr(args, "model_option", None)
    if positionals is None:
        given = getattr(args, "model", None)
        if option is not None and given is not None:
            raise EventlmError(f"the model is given twice ({given} and --model {option})")
        args.model = option if option is not None else given
    elif option is not None:
        args.model = option
    else:
        items = list(getattr(args, positionals))
        if len(items) < 2 or not Path(items[0]).is_dir():
            raise EventlmError("give the model directory: eventlm "
                               f"{args.command} MODEL {positionals.upper()}... (or --model MODEL)")
        args.model = items[0]
        setattr(args, positionals, items[1:])
    if args.model is None:
        raise EventlmError(f"give the model directory: eventlm {args.command} MODEL ... (or --model MODEL)")


def warn_skipped(logger: str, report, what: str = "") -> None:
    """Log (warning) how many bad lines/entries ``--on-error skip`` left out, and the first five."""
    if report.n_skipped:
        first = "; ".join(str(report).splitlines()[:5]) + (" ..." if report.n_skipped > 5 else "")
        logging.getLogger(logger).warning("skipped %d bad lines/entries%s: %s", report.n_skipped, what, first)


def check_inputs(paths) -> list[Path]:
    """The input files, checked before any work starts: they exist, are regular files (not a
    directory, FIFO or symlink loop), can be read, have a known suffix. Raises
    :class:`eventlm.errors.EventFormatError` naming the first bad one."""
    from eventlm.errors import EventFormatError
    from eventlm.io import detect_format, input_problem

    checked = []
    for path in map(Path, paths):
        problem = input_problem(path)
        if problem:
            raise EventFormatError(path, problem)
        if not os.access(path, os.R_OK):
            raise EventFormatError(path, "cannot be read (permission denied)")
        detect_format(path)
        checked.append(path)
    return checked


def check_output(path, formats=("csv", "root", "parquet"), inputs=()) -> Path:
    """An output event file checked before any work starts: a known suffix among ``formats``, not
    one of ``inputs``, and a location :func:`eventlm.atomic.check_location` accepts (a regular
    file or nothing, in an existing directory that can be written)."""
    from eventlm.atomic import check_location
    from eventlm.errors import EventFormatError
    from eventlm.io import detect_format

    path = Path(path)
    fmt = detect_format(path)
    if fmt not in formats:
        raise EventFormatError(path, f"cannot write {fmt.upper()} here (write {' or '.join(formats)})")
    check_location(path)
    for src in map(Path, inputs):
        if src.exists() and path.exists() and src.resolve() == path.resolve():
            raise EventFormatError(path, "output is the input file")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="eventlm",
        description="Transformer anomaly detection for LHC events: a causal (default) or masked-token "
        "language model of tokenized events scores how improbable each event is.",
    )
    parser.add_argument("--version", action="version", version=f"eventlm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages and show tracebacks (also accepted after the subcommand)")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _take_verbose(argv)
    args = parser.parse_args(argv)
    args.verbose = args.verbose or verbose
    previous = _install_sigterm()
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _take_verbose(argv: list[str]) -> bool:
    """``-v``/``--verbose`` anywhere on the command line (argparse accepts it only before the
    subcommand): taken out of ``argv`` (up to a ``--``), True if it was there."""
    end = argv.index("--") if "--" in argv else len(argv)
    found = [i for i in range(end) if argv[i] in ("-v", "--verbose")]
    for i in reversed(found):
        del argv[i]
    return bool(found)


class OnceFilter(logging.Filter):
    """Each log message once per command: a reader that says the same thing for every file chunk, or
    a file read twice (a warm-up, then the work), says it once."""

    def __init__(self):
        super().__init__()
        self.seen: set = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def _install_sigterm():
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        return None


def _error(args, err) -> int:
    if args.verbose:
        traceback.print_exc()
    print(f"eventlm {args.command}: error: {one_line(err)}", file=sys.stderr)
    return 2


def _run(args) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # the cluster's own bookkeeping is not news to the user
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    filters = [(handler, OnceFilter()) for handler in logging.getLogger().handlers]  # one per handler
    for handler, once in filters:
        handler.addFilter(once)
    try:
        return _call(args)
    finally:
        for handler, once in filters:
            handler.removeFilter(once)


def _call(args) -> int:
    try:
        return int(args.func(args) or 0)
    except EventlmError as err:
        return _error(args, err)
    except BrokenPipeError:  # the reader went away (``eventlm info big.root | head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as the shell reports it
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        # a path the user gave that cannot be opened: a user error, not a bug
        return _error(args, err)
    except OSError as err:
        from eventlm.atomic import WRITE_FAULTS

        if err.errno not in WRITE_FAULTS:  # full disk, I/O error, read-only file system: said in one line
            raise
        return _error(args, err)
    except KeyboardInterrupt:
        print(f"eventlm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"eventlm {args.command}: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
