"""The anomaly score inside your own coffea processor, on NanoAOD or PHYSLITE directly.

:class:`EventlmScorer` follows coffea's ``coffea.ml_tools`` conventions: it is a
``numpy_call_wrapper`` (``prepare_awkward`` turns the NanoEvents chunk into numpy inputs, ``numpy_call``
runs the model on them) and a ``nonserializable_attribute`` container (the model is not pickled: it is
loaded on first use in each worker process and cached there per model directory). Construct it in your
processor's ``__init__``, call it in ``process``::

    from eventlm.analysis.ml import EventlmScorer

    class MyProcessor(processor.ProcessorABC):
        def __init__(self, model_dir):
            self.scorer = EventlmScorer(model_dir, reader="nanoaod")   # or "physlite"

        def process(self, events):
            scores = self.scorer(events)          # {"anomaly_score": ak.Array (one per event), ...}
            ...

The chunk goes through the readers' mapping (``eventlm.io.nanoaod.from_nanoevents`` or
``eventlm.io.physlite.from_nanoevents``: the object selection of ``eventlm read``), the model
directory's tokenizer and :class:`eventlm.score.Scorer`, so the scores are those ``eventlm score``
writes for the same events. An empty chunk gives empty columns. It works with coffea's iterative,
futures and dask executors (``processor.Runner``), whose chunks are eager or virtual NanoEvents.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import awkward as ak
import numpy as np
from coffea.ml_tools.helper import nonserializable_attribute, numpy_call_wrapper

log = logging.getLogger(__name__)

#: Readers by name: the module whose ``from_nanoevents(events, options=None)`` maps a chunk, and its
#: options class.
READERS = {"nanoaod": ("eventlm.io.nanoaod", "NanoAODOptions"),
           "physlite": ("eventlm.io.physlite", "PHYSLITEOptions")}

#: Loaded scorers per worker process, keyed by (model directory, checkpoint, threads): the one cache.
_LOADED: dict[tuple, object] = {}


def loaded_scorer(model_dir, which: str = "best", threads: int | None = None):
    """The scorer of ``model_dir`` (:meth:`eventlm.modeldir.ModelDir.open_scorer`: a language model
    or a classifier), opened once per process and cached; :class:`EventlmScorer` and the coffea
    processor both take it from here."""
    from eventlm.modeldir import ModelDir

    key = (str(Path(model_dir).resolve()), which, threads)
    if key not in _LOADED:
        log.info("loading model %s (%s)", key[0], which)
        _LOADED[key] = ModelDir(key[0]).open_scorer(which=which, threads=threads)
    return _LOADED[key]


class EventlmScorer(nonserializable_attribute, numpy_call_wrapper):
    """Score NanoEvents chunks with an eventlm model directory (see the module docstring).

    Parameters
    ----------
    model_dir: the model directory (``eventlm train --out``); it must be readable from the workers.
    reader: ``"nanoaod"``, ``"physlite"``, ``"eventlm"`` (an eventlm ntuple read with
        ``EventlmNanoAODSchema``) or a function ``events -> event model``.
    options: the reader's options (``eventlm.io.nanoaod.NanoAODOptions``,
        ``eventlm.io.physlite.PHYSLITEOptions``, or a dict of their fields, e.g. ``{"btag_wp": "tight"}``);
        the default is the readers' default, the one ``eventlm score`` uses on the file.
    threads: torch threads while scoring (1 per worker process by default, so workers do not compete).
    which: ``"best"`` or ``"last"`` checkpoint.

    Calling it on a chunk returns ``{column: ak.Array}`` with one entry per event, in chunk order: the
    event-level columns of :class:`eventlm.score.Scorer` (``anomaly_score``, ``anomaly_score_sum``, ...;
    the per-token ``token_nll`` is left out).
    """

    def __init__(self, model_dir, *, reader: str | Callable = "nanoaod", options=None,
                 threads: int | None = 1, which: str = "best"):
        if isinstance(reader, str) and reader not in (*READERS, "eventlm"):
            raise ValueError(f"unknown reader {reader!r}: choose {', '.join((*READERS, 'eventlm'))} or a function")
        if isinstance(options, Mapping):
            if not isinstance(reader, str) or reader not in READERS:
                raise ValueError(f"options apply to the {' and '.join(READERS)} readers, not to {reader!r}")
            module, cls = READERS[reader]
            options = getattr(importlib.import_module(module), cls)(**options)
        nonserializable_attribute.__init__(self, ["scorer"])
        numpy_call_wrapper.__init__(self)
        from eventlm.modeldir import ModelDir

        model_dir = Path(model_dir).resolve()
        ModelDir(model_dir).kind  # a missing or foreign directory: one line now, not in a worker  # noqa: B018
        self.model_dir = str(model_dir)
        self.reader = reader
        self.options = options
        self.threads = threads
        self.which = which

    def _create_scorer(self):
        """The scorer, loaded once per worker process (cached beyond this object's lifetime)."""
        return loaded_scorer(self.model_dir, self.which, self.threads)

    def to_event_model(self, events) -> ak.Array:
        """The chunk in eventlm's event model (the readers' mapping)."""
        if callable(self.reader):
            return self.reader(events)
        if self.reader == "eventlm":
            from eventlm.io.schema import to_event_model

            return to_event_model(events)
        module = importlib.import_module(READERS[self.reader][0])
        return module.from_nanoevents(events, options=self.options)

    def prepare_awkward(self, events):
        """NanoEvents -> (flat token ids, tokens per event): the numpy inputs of :meth:`numpy_call`."""
        model_events = self.to_event_model(events)
        if len(model_events) != len(events):
            raise RuntimeError(f"the {self.reader} mapping returned {len(model_events)} events for {len(events)}")
        tokens = ak.to_packed(self.scorer.tokenizer.encode(model_events))
        flat = ak.values_astype(ak.flatten(tokens, axis=1), np.int64)
        counts = ak.values_astype(ak.num(tokens, axis=1), np.int64)
        return (flat, counts), {}

    def validate_numpy_input(self, flat: np.ndarray, counts: np.ndarray) -> None:
        if flat.ndim != 1 or counts.ndim != 1 or int(counts.sum()) != len(flat):
            raise ValueError(f"token ids ({len(flat)}) and counts (sum {int(counts.sum())}) do not match")
        if len(flat) and (flat.min() < 1 or flat.max() > self.scorer.tokenizer.n_content):
            raise ValueError(f"token ids outside 1..{self.scorer.tokenizer.n_content}")

    def numpy_call(self, flat: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
        """The event-level score columns of the events whose tokens are ``flat`` (``counts`` per event)."""
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        scores = self.scorer.score_tokens((np.asarray(flat, dtype=np.int64), offsets))
        return {name: np.asarray(values, dtype=np.float32) for name, values in scores.items()
                if isinstance(values, np.ndarray) and values.ndim == 1}

    def postprocess_awkward(self, return_array, *args, **kwargs):
        return dict(return_array)


__all__ = ["EventlmScorer", "READERS", "loaded_scorer"]
