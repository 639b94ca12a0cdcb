"""The fine-tuned classifier: the pre-trained transformer, mean pooling, a small head; and its scorer.

The architecture (trained by :func:`eventlm.finetune.finetune`, read by
:meth:`eventlm.modeldir.ModelDir.load_classifier`). The backbone is the language model's
:class:`~eventlm.model.EventTransformer`, fed the events as in its own objective (causal:
``BOS t1 .. tn``; masked: ``t1 .. tn``; :func:`eventlm.batching.model_inputs`). The pooled
representation is the mean of the final hidden states (after the last layer norm) over the event's real
positions (BOS included for a causal model; padding excluded). The head is
``Linear(C, C) - GELU - Dropout(0.1) - Linear(C, 1)``; its output is the signal logit.

:class:`ClassifierScorer` is what :meth:`eventlm.modeldir.ModelDir.open_scorer` returns for a
classifier directory: the interface of :class:`eventlm.score.Scorer` (lazy, picklable; ``tokenizer``,
``background_processes``, ``score(events)``, ``score_tokens(tokens)``) with one float32 column
``score_<name>``, P(signal).
"""

from __future__ import annotations

import re

import awkward as ak
import numpy as np
import torch
import torch.nn as nn

from eventlm.batching import jagged_to_flat, model_inputs
from eventlm.errors import EventlmError
from eventlm.runtime import torch_threads
from eventlm.score import LazyModel

#: ``classifier.json``'s kind.
KIND = "eventlm-classifier"


class ClassifierError(EventlmError, ValueError):
    """A classifier asked for what it does not have (token confusion matrices, another checkpoint)."""


class EventClassifier(nn.Module):
    """Backbone transformer, mean pooling over real positions, and a small MLP head (one logit)."""

    def __init__(self, backbone, objective: str):
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        c = backbone.config.n_embd
        self.head = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Dropout(0.1), nn.Linear(c, 1))

    def features(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled representation: mean of ``ln_f(hidden)`` over the real positions."""
        h = self.backbone.ln_f(self.backbone.hidden(input_ids, padding_mask))  # (B, T, C)
        m = padding_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)

    def forward(self, input_ids, padding_mask):
        return self.head(self.features(input_ids, padding_mask))[:, 0]  # (B,)


def column_name(name: str) -> str:
    """``score_<name>`` with the name reduced to letters, digits and underscores."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_") or "classifier"
    return f"score_{clean}"


def token_inputs(tokens, special, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """``(input ids (N, T), padding mask (N, T))`` of jagged token ids as the backbone reads them."""
    flat, offsets = jagged_to_flat(tokens)
    return model_inputs(flat, np.diff(offsets), special, objective)


def rows_batch(ids: np.ndarray, mask: np.ndarray, index: np.ndarray, device):
    """(input ids, padding mask) of rows ``index``, trimmed to the longest of them."""
    width = max(int(mask[index].sum(axis=1).max(initial=1)), 1)
    x = torch.from_numpy(ids[index, :width]).to(device)
    m = torch.from_numpy(mask[index, :width]).to(device)
    return x, m


@torch.no_grad()
def predict_arrays(classifier: EventClassifier, ids: np.ndarray, mask: np.ndarray,
                   batch_size: int = 1024) -> np.ndarray:
    """P(signal) of every row (float32), in order."""
    classifier.eval()
    device = next(classifier.parameters()).device
    out = np.zeros(len(ids), dtype=np.float32)
    order = np.argsort(mask.sum(axis=1), kind="stable")  # similar lengths together; put back in order below
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x, m = rows_batch(ids, mask, idx, device)
        out[idx] = torch.sigmoid(classifier(x, m).float()).cpu().numpy()
    return out


def predict(classifier: EventClassifier, tokenizer, events: ak.Array, *, batch_size: int = 1024) -> np.ndarray:
    """P(signal) of every event of ``events`` (float32), in order."""
    ids, mask = token_inputs(tokenizer.encode(events), tokenizer.special, classifier.objective)
    return predict_arrays(classifier, ids, mask, batch_size)


class ClassifierScorer(LazyModel):
    """``eventlm score`` for a classifier directory: one float32 column ``score_<name>`` per event.

    Built by :meth:`eventlm.modeldir.ModelDir.open_scorer` (``directory``: the
    :class:`~eventlm.modeldir.ModelDir`).
    """

    def __init__(self, directory, device="cpu", *, batch_events: int | None = None, threads: int | None = None):
        self.directory = directory
        self.device = str(device)
        self.batch_events = batch_events or 1024
        self.threads = 1 if threads is None else threads
        self._loaded = None

    def _read(self) -> dict:
        classifier, tokenizer, info = self.directory.load_classifier(self.device)
        return {"classifier": classifier, "tokenizer": tokenizer, "info": info}

    @property
    def objective(self) -> str:
        return self._load()["classifier"].objective

    @property
    def column(self) -> str:
        return self._load()["info"]["column"]

    @property
    def background_processes(self) -> list[str]:
        return list(self._load()["info"].get("background_processes", []))

    def score(self, events: ak.Array, *, return_tokens: bool = False) -> dict:
        """``{score_<name>: P(signal)}`` for every event of ``events``, in order."""
        if return_tokens:
            raise ClassifierError(f"{self.model_dir} is a classifier: it has no token confusion matrices")
        return self.score_tokens(self.tokenizer.encode(events))

    def score_tokens(self, tokens) -> dict:
        """:meth:`score` on jagged token ids (awkward, lists, or ``(flat, offsets)``)."""
        state = self._load()
        classifier = state["classifier"]
        ids, mask = token_inputs(tokens, state["tokenizer"].special, classifier.objective)
        with torch_threads(self.threads, self.device):
            return {self.column: predict_arrays(classifier, ids, mask, self.batch_events)}
