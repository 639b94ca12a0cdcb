"""Scoring: how improbable the background-trained model finds each event.

Every column is higher = more anomalous; docs/method.md defines each one. First the event's negative
log-likelihood, ``anomaly_score_nll``:

Causal objective (the default). ``nll_i = -log p(t_i | BOS t_1 .. t_{i-1})`` for the n tokens and the
stop token EOS. Then

- ``anomaly_score_nll`` = ``anomaly_score_sum`` = the sum of the n + 1 terms: the event's negative
  log-likelihood ``-log p(event)``. The stop token makes the number of objects part of the modelled
  density, so a rare multiplicity and rare objects both raise it;
- ``log_likelihood`` = ``-anomaly_score_nll``;
- ``anomaly_score_mean`` = the mean of the n + 1 terms.

Masked objective (the paper's). For an event with maskable tokens ``t_1 .. t_n`` (its particles; MET
too if the model was trained with ``mask_met``), build n copies, copy i with ``t_i`` replaced by MASK,
and take ``nll_i = -log p(t_i | copy i)`` at the masked position. Then

- ``anomaly_score_sum`` = the sum of ``nll_i`` (the negated pseudo-log-likelihood);
- ``anomaly_score_nll`` = ``anomaly_score_sum - log p(n_particles)``, the pseudo-log-likelihood plus the
  background's object-count term (:class:`eventlm.calibration.Multiplicity`, fitted on the training
  events): the masked model sees each object given the others, not how many there are;
- ``anomaly_score_mean`` = the mean of ``nll_i``: the paper's score.

The default ``anomaly_score`` (:class:`eventlm.calibration.DefaultScore`, fitted by
:func:`eventlm.apply.calibrate` into ``calibration.json``) combines the event NLL's background tail
probability with that of the event's energy scale ``S_T`` for its object count (:func:`token_scale`:
the decoded pT of its tokens plus the decoded MET) and calibrates the combination on background once
more: ``anomaly_score = k`` means a fraction ``10^-k`` of the background scores higher. A model
without a calibration (or whose tokenizer cannot decode pT) gives ``anomaly_score = anomaly_score_nll``.

Both objectives also give ``anomaly_score_max`` (the largest term), ``reco_accuracy`` (fraction of
terms whose true token is the argmax) and ``token_nll`` (the per-token terms, jagged, in token order;
the causal stop-token term is left out). Where the model directory holds a ``calibration.json``
(written by :func:`eventlm.apply.calibrate`, stamped with the weights it was fitted for),
``anomaly_score_calibrated`` is ``anomaly_score_nll`` calibrated on
background within its object-count class (:mod:`eventlm.calibration`): ``-log10`` of the fraction of
background events with as many objects that score higher.

An event with nothing to score (no particles, masked objective) gets ``anomaly_score_sum``,
``anomaly_score_mean`` and ``anomaly_score_max`` 0, ``anomaly_score_nll`` its object-count term alone,
``reco_accuracy = 1`` and an empty ``token_nll``: it is kept, never NaN.

All masked copies of a batch of events are built at once (vectorized) and go through one forward
pass; events are grouped by length to limit padding and put back in input order. The causal score
needs one forward pass per event, the masked one a pass per object (docs/benchmarks.md).

A :class:`Scorer` is opened by :meth:`eventlm.modeldir.ModelDir.open_scorer` (which checks the
directory whole first); this module never imports :mod:`eventlm.modeldir`: the scorer is handed its
``ModelDir`` and asks it for the weights.
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import torch

from eventlm.batching import causal_pad, jagged_to_flat, maskable_positions, offsets_of, pad
from eventlm.calibration import Multiplicity
from eventlm.model import token_nll
from eventlm.runtime import torch_threads

#: Every score column :meth:`Scorer.score` can write (the one list of names; see the module docstring).
SCORE_COLUMNS = (
    "anomaly_score", "anomaly_score_mean", "anomaly_score_sum", "anomaly_score_max",
    "anomaly_score_calibrated", "reco_accuracy", "log_likelihood", "token_nll",
    "object_nll", "met_nll", "stop_nll", "count_nll", "anomaly_score_nll",
)
#: The event-level float columns among them, in the order tables list them.
EVENT_SCORES = ("anomaly_score", "anomaly_score_nll", "anomaly_score_calibrated", "anomaly_score_mean", "anomaly_score_sum")


class LazyModel:
    """A model directory read on first use, in the process that uses it: pickling (to coffea or dask
    workers) sends the :class:`~eventlm.modeldir.ModelDir` and the settings, never the weights.
    Subclasses set ``directory`` and define ``_read``."""

    _loaded: dict | None = None
    directory = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None
        return state

    def _load(self) -> dict:
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def _read(self) -> dict:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    @property
    def model_dir(self) -> Path:
        return self.directory.path

    @property
    def tokenizer(self):
        return self._load()["tokenizer"]


class Scorer(LazyModel):
    """A trained language model, loaded on first use; ``score(events)`` returns the score columns.

    Open one with :meth:`eventlm.modeldir.ModelDir.open_scorer`. Cheap to construct and to pickle (the
    model is dropped on pickling and reloaded lazily in the worker), so a coffea processor can hold
    one and call it per chunk.
    """

    def __init__(
        self,
        directory,
        device="cpu",
        *,
        which: str = "best",
        batch_events: int | None = None,
        threads: int | None = None,
        calibrated: bool = True,
    ):
        self.directory = directory
        self.calibrated = calibrated
        self.threads = threads
        self.device = str(device)
        self.which = which
        self.batch_events = batch_events
        self._loaded = None

    def _read(self) -> dict:
        model, tokenizer, ckpt = self.directory.load(which=self.which, device=self.device)
        run = ckpt["run_config"]
        return {
            "model": model,
            "tokenizer": tokenizer,
            "objective": ckpt["objective"],
            "mask_met": bool(run["masking"]["mask_met"]),
            "batch_events": self.batch_events or int(run["train"].get("score_batch_events", 64)),
            "threads": self.threads if self.threads is not None else int(run["train"].get("threads", 1)),
            "processes": list(ckpt.get("processes", [])),
            "multiplicity": Multiplicity(ckpt["multiplicity"]) if ckpt.get("multiplicity") else None,
            "calibration": self.directory.read_calibration(self.which) if self.calibrated else None,
            "checkpoint": {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "split")},
        }

    def use_calibration(self, calibration) -> None:
        """Score with ``calibration`` from now on (after :func:`eventlm.apply.calibrate` wrote it)."""
        self.calibrated = True
        if self._loaded is not None:
            self._loaded["calibration"] = calibration

    @property
    def model(self):
        return self._load()["model"]

    @property
    def objective(self) -> str:
        return self._load()["objective"]

    @property
    def background_processes(self) -> list[str]:
        """The process labels of the training background (what counts as background in a confusion plot)."""
        return self._load()["processes"]

    def score(self, events: ak.Array, *, return_tokens: bool = False) -> dict:
        """Score columns for every event of ``events``, in input order (see the module docstring).

        Returns a dict: ``anomaly_score``, ``anomaly_score_max``, ``reco_accuracy`` (float32 numpy),
        ``token_nll`` (awkward ``var * float32``), plus ``log_likelihood`` for the causal objective.
        ``return_tokens=True`` adds ``token_true`` and ``token_pred`` (jagged int64, the true and
        argmax-predicted token of every scored position). The explanation columns (``object_nll``
        aligned with ``events.particles``, ``met_nll``, ``stop_nll``, ``count_nll``) add up to
        ``anomaly_score_nll``: see :func:`explain`.
        """
        tokens = self.tokenizer.encode(events)
        state = self._load()
        with torch.no_grad(), torch_threads(state["threads"], self.device):
            cols = self._score_tokens(tokens, return_tokens)
        cols.update(explain(cols.pop("_terms"), events, self.tokenizer))
        return cols

    def score_tokens(self, tokens, *, return_tokens: bool = False) -> dict:
        """:meth:`score` on jagged token ids (awkward, lists, or ``(flat, offsets)``), without the
        per-object columns (they need the events)."""
        state = self._load()
        with torch.no_grad(), torch_threads(state["threads"], self.device):
            out = self._score_tokens(tokens, return_tokens)
        out.pop("_terms")
        return out

    def _score_tokens(self, tokens, return_tokens: bool) -> dict:
        state = self._load()
        flat, offsets = jagged_to_flat(tokens)
        lengths = np.diff(offsets)
        if state["objective"] == "causal":
            n_scored = lengths.copy()
            n_terms = lengths + 1  # the tokens and the stop token
        else:
            n_met = 0 if state["mask_met"] else self.tokenizer.n_met_tokens
            n_scored = np.maximum(lengths - n_met, 0)
            n_terms = n_scored
        term_offsets = offsets_of(n_terms)
        nll = np.zeros(term_offsets[-1], dtype=np.float32)
        correct = np.zeros(term_offsets[-1], dtype=bool)
        pred = np.zeros(term_offsets[-1], dtype=np.int64)
        true = np.zeros(term_offsets[-1], dtype=np.int64)
        # group events of similar length; each group is one forward pass
        order = np.argsort(lengths, kind="stable")
        step = state["batch_events"]
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            if state["objective"] == "causal":
                slots, t_true, logits = self._causal_batch(flat, offsets, idx, term_offsets)
            else:
                slots, t_true, logits = self._masked_batch(flat, offsets, idx, term_offsets)
            if len(slots) == 0:
                continue
            t = torch.from_numpy(t_true).to(logits.device)
            nll[slots] = token_nll(logits, t).cpu().numpy()  # the training loss, term by term
            p = logits.argmax(dim=-1).cpu().numpy()
            pred[slots] = p
            true[slots] = t_true
            correct[slots] = p == t_true
        scale = None
        calibration = state["calibration"]
        if calibration is not None and calibration.default is not None:
            scale = token_scale(self.tokenizer, tokens)
        return self._columns(nll, correct, true, pred, n_terms, n_scored, term_offsets, return_tokens, scale)

    def _masked_batch(self, flat, offsets, idx, term_offsets):
        """All masked copies of events ``idx``: (slots in the output, true tokens, logits (M, V))."""
        state = self._load()
        model = state["model"]
        lengths = np.diff(offsets)[idx]
        sub_flat = flat[_gather_positions(offsets, idx)]
        tokens, _, _ = pad(sub_flat, lengths)  # (B, T)
        width = tokens.shape[1]
        n_met = 0 if state["mask_met"] else self.tokenizer.n_met_tokens
        rows, cols = np.nonzero(maskable_positions(lengths, width, n_met, mask_met=False))  # (M,), (M,)
        if len(rows) == 0:
            return rows, rows, None
        copies = tokens[rows]  # (M, T): copy j is event rows[j] ...
        t_true = copies[np.arange(len(rows)), cols].copy()
        copies[np.arange(len(rows)), cols] = self.tokenizer.special.mask  # ... with position cols[j] masked
        x = torch.from_numpy(copies).to(self.device)
        logits = model(x, x != 0, where=torch.from_numpy(cols).to(self.device))  # (M, V)
        slots = term_offsets[idx[rows]] + cols  # maskable positions are the first n of each event
        return slots, t_true, logits

    def _causal_batch(self, flat, offsets, idx, term_offsets):
        state = self._load()
        model = state["model"]
        lengths = np.diff(offsets)[idx]
        sub_flat = flat[_gather_positions(offsets, idx)]
        inputs, targets, real = causal_pad(sub_flat, lengths, self.tokenizer.special)  # (B, T) each
        x = torch.from_numpy(inputs).to(self.device)
        where = torch.from_numpy(real).to(self.device)
        logits = model(x, where, where=where)  # (M, V), row-major over real positions
        rows, cols = np.nonzero(real)
        slots = term_offsets[idx[rows]] + cols  # position t predicts term t of the event
        return slots, targets[rows, cols], logits

    def _columns(self, nll, correct, true, pred, n_terms, n_scored, term_offsets, return_tokens, scale=None):
        n_events = len(n_terms)
        event_of = np.repeat(np.arange(n_events), n_terms)
        has = n_terms > 0
        sums = np.bincount(event_of, weights=nll.astype(np.float64), minlength=n_events)
        hits = np.bincount(event_of, weights=correct.astype(np.float64), minlength=n_events)
        mean = np.divide(sums, n_terms, out=np.zeros(n_events), where=has)
        acc = np.divide(hits, n_terms, out=np.ones(n_events), where=has)
        mx = np.zeros(n_events, dtype=np.float32)
        if len(nll):
            mx_full = np.full(n_events, -np.inf, dtype=np.float32)
            np.maximum.at(mx_full, event_of, nll)
            mx = np.where(has, mx_full, 0.0).astype(np.float32)
        # token_nll: the first n_scored terms of each event (the causal stop-token term is left out)
        position = np.arange(len(nll)) - term_offsets[:-1][event_of]
        keep = position < n_scored[event_of]
        state = self._load()
        n_met = self.tokenizer.n_met_tokens
        n_particles = np.maximum(n_scored - (n_met if self.objective == "causal" or state["mask_met"] else 0), 0)
        if self.objective == "causal":
            anomaly_score_nll = sums  # the n token terms and the stop token: -log p(event)
        elif state["multiplicity"] is not None:
            anomaly_score_nll = sums + state["multiplicity"].nll(n_particles)
        else:  # a model directory from before the object-count term
            anomaly_score_nll = sums
        out = {
            "anomaly_score": anomaly_score_nll.astype(np.float32),
            "anomaly_score_nll": anomaly_score_nll.astype(np.float32),
            "anomaly_score_mean": mean.astype(np.float32),
            "anomaly_score_sum": sums.astype(np.float32),
            "anomaly_score_max": mx,
            "reco_accuracy": acc.astype(np.float32),
            "token_nll": ak.unflatten(nll[keep], n_scored),
        }
        calibration = state["calibration"]
        if calibration is not None:
            # "anomaly_score" in a calibration file written before the default was the combination
            # names the event NLL (what anomaly_score was then)
            column = "anomaly_score_nll" if calibration.score == "anomaly_score" else calibration.score
            out["anomaly_score_calibrated"] = calibration.transform(out[column], n_particles)
            if calibration.default is not None:
                if scale is None:
                    raise ValueError("the default anomaly_score needs the events' scale S_T")
                out["anomaly_score"] = calibration.default.transform(anomaly_score_nll, scale, n_particles)
        if self.objective == "causal":
            out["log_likelihood"] = (-sums).astype(np.float32)
        if return_tokens:
            out["token_true"] = ak.unflatten(true[keep], n_scored)
            out["token_pred"] = ak.unflatten(pred[keep], n_scored)
        # what explain() needs: the scored terms, the stop term and the object-count term per event
        stop = np.zeros(n_events)
        if self.objective == "causal":
            stop[has] = nll[term_offsets[1:][has] - 1]
        out["_terms"] = {"token_nll": nll[keep], "n_scored": n_scored, "n_met_scored": n_scored - n_particles,
                         "stop": stop, "count": anomaly_score_nll - sums}
        return out


#: The explanation columns of :meth:`Scorer.score`: per object, then the event terms.
EXPLANATION_COLUMNS = ("object_nll", "met_nll", "stop_nll", "count_nll")


def explain(terms: dict, events: ak.Array, tokenizer) -> dict:
    """``anomaly_score_nll`` split over the event's objects and its event-level terms.

    - ``object_nll`` (``var * float32``): one value per object of ``events.particles``, in their own
      order (the order ``Particle_*`` is written in: pT descending for the readers): the NLL term of
      the object's token (causal: ``-log p(token | tokens before it)``; masked: ``-log p(token | the
      rest)``); 0 for an object dropped above ``max_particles``;
    - ``met_nll``: the MET tokens' terms (0 for a masked model trained without ``mask_met``);
    - ``stop_nll``: the causal stop token's term, ``-log p(EOS | the event)`` (0 masked);
    - ``count_nll``: the masked object-count term ``-log p(n_objects)`` (0 causal).

    ``sum(object_nll) + met_nll + stop_nll + count_nll == anomaly_score_nll`` for every event (to float32
    rounding of each column); ``anomaly_score_nll`` is ``anomaly_score`` of a model without a calibration.
    """
    from eventlm.tokenize.particles import order_particles

    flat = order_particles(events, getattr(tokenizer, "max_particles", None))  # token order -> input index
    n_objects = ak.to_numpy(ak.num(events.particles, axis=1)).astype(np.int64)
    n_events = len(n_objects)
    token_nll = terms["token_nll"].astype(np.float64)
    n_scored, n_met = terms["n_scored"], terms["n_met_scored"]
    n_particle_terms = n_scored - n_met  # the scored tokens start with the event's particle tokens
    if not np.array_equal(n_particle_terms, flat.counts):
        raise AssertionError("per-object terms: particle tokens and scored terms disagree")
    scored_offsets = offsets_of(n_scored)
    event_of = np.repeat(np.arange(n_events), n_scored)
    position = np.arange(len(token_nll)) - scored_offsets[:-1][event_of]
    is_particle = position < n_particle_terms[event_of]
    object_offsets = offsets_of(n_objects)
    per_object = np.zeros(object_offsets[-1], dtype=np.float32)
    # the particle terms come in token order: slot j of event e is the object flat.source[j] of e
    per_object[object_offsets[:-1][flat.event_index] + flat.source] = token_nll[is_particle]
    met = np.bincount(event_of[~is_particle], weights=token_nll[~is_particle], minlength=n_events)
    return {
        "object_nll": ak.unflatten(per_object, n_objects),
        "met_nll": met.astype(np.float32),
        "stop_nll": terms["stop"].astype(np.float32),
        "count_nll": terms["count"].astype(np.float32),
    }


def token_scale(tokenizer, tokens) -> np.ndarray | None:
    """``S_T`` as the tokens say it (float64, GeV): the decoded pT of every particle token plus the
    decoded MET; None for a tokenizer that cannot decode kinematics (the default score then stays the
    event NLL)."""
    flat, offsets = jagged_to_flat(tokens)
    try:
        decoded = tokenizer.decode(ak.unflatten(flat, np.diff(offsets)), specials="drop")
    except (NotImplementedError, AttributeError, TypeError):
        return None
    pt = ak.to_numpy(ak.sum(ak.values_astype(decoded.particles.pt, np.float64), axis=1))
    met = np.asarray(ak.to_numpy(decoded.met), dtype=np.float64) if "met" in decoded.fields else 0.0
    return pt + np.nan_to_num(met, nan=0.0)


def n_objects_of(tokenizer, tokens) -> np.ndarray:
    """Particle tokens per event (what the calibration classes count)."""
    _, offsets = jagged_to_flat(tokens)
    return np.maximum(np.diff(offsets) - tokenizer.n_met_tokens, 0)


def _gather_positions(offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Flat positions of the tokens of events ``idx`` (in that order)."""
    lengths = np.diff(offsets)[idx]
    sub_offsets = offsets_of(lengths)
    event_of = np.repeat(np.arange(len(idx)), lengths)
    return offsets[idx][event_of] + np.arange(sub_offsets[-1]) - sub_offsets[event_of]


def confusion_counts(true: np.ndarray, pred: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V, V) int64 counts of (true token, predicted token)."""
    return np.bincount(
        np.asarray(true, dtype=np.int64) * vocab_size + np.asarray(pred, dtype=np.int64),
        minlength=vocab_size * vocab_size,
    ).reshape(vocab_size, vocab_size)
