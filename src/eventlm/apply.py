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


def calibrate(model_dir, background, *, score: str = "anomaly_score_nll", split: str = "validation",
              which: str = "best", scorer=None):
    """Fit and write the model's calibration (``calibration.json``; ``calibration_last.json`` for
    ``which="last"``) on its held-out background rows, stamped with the weights it was fitted for.

    ``background``: the events the model was trained on (paths or an event array). Exactly the rows of
    the model's ``split`` (default: validation, never seen by the weights) are scored, all of them
    (:meth:`ModelDir.select` with ``complete=True``: a background lacking some is refused in one
    line; row keys are computed on the whole input, as in training), and the
    survival function of ``score`` is fitted per object-count class. From then on the scorer adds
    the ``anomaly_score_calibrated`` column. The default ``anomaly_score``'s calibration
    (:class:`eventlm.calibration.DefaultScore`: the event NLL's tail probability on the same rows, the
    scale ``S_T``'s per object count on the training and held-out rows) is fitted with it and written
    into the same file; until then ``anomaly_score`` is the event NLL. Returns the
    :class:`eventlm.calibration.ScoreCalibration`.
    """
    from eventlm.calibration import DefaultScore, ScoreCalibration
    from eventlm.score import token_scale
    from eventlm.io import as_events

    md = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    if md.kind != LANGUAGE_MODEL:
        raise ModelDirError(f"{md.path}: a classifier has no anomaly score to calibrate")
    score = "anomaly_score_nll" if score == "anomaly_score" else score  # the name of the event NLL before
    background = as_events(background)
    held_out = md.select(background, split, complete=True)
    scorer = scorer or md.open_scorer(which=which, calibrated=False)
    tokens = scorer.tokenizer.encode(held_out)
    cols = scorer.score_tokens(tokens)
    n_objects = n_objects_of(scorer.tokenizer, tokens)
    cal = ScoreCalibration.fit(score, cols[score], n_objects)
    scale = token_scale(scorer.tokenizer, tokens)
    if scale is not None:
        train_tokens = scorer.tokenizer.encode(md.select(background, "train"))
        rows = (np.concatenate([scale, token_scale(scorer.tokenizer, train_tokens)]),
                np.concatenate([n_objects, n_objects_of(scorer.tokenizer, train_tokens)]))
        cal = cal.with_default(DefaultScore.fit(cols["anomaly_score_nll"], scale, n_objects, scale_rows=rows))
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
    reader: dict | None = None,
    copy_branches=(),
) -> dict:
    """Score every event of ``inputs`` (read in steps of ``step_size``) and write ``output``.

    ``reader``: the NanoAOD/PHYSLITE reader options (``{"nanoaod": ..., "physlite": ...}``); when they
    differ from those in the model card, one warning says how. Every event gets the column
    ``in_training_phase_space`` (:mod:`eventlm.card`; a model without a card: none), and the summary's
    ``outside_phase_space`` counts, per input file, the events outside it (also logged, one line per
    file). ``copy_branches``: names or glob patterns of input branches (NanoAOD, PHYSLITE TTrees)
    copied through to the output beside the event model and the scores, entry by entry.

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
    from eventlm.card import FLAG, in_phase_space, outside_description, read_card, reader_difference
    from eventlm.io import EventWriter, ReadReport, as_paths, iter_events
    from eventlm.progress import count_events, progress_bar

    md = model_dir if isinstance(model_dir, ModelDir) else ModelDir(model_dir)
    card = read_card(md.path)
    difference = reader_difference(card, reader)
    if difference:
        log.warning("%s: %s", md.path, difference)
    if copy_branches and on_error == "skip":
        raise ValueError("--copy-branches needs every input entry: it cannot be combined with --on-error skip")
    outside: dict[str, int] = {}
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
            copier = BranchCopier(path, copy_branches) if copy_branches else None
            n_outside = 0
            for chunk in iter_events(path, step_size=step_size, max_events=remaining, on_error=on_error,
                                     report=report, **(reader or {})):
                cols = scorer.score(chunk, return_tokens=matrices is not None)
                inside = in_phase_space(card, chunk)
                if inside is not None:
                    cols[FLAG] = inside
                    n_outside += int(np.count_nonzero(~inside))
                if copier is not None:
                    cols.update(copier.next(len(chunk), clash=set(cols) | set(chunk.fields)))
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
            if card is not None:
                outside[str(path)] = n_outside
                if n_outside:
                    log.warning("%s: %d events outside the training phase space (%s): their scores say nothing "
                                "about how typical they are (column %s)", path, n_outside,
                                outside_description(card), FLAG)
    seconds = time.perf_counter() - t0
    if matrices is not None:
        plot_token_confusion(matrices, confusion, scorer.tokenizer)
    return {"output": str(output), "events": n_events, "seconds": seconds,
            "events_per_s": n_events / seconds if seconds else float("nan"),
            "skipped": report.n_skipped, "outside_phase_space": outside if card is not None else None}


class BranchCopier:
    """Input branches of a NanoAOD or PHYSLITE TTree, read entry range by entry range beside the events
    (``eventlm score --copy-branches``): the k-th scored event gets the k-th entry's values."""

    def __init__(self, path, patterns):
        import uproot

        from eventlm.errors import EventFormatError

        self.path = Path(path)
        if not str(path).lower().endswith(".root"):
            raise EventFormatError(path, "--copy-branches copies branches of ROOT input (NanoAOD, PHYSLITE) only")
        self._file = uproot.open(path)
        keys = {k.split(";")[0] for k in self._file.keys(recursive=False)}
        name = "Events" if "Events" in keys else "CollectionTree" if "CollectionTree" in keys else None
        if name is None or not hasattr(self._file[name], "arrays"):
            raise EventFormatError(path, "--copy-branches needs a TTree Events (NanoAOD) or CollectionTree (PHYSLITE)")
        self.tree = self._file[name]
        self.names = []
        for pattern in patterns:
            found = self.tree.keys(filter_name=pattern, recursive=False)
            if not found:
                raise EventFormatError(path, f"--copy-branches {pattern!r} matches no branch of {name}")
            self.names += [n for n in found if n not in self.names]
        self.entry = 0

    def next(self, n: int, *, clash=()) -> dict:
        """The copied branches of the next ``n`` entries, by branch name."""
        from eventlm.errors import EventFormatError

        bad = [b for b in self.names if b in clash]
        if bad:
            raise EventFormatError(self.path, f"--copy-branches {', '.join(bad)}: already a column of the output")
        arrays = self.tree.arrays(self.names, entry_start=self.entry, entry_stop=self.entry + n, library="ak")
        self.entry += n
        return {b: arrays[b] for b in self.names}


def plot_token_confusion(matrices: dict, path, tokenizer) -> Path:
    """The confusion-matrix figure with the tokenizer's MET boundary marked (if it has MET tokens)."""
    from eventlm.plotting.training import plot_confusion

    boundaries = []
    n_particle = getattr(tokenizer, "n_particle_tokens", None)
    if tokenizer.n_met_tokens and n_particle:
        boundaries.append((n_particle + 1, "MET"))
    return plot_confusion(matrices, path, n_content=tokenizer.n_content, boundaries=boundaries)
