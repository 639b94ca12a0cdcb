"""Scoring on several processes: ``eventlm score --workers N``.

The main process reads the input in steps and writes the output, exactly as
:func:`eventlm.apply.score_files` does with one process; only the scoring of each step is handed to
N worker processes, each with one torch thread (on this small model one thread per process is
faster than several threads in one). A step is cut into pieces of ``piece_events`` events; the
workers score the pieces as they come free and the scores are joined back in input order, so every
input event gets exactly one score, in order, whatever the number of workers.

Workers are started with ``spawn`` (safe with torch's thread pools, and the same on Linux, macOS and
Windows); each loads the model once and scores the first 64 input events as a warm-up (first-call
costs), before the first step is read; that start-up time is reported apart (``startup_seconds``).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import awkward as ak
import numpy as np

#: Events per piece handed to a worker (small enough to balance the load, large enough to batch).
PIECE_EVENTS = 2_000

_WORKER_SCORER = None  # the scorer of this worker process (ModelDir.open_scorer: any kind of model)

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def capped_workers(requested: int, n_work: int, cores: int | None = None, *, unit: str = "event") -> int:
    """The worker processes worth starting: at most one per usable core (each worker runs one torch
    thread) and one per piece of work (an input event for ``score``: a piece holds at least one;
    a chunk for coffea's executors); one line says so when that is fewer than ``requested``.
    ``n_work``: counted at least up to ``min(requested, cores)``."""
    cores = usable_cores() if cores is None else cores
    workers = max(1, min(requested, n_work, cores))
    if workers < requested:
        why = f"{cores} usable core(s)" if workers == cores else f"the input holds {n_work} {unit}(s)"
        log.warning("--workers %d: starting %d worker process(es) (%s)", requested, workers, why)
    return workers


def _start_worker(model_dir: str, device: str, which: str, batch_events, warmup) -> None:
    from eventlm.modeldir import ModelDir

    global _WORKER_SCORER
    _WORKER_SCORER = ModelDir(model_dir).open_scorer(device, which=which, batch_events=batch_events, threads=1)
    _WORKER_SCORER.tokenizer  # load now, not on the first piece  # noqa: B018
    if warmup is not None:  # first-call costs (compiled tokenizer kernels, torch's first ops) now too
        _WORKER_SCORER.score(warmup)


def _pid() -> int:
    time.sleep(0.02)  # long enough that the pool hands the next task to another worker
    return os.getpid()


def _score_piece(events: ak.Array, return_tokens: bool) -> dict:
    return _WORKER_SCORER.score(events, return_tokens=return_tokens)


def _join(parts: list[dict]) -> dict:
    """The score columns of consecutive pieces, concatenated (numpy or awkward per column)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        out[name] = np.concatenate(values) if isinstance(values[0], np.ndarray) else ak.concatenate(values)
    return out


class PoolScorer:
    """A model directory's scorer (:meth:`eventlm.modeldir.ModelDir.open_scorer`) whose ``score``
    runs on ``workers`` processes.

    Use it as a context manager (the processes stop at the end). The tokenizer and the background
    process list come from a scorer in this process (``local``), so it can stand in for a Scorer in
    :func:`eventlm.apply.score_files`.
    """

    def __init__(self, model_dir, workers: int, *, device: str = "cpu", which: str = "best",
                 batch_events: int | None = None, piece_events: int = PIECE_EVENTS, warmup: ak.Array | None = None):
        from eventlm.modeldir import ModelDir

        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if piece_events < 1:
            raise ValueError(f"piece_events must be at least 1, not {piece_events}")
        self.local = ModelDir(model_dir).open_scorer(device, which=which, batch_events=batch_events, threads=1)
        self.workers = workers
        self.piece_events = piece_events
        self._args = (str(model_dir), str(device), which, batch_events,
                      None if warmup is None else ak.to_packed(warmup[:64]))
        self._pool: ProcessPoolExecutor | None = None
        self.startup_seconds = 0.0

    def __enter__(self) -> PoolScorer:
        t0 = time.perf_counter()
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start_worker, initargs=self._args)
        # start every worker now (each loads the model, and scores the warm-up events, in its
        # initializer): small tasks until every worker has answered
        seen: set[int] = set()
        while len(seen) < self.workers:
            seen.update(f.result() for f in [self._pool.submit(_pid) for _ in range(2 * self.workers)])
        self.startup_seconds = time.perf_counter() - t0
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def tokenizer(self):
        return self.local.tokenizer

    @property
    def background_processes(self) -> list[str]:
        return self.local.background_processes

    @property
    def objective(self) -> str:
        return self.local.objective

    def score(self, events: ak.Array, *, return_tokens: bool = False) -> dict:
        """The score columns of ``events`` (as :meth:`eventlm.score.Scorer.score`), in input order."""
        if self._pool is None:
            raise RuntimeError("PoolScorer is used outside its `with` block")
        n = len(events)
        # at least one piece per worker, so that a small step keeps every worker busy
        size = max(1, min(self.piece_events, -(-n // self.workers)))
        pieces = [ak.to_packed(events[i:i + size]) for i in range(0, n, size)] or [events]
        return _join(list(self._pool.map(_score_piece, pieces, [return_tokens] * len(pieces))))


def score_files_parallel(model_dir, inputs, output, *, workers: int, step_size: int = 50_000, device="cpu",
                         confusion=None, progress: bool = False, piece_events: int = PIECE_EVENTS,
                         on_error: str = "raise", report=None, max_events: int | None = None,
                         reader: dict | None = None, copy_branches=()) -> dict:
    """:func:`eventlm.apply.score_files` with the scoring on ``workers`` processes (1: in this process).

    The summary gains ``workers`` and ``startup_seconds`` (starting the workers, loading the model
    in each and scoring the first 64 events once, before the first step is read; not part of
    ``seconds``).
    """
    from eventlm.apply import score_files
    from eventlm.io import read_events
    from eventlm.modeldir import ModelDir

    # the first events: the warm-up, and the count that caps the workers (never more than the events)
    count = max(64, min(workers, usable_cores()))
    from eventlm.progress import quiet

    with quiet("eventlm.io", "eventlm.sanity"):  # the scoring reads these events again and says it then
        first = read_events(inputs, max_events=min(count, max_events or count), on_error=on_error,
                            **(reader or {}))
    workers = capped_workers(workers, len(first))
    warmup = first[:64]
    if workers == 1:  # in this process, with the same start-up as a worker's
        t0 = time.perf_counter()
        scorer = ModelDir(model_dir).open_scorer(device)
        scorer.score(warmup)
        startup = time.perf_counter() - t0
        summary = score_files(model_dir, inputs, output, step_size=step_size, device=device, confusion=confusion,
                              progress=progress, scorer=scorer, on_error=on_error, report=report,
                              max_events=max_events, reader=reader, copy_branches=copy_branches)
        return {**summary, "workers": 1, "startup_seconds": startup}
    with PoolScorer(model_dir, workers, device=device, piece_events=piece_events, warmup=warmup) as scorer:
        summary = score_files(model_dir, inputs, output, step_size=step_size, device=device, confusion=confusion,
                              progress=progress, scorer=scorer, on_error=on_error, report=report,
                              max_events=max_events, reader=reader, copy_branches=copy_branches)
    return {**summary, "workers": workers, "startup_seconds": scorer.startup_seconds}

