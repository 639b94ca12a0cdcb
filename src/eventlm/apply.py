"""Applying a model directory to events: score files, and calibrate the score on its validation rows.

::

    from eventlm.apply import calibrate, score_files

    calibrate("runs/lut", "data/background.csv.gz")       # calibration.json, stamped with best.pt
    score_files("runs/lut", ["sig.csv.gz"], "scored.root")

Both open the directory's scorer through :meth:`eventlm.modeldir.ModelDir.open_scorer`, so a
classifier directory scores the same way (one column ``score_<name>``); ``eventlm score --workers N``
runs :func:`score_files` with the scoring on N processes (:mod:`eventlm.parallel`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import ModelDirError
from eventlm.modeldir import LANGUAGE_MODEL, ModelDir
from eventlm.score import confusion_counts, n_objects_of

log = logging.getLogger(__name__)

__all__ = ["calibrate", "plot_token_confusion", "score_files"]


def calibrate(model_dir, background, *, score: str = "anomaly_score", split: str = "validation",
              which: str = "best", scorer=None):
    """Fit and write the model's calibration (``calibration.json``; ``calibration_last.json`` for
    ``which="last"``) on its held-out background rows, stamped with the weights it was fitted for.

    ``background``: the events the model was trained on (paths or an event array). Exactly the rows of
    the model's ``split`` (default: validation, never seen by the weights) are scored, all of them
    (:meth:`ModelDir.select` with ``complete=True``: a background lacking some is refused in one
    line; row keys are computed on the whole input, as in training), and the
    survival function of ``score`` is fitted per object-count class. From then on the scorer adds
    the ``anomaly_score_calibrated`` column. Returns the :class:`eventlm.calibration.ScoreCalibration`.
    """
    from eventlm.calibration import ScoreCalibration
    from eventlm.io import as_events

    md = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    if md.kind != LANGUAGE_MODEL:
        raise ModelDirError(f"{md.path}: a classifier has no anomaly score to calibrate")
    held_out = md.select(as_events(background), split, complete=True)
    scorer = scorer or md.open_scorer(which=which, calibrated=False)
    tokens = scorer.tokenizer.encode(held_out)
    cols = scorer.score_tokens(tokens)
    cal = ScoreCalibration.fit(score, cols[score], n_objects_of(scorer.tokenizer, tokens))
    md.write_calibration(cal, which)
    scorer.use_calibration(cal)
    log.info("calibrated %s on the %d %s rows in %d object-count classes (from %s)", score, len(held_out),
             split, len(cal.lower), ", ".join(str(x) for x in cal.lower))
    return cal


def score_files(
    model_dir,
    inputs,
    output,
    *,
    step_size: int = 50_000,
    device="cpu",
    confusion=None,
    progress: bool = False,
    scorer=None,
    on_error: str = "raise",
    report=None,
    max_events: int | None = None,
) -> dict:
    """Score every event of ``inputs`` (read in steps of ``step_size``) and write ``output``.

    ``on_error="skip"`` leaves bad lines/entries out (recorded in ``report``, an
    :class:`eventlm.io.ReadReport`, and counted in the summary's ``skipped``); every good event is
    scored once, in input order. ``max_events``: the first N events of the inputs (in order) only.

    The output (``.root`` ntuple or ``.parquet``, through :class:`eventlm.io.EventWriter`) holds every
    input event once, in input order, with its columns plus the score columns. ``confusion``: a PNG
    path for the token confusion matrices, background (the training processes) and signal (the rest)
    separately. ``progress``: a bar with the total on a terminal, one line per file elsewhere
    (:mod:`eventlm.progress`). ``scorer``: one already open (e.g. :class:`eventlm.parallel.PoolScorer`;
    default: :meth:`ModelDir.open_scorer`). Returns a summary dict (events, seconds, events/s, output path).
    """
    from eventlm.io import EventWriter, ReadReport, as_paths, iter_events
    from eventlm.progress import count_events, progress_bar

    md = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    scorer = scorer or md.open_scorer(device=device)
    vocab = scorer.tokenizer.vocab_size
    background = set(scorer.background_processes)
    matrices = {"Background": np.zeros((vocab, vocab), dtype=np.int64),
                "Signal": np.zeros((vocab, vocab), dtype=np.int64)} if confusion else None
    report = report if report is not None else ReadReport()
    paths = as_paths(inputs)
    n_events = 0
    t0 = time.perf_counter()
    with EventWriter(output) as writer, progress_bar(count_events(paths, max_events) if progress else None,
                                                     desc="scoring", enabled=progress) as bar:
        for path in paths:
            remaining = None if max_events is None else max_events - n_events
            if remaining is not None and remaining <= 0:
                break
            for chunk in iter_events(path, step_size=step_size, max_events=remaining, on_error=on_error,
                                     report=report):
                cols = scorer.score(chunk, return_tokens=matrices is not None)
                if matrices is not None:
                    is_bkg = np.isin(np.asarray(chunk.process), list(background))
                    true, pred = cols.pop("token_true"), cols.pop("token_pred")
                    for name, sel in (("Background", is_bkg), ("Signal", ~is_bkg)):
                        matrices[name] += confusion_counts(
                            ak.to_numpy(ak.flatten(true[sel])), ak.to_numpy(ak.flatten(pred[sel])), vocab
                        )
                writer.write(chunk, extra_columns=cols)
                n_events += len(chunk)
                bar.update(len(chunk))
            bar.file_done(path)
    seconds = time.perf_counter() - t0
    if matrices is not None:
        plot_token_confusion(matrices, confusion, scorer.tokenizer)
    return {"output": str(output), "events": n_events, "seconds": seconds,
            "events_per_s": n_events / seconds if seconds else float("nan"),
            "skipped": report.n_skipped}


def plot_token_confusion(matrices: dict, path, tokenizer) -> Path:
    """The confusion-matrix figure with the tokenizer's MET boundary marked (if it has MET tokens)."""
    from eventlm.plotting.training import plot_confusion

    boundaries = []
    n_particle = getattr(tokenizer, "n_particle_tokens", None)
    if tokenizer.n_met_tokens and n_particle:
        boundaries.append((n_particle + 1, "MET"))
    return plot_confusion(matrices, path, n_content=tokenizer.n_content, boundaries=boundaries)
