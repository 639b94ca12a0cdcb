"""Running :class:`~eventlm.analysis.processor.AnomalyProcessor` with coffea's ``processor.Runner``
(iterative, futures or dask executor), and turning a failed chunk back into eventlm's one-line error.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from pathlib import Path

from eventlm.analysis.config import AnalysisConfig
from eventlm.analysis.inputs import BACKGROUND, DATA
from eventlm.errors import EventlmError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def coffea_runner(executor: str = "iterative", workers: int = 2, chunksize: int = 25_000,
                  scheduler: str | None = None, progress: bool = True, retries: int = 0):
    """A ``coffea.processor.Runner`` for the named executor; a dask executor gets a local cluster
    (``workers`` single-threaded processes) unless ``scheduler`` names a running one.

    ``retries``: attempts per chunk after a failure (0 locally: a processing error is not flaky; on a
    cluster with remote files a few retries help)."""
    from coffea import processor

    from eventlm.io.schema import EventlmNanoAODSchema

    with contextlib.ExitStack() as stack:
        if not progress:
            stack.enter_context(_quiet_coffea_bars())
        if executor == "iterative":
            ex = processor.IterativeExecutor(status=progress, retries=retries)
        elif executor == "futures":
            ex = processor.FuturesExecutor(workers=workers, status=progress, retries=retries)
        elif executor == "dask":
            from distributed import Client, LocalCluster

            # distributed sets its own log levels on import: keep its bookkeeping quiet unless debugging
            cluster_logs = logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING
            logging.getLogger("distributed").setLevel(cluster_logs)
            if scheduler:
                client = stack.enter_context(Client(scheduler))
            else:
                cluster = stack.enter_context(
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                 silence_logs=cluster_logs)
                )
                client = stack.enter_context(Client(cluster))
            ex = processor.DaskExecutor(client=client, status=progress, retries=retries)
        else:
            raise ValueError(f"unknown executor {executor!r} (iterative, futures, dask)")
        yield processor.Runner(ex, schema=EventlmNanoAODSchema, chunksize=chunksize)


@contextlib.contextmanager
def _quiet_coffea_bars():
    """Silence coffea's rich progress bars: its executors draw them even with ``status=False``
    (coffea 2026.9: the flag only reaches the bar as an unused task field)."""
    from coffea import util

    console = getattr(util, "coffea_console", None)
    if console is None:  # a coffea without the shared console: nothing to silence
        yield
        return
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


def run_processor(config: AnalysisConfig, ntuples: dict[str, Path], model_dir: Path | None, *,
                  progress: bool = True, skim_dir=None, keep_columns: bool = False) -> dict:
    """Run the :class:`AnomalyProcessor` over ``{dataset: ntuple}`` with the configured executor.

    ``skim_dir``: where the workers write the scored events (one skim per chunk); ``keep_columns``:
    return per-event columns through the accumulator instead (or as well)."""
    from eventlm.analysis.processor import AnomalyProcessor

    known = [BACKGROUND, DATA, *(s.label for s in config.all_samples)]
    proc = AnomalyProcessor(
        config.regions,
        model=model_dir,
        score_column=config.threshold.score,
        score_bins=config.histograms.score_bins,
        score_range=config.histograms.score_range,
        variables=config.histograms.variables,
        known_processes=known,
        torch_threads=1 if config.run.executor != "iterative" else None,
        skim_dir=skim_dir,
        keep_columns=keep_columns,
    )
    fileset = {name: [str(path)] for name, path in ntuples.items()}
    run = config.run
    workers = run.workers
    if run.executor != "iterative" and not run.scheduler:  # local processes: no more than chunks or cores
        from eventlm.parallel import capped_workers

        workers = capped_workers(run.workers, n_chunks(ntuples.values(), run.chunksize), unit="chunk")
    log.info("coffea: %s executor, %d worker(s), chunks of %d events", run.executor, workers, run.chunksize)
    retries = 3 if run.scheduler else 0
    with coffea_runner(run.executor, workers, run.chunksize, run.scheduler, progress, retries) as runner:
        try:
            return runner(fileset, proc, treename="Events")
        except EventlmError:
            raise
        except Exception as err:  # noqa: BLE001 - coffea wraps a chunk's error in a plain Exception
            unwrapped = chunk_error(err)
            if unwrapped is None:
                raise
            raise unwrapped from None


def n_chunks(ntuples, chunksize: int) -> int:
    """The chunks coffea will cut the ntuples into (``Events`` entries / ``chunksize``, per file)."""
    import uproot

    total = 0
    for path in ntuples:
        with uproot.open(path) as f:
            total += -(-f["Events"].num_entries // chunksize)
    return total


def check_scheduler(address: str, source: str = "--scheduler", timeout: float = 5.0) -> None:
    """Fail fast (one line) when nothing listens at a dask scheduler's address, instead of dask's
    30 s wait and traceback after the inputs were already read and written."""
    import socket
    from urllib.parse import urlsplit

    from eventlm.errors import ConfigError

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"{source} {address!r}: expected a scheduler address like tcp://HOST:8786")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"{source} {address}: no dask scheduler answers there "
                          f"({err.strerror or type(err).__name__})") from None


def chunk_error(err: BaseException) -> EventlmError | None:
    """The eventlm error inside coffea's "Failed processing file: ..." wrapper, or None.

    The iterative executor keeps the original as ``__cause__``; the futures and dask executors pass
    only its repr, which is parsed (an eventlm error message names the file and the problem)."""
    if isinstance(err.__cause__, EventlmError):
        return err.__cause__
    match = re.search(r"The error was: (\w+)\((.*)\)\.?\s*$", str(err), re.S)
    if match is None or match.group(1) not in _EVENTLM_ERRORS:
        return None
    try:
        message = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        message = match.group(2)
    return EventlmError(str(message))


_EVENTLM_ERRORS = ("EventlmError", "EventFormatError", "TokenizationError", "CheckpointMismatchError")
