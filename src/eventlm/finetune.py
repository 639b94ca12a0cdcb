"""Fine-tuning: a supervised signal-vs-background classifier on the pre-trained event transformer.

::

    from eventlm.finetune import finetune

    result = finetune("runs/causal", "data/gluino_1000.csv.gz", "data/background.csv.gz", "runs/clf_gluino")
    scores = result.predict(events)          # P(signal), balanced classes, one per event in order

    eventlm finetune runs/causal --signal data/gluino_1000.csv.gz --background data/background.csv.gz \\
        --out runs/clf_gluino
    eventlm score data/tttt_H500.csv.gz --model runs/clf_gluino -o scored.root   # column score_clf_gluino

Architecture. The backbone is the model directory's :class:`~eventlm.model.EventTransformer`, fed the
events as in its own objective (causal: ``BOS t1 .. tn``; masked: ``t1 .. tn``). The pooled
representation is the mean of the final hidden states (after the last layer norm) over the event's real
positions (BOS included for a causal model; padding excluded). The head is
``Linear(C, C) - GELU - Dropout(0.1) - Linear(C, 1)``; its output is the signal logit.

Training. Binary cross entropy with the signal class weighted by ``n_background / n_signal`` (balanced
classes), AdamW (lr 1e-3, weight decay 0.01), batches of 256, a seeded 20 % validation split of the
labelled events (stratified) that picks the best epoch. ``freeze=True`` keeps the backbone fixed (no
dropout; its pooled features are computed once) and trains the head only; otherwise every weight is
trained. ``scratch=True`` gives the same architecture with random weights (the baseline of the
transfer study). One seed drives the signal subsample, the validation split, the batch order, the
head's initialisation and dropout.

The test split. By default background events whose ids are in the pre-trained model's held-out test
split (``split.json``) are not used for training (counted in the log and in ``classifier.json``), so
that split stays an unbiased evaluation set for both the anomaly score and the classifier.

The classifier directory: ``classifier.json`` (the marker that :class:`eventlm.score.Scorer` looks
for, with the settings and numbers of the run), ``classifier.pt`` (model config and weights of
backbone and head) and ``tokenizer.json``. ``eventlm score`` writes the classifier's P(signal) as one
float32 column ``score_<name>`` (name: ``--name``, default the directory's name).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

from eventlm.atomic import save_torch, write_json
from eventlm.runtime import torch_threads
from eventlm.score import LazyModel
from eventlm.errors import EventlmError

log = logging.getLogger(__name__)

MARKER = "classifier.json"
WEIGHTS = "classifier.pt"
KIND = "eventlm-classifier"
BATCH_SIZE = 256


class FinetuneError(EventlmError, ValueError):
    """Inputs that cannot train a classifier (no signal, no background, a non-model directory)."""


class EventClassifier(nn.Module):
    """Backbone transformer, mean pooling over real positions, and a small MLP head (one logit)."""

    def __init__(self, backbone, objective: str):
        super().__init__()
        self.backbone = backbone
        self.objective = objective
        c = backbone.config.n_embd
        self.head = nn.Sequential(nn.Linear(c, c), nn.GELU(), nn.Dropout(0.1), nn.Linear(c, 1))
        self._hidden = None
        # the last block's output (B, T, C), taken with a hook: EventTransformer.forward returns logits only
        backbone.blocks[-1].register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, inputs, output):
        self._hidden = output

    def features(self, input_ids: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled representation: mean of ``ln_f(hidden)`` over the real positions."""
        B = input_ids.size(0)
        first = torch.zeros(B, dtype=torch.long, device=input_ids.device)  # the head runs on one position only
        self.backbone(input_ids, padding_mask, where=first)
        h = self.backbone.ln_f(self._hidden)  # (B, T, C)
        self._hidden = None
        m = padding_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, C)

    def forward(self, input_ids, padding_mask):
        return self.head(self.features(input_ids, padding_mask))[:, 0]  # (B,)


def encode_inputs(tokenizer, events: ak.Array, objective: str) -> tuple[np.ndarray, np.ndarray]:
    """``(input ids (N, T), padding mask (N, T))`` as the backbone's objective reads an event."""
    from eventlm.batching import jagged_to_flat, pad

    flat, offsets = jagged_to_flat(tokenizer.encode(events))
    lengths = np.diff(offsets)
    if objective == "causal":
        ids, _, _ = pad(flat, lengths, width=int(lengths.max(initial=0)) + 1, shift=1)
        ids[:, 0] = tokenizer.special.bos
        mask = np.arange(ids.shape[1])[None, :] <= lengths[:, None]
    else:
        ids, _, _ = pad(flat, lengths, width=max(int(lengths.max(initial=0)), 1))
        mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    return ids, mask


def _batches(ids: np.ndarray, mask: np.ndarray, index: np.ndarray, device):
    """(input ids, padding mask) of rows ``index``, trimmed to the longest of them."""
    width = max(int(mask[index].sum(axis=1).max(initial=1)), 1)
    x = torch.from_numpy(ids[index, :width]).to(device)
    m = torch.from_numpy(mask[index, :width]).to(device)
    return x, m


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from eventlm.analysis.metrics import auc

    y = np.asarray(y).astype(bool)
    return auc(s[~y], s[y]) if 0 < y.sum() < len(y) else float("nan")


@dataclass
class FinetuneResult:
    classifier: EventClassifier
    tokenizer: object
    objective: str
    info: dict
    history: dict = field(default_factory=dict)
    out_dir: Path | None = None

    def predict(self, events: ak.Array, *, batch_size: int = 1024) -> np.ndarray:
        """P(signal) of every event, in order (float32)."""
        return predict(self.classifier, self.tokenizer, self.objective, events, batch_size=batch_size)


@torch.no_grad()
def predict(classifier: EventClassifier, tokenizer, objective: str, events: ak.Array, *,
            batch_size: int = 1024) -> np.ndarray:
    ids, mask = encode_inputs(tokenizer, events, objective)
    return _predict_arrays(classifier, ids, mask, batch_size)


@torch.no_grad()
def _predict_arrays(classifier, ids, mask, batch_size=1024) -> np.ndarray:
    classifier.eval()
    device = next(classifier.parameters()).device
    out = np.zeros(len(ids), dtype=np.float32)
    order = np.argsort(mask.sum(axis=1), kind="stable")  # similar lengths together; put back in order below
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x, m = _batches(ids, mask, idx, device)
        out[idx] = torch.sigmoid(classifier(x, m).float()).cpu().numpy()
    return out


def _load_events(source, what: str):
    from eventlm.io import as_events

    events = as_events(source)
    if len(events) == 0:
        raise FinetuneError(f"no {what} events in {source}")
    return events


def column_name(name: str) -> str:
    """``score_<name>`` with the name reduced to letters, digits and underscores."""
    clean = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_") or "classifier"
    return f"score_{clean}"


def finetune(
    model_dir,
    signal,
    background,
    out_dir=None,
    *,
    freeze: bool = False,
    epochs: int = 10,
    seed: int = 0,
    max_signal: int | None = None,
    max_background: int | None = None,
    scratch: bool = False,
    name: str | None = None,
    exclude_test: bool = True,
    lr: float = 1e-3,
    validation: float = 0.2,
    progress: bool = True,
    threads: int = 1,
    device="cpu",
) -> FinetuneResult:
    """Train the classifier on labelled ``signal`` and ``background`` (paths or event arrays).

    ``max_signal`` / ``max_background``: a seeded random subset of that many labelled events.
    ``out_dir``: write the classifier directory there (None: keep it in memory only).
    """
    with torch_threads(threads, device):
        return _finetune(model_dir, signal, background, out_dir, freeze=freeze, epochs=epochs, seed=seed,
                         max_signal=max_signal, max_background=max_background, scratch=scratch, name=name,
                         exclude_test=exclude_test, lr=lr, validation=validation, progress=progress, device=device)


def _finetune(model_dir, signal, background, out_dir, *, freeze, epochs, seed, max_signal, max_background, scratch,
              name, exclude_test, lr, validation, progress, device) -> FinetuneResult:
    from eventlm._version import __version__
    from eventlm.model import EventTransformer
    from eventlm.modeldir import ModelDir, load_split

    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    if (model_dir / MARKER).exists():
        raise FinetuneError(f"{model_dir} is already a classifier directory; give the pre-trained model's")
    if not (model_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"{model_dir} is not a model directory: no tokenizer.json")
    if epochs < 1:
        raise FinetuneError(f"epochs must be >= 1, got {epochs}")
    if scratch and freeze:
        raise FinetuneError("a model trained from scratch cannot have a frozen backbone")
    backbone, tokenizer, ckpt = ModelDir(model_dir).load(device=device)
    objective = ckpt["objective"]
    torch.manual_seed(seed)
    if scratch:
        backbone = EventTransformer(backbone.config).to(device)  # same architecture, random weights
    rng = np.random.default_rng([int(seed), 3])

    sig = _load_events(signal, "signal")
    bkg = _load_events(background, "background")
    n_bkg_given = len(bkg)
    n_excluded = 0
    if exclude_test and (model_dir / "split.json").exists():
        in_test = np.isin(ak.to_numpy(bkg.event_id), load_split(model_dir)["test"])
        n_excluded = int(in_test.sum())
        if n_excluded:
            log.info("left out %d background events of the pre-trained model's test split (of %d given)",
                     n_excluded, n_bkg_given)
            bkg = bkg[~in_test]
            if len(bkg) == 0:
                raise FinetuneError("every background event is in the model's test split; pass others")
    if max_signal is not None and max_signal < len(sig):
        sig = sig[np.sort(rng.choice(len(sig), max_signal, replace=False))]
    if max_background is not None and max_background < len(bkg):
        bkg = bkg[np.sort(rng.choice(len(bkg), max_background, replace=False))]
    if len(sig) < 2 or len(bkg) < 2:
        raise FinetuneError(f"need at least 2 signal and 2 background events, got {len(sig)} and {len(bkg)}")

    ids_s, mask_s = encode_inputs(tokenizer, sig, objective)
    ids_b, mask_b = encode_inputs(tokenizer, bkg, objective)
    width = max(ids_s.shape[1], ids_b.shape[1])
    ids = np.zeros((len(sig) + len(bkg), width), dtype=np.int64)
    mask = np.zeros_like(ids, dtype=bool)
    ids[:len(sig), :ids_s.shape[1]], mask[:len(sig), :ids_s.shape[1]] = ids_s, mask_s
    ids[len(sig):, :ids_b.shape[1]], mask[len(sig):, :ids_b.shape[1]] = ids_b, mask_b
    y = np.concatenate([np.ones(len(sig)), np.zeros(len(bkg))]).astype(np.float32)
    # stratified validation split
    val = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):
        members = np.flatnonzero(y == cls)
        n_val = max(1, int(round(validation * len(members))))
        val[rng.choice(members, n_val, replace=False)] = True
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    n_sig_train = int(y[train_idx].sum())
    pos_weight = torch.tensor((len(train_idx) - n_sig_train) / max(n_sig_train, 1), dtype=torch.float32)

    classifier = EventClassifier(backbone, objective).to(device)
    if freeze:
        for p in classifier.backbone.parameters():
            p.requires_grad_(False)
    params = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)

    features = None
    if freeze:  # the backbone never changes: its pooled features once, then the head alone
        features = _frozen_features(classifier, ids, mask, device)

    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_auc": []}
    best = (np.inf, 0, None)
    bar = None
    steps_per_epoch = -(-len(train_idx) // BATCH_SIZE)
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc="finetune", unit="batch", dynamic_ncols=True,
                   disable=None)  # None: no bar off a terminal
    for epoch in range(epochs):
        classifier.train()
        if freeze:
            classifier.backbone.eval()
        perm = np.random.default_rng([int(seed), 4, epoch]).permutation(train_idx)
        loss_sum = 0.0
        for start in range(0, len(perm), BATCH_SIZE):
            idx = perm[start:start + BATCH_SIZE]
            if features is not None:
                logits = classifier.head(features[idx])[:, 0]
            else:
                logits = classifier(*_batches(ids, mask, idx, device))
            target = torch.from_numpy(y[idx]).to(device)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            loss_sum += float(loss.detach()) * len(idx)
            if bar is not None:
                bar.update()
        val_loss, val_auc = _validate(classifier, features, ids, mask, y, val_idx, pos_weight, device)
        history["epoch"].append(epoch + 1)
        history["train_loss"].append(loss_sum / len(train_idx))
        history["val_loss"].append(val_loss)
        history["val_auc"].append(val_auc)
        if val_loss < best[0]:
            best = (val_loss, epoch + 1, {k: v.detach().clone() for k, v in classifier.state_dict().items()})
    if bar is not None:
        bar.close()
    classifier.load_state_dict(best[2])
    classifier.eval()
    info = {
        "kind": KIND,
        "eventlm_version": __version__,
        "backbone": str(model_dir),
        "objective": objective,
        "pooling": "mean over real positions of ln_f(last block)" + (" incl. BOS" if objective == "causal" else ""),
        "freeze": bool(freeze),
        "scratch": bool(scratch),
        "epochs": epochs,
        "best_epoch": best[1],
        "best_val_loss": float(best[0]),
        "val_auc": float(history["val_auc"][best[1] - 1]),
        "seed": int(seed),
        "lr": lr,
        "n_signal": int(len(sig)),
        "n_background": int(len(bkg)),
        "n_background_excluded_test": n_excluded,
        "n_train": int(len(train_idx)),
        "n_validation": int(len(val_idx)),
        "background_processes": sorted(set(np.asarray(bkg.process).tolist())),
        "signal_processes": sorted(set(np.asarray(sig.process).tolist())),
        "seconds": time.perf_counter() - t0,
    }
    result = FinetuneResult(classifier, tokenizer, objective, info, history)
    if out_dir is not None:
        out_dir = Path(out_dir)
        info["name"] = name or out_dir.name
        info["column"] = column_name(info["name"])
        save_classifier(result, out_dir)
        result.out_dir = out_dir
    log.info("classifier: best epoch %d of %d, validation AUC %.4f (%d signal, %d background events), %.0f s",
             best[1], epochs, info["val_auc"], len(sig), len(bkg), info["seconds"])
    return result


@torch.no_grad()
def _frozen_features(classifier, ids, mask, device, batch_size=1024) -> torch.Tensor:
    classifier.backbone.eval()
    out = torch.zeros(len(ids), classifier.backbone.config.n_embd, device=device)
    for start in range(0, len(ids), batch_size):
        idx = np.arange(start, min(start + batch_size, len(ids)))
        out[idx] = classifier.features(*_batches(ids, mask, idx, device))
    return out


@torch.no_grad()
def _validate(classifier, features, ids, mask, y, val_idx, pos_weight, device) -> tuple[float, float]:
    classifier.eval()
    if features is not None:
        logits = classifier.head(features[val_idx])[:, 0]
    else:
        parts = []
        for start in range(0, len(val_idx), 1024):
            parts.append(classifier(*_batches(ids, mask, val_idx[start:start + 1024], device)))
        logits = torch.cat(parts)
    target = torch.from_numpy(y[val_idx]).to(device)
    loss = float(F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight.to(device)))
    return loss, _auc(y[val_idx], logits.float().cpu().numpy())


# --------------------------------------------------------------------------------------------------
# the classifier directory


def save_classifier(result: FinetuneResult, out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.tokenizer.save(out_dir / "tokenizer.json")
    payload = {
        "model_config": result.classifier.backbone.config.to_dict(),
        "objective": result.objective,
        "state_dict": result.classifier.state_dict(),
        "tokenizer_fingerprint": result.tokenizer.fingerprint(),
        "eventlm_version": result.info["eventlm_version"],
    }
    save_torch(payload, out_dir / WEIGHTS)
    info = dict(result.info)
    info["history"] = result.history
    write_json(out_dir / MARKER, info)  # last: the marker means "complete"
    return out_dir


def is_classifier_dir(path) -> bool:
    return (Path(path) / MARKER).exists()


def load_classifier(model_dir, device="cpu") -> tuple[EventClassifier, object, dict]:
    """``(classifier in eval mode, tokenizer, classifier.json)`` of a directory from :func:`finetune`."""
    from eventlm.errors import CheckpointMismatchError
    from eventlm.model import EventTransformer, ModelConfig
    from eventlm.tokenize import load_tokenizer

    model_dir = Path(model_dir)
    try:
        info = json.loads((model_dir / MARKER).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointMismatchError(f"{model_dir / MARKER}: not a classifier file ({err})") from None
    if info.get("kind") != KIND:
        raise CheckpointMismatchError(f"{model_dir / MARKER}: kind {info.get('kind')!r}, expected {KIND!r}")
    if not (model_dir / WEIGHTS).exists():
        raise FileNotFoundError(f"{model_dir} is not a complete classifier directory: no {WEIGHTS}")
    payload = torch.load(model_dir / WEIGHTS, map_location=device, weights_only=True)
    tokenizer = load_tokenizer(model_dir / "tokenizer.json", expected_fingerprint=payload["tokenizer_fingerprint"])
    backbone = EventTransformer(ModelConfig(**payload["model_config"]))
    classifier = EventClassifier(backbone, payload["objective"])
    classifier.load_state_dict(payload["state_dict"])
    return classifier.to(device).eval(), tokenizer, info


class ClassifierScorer(LazyModel):
    """``eventlm score`` for a classifier directory: one float32 column ``score_<name>`` per event.

    Same interface as :class:`eventlm.score.Scorer` (lazy, picklable; ``tokenizer``,
    ``background_processes``, ``score(events)``), which hands classifier directories to it.
    """

    def __init__(self, model_dir, device="cpu", *, batch_events: int | None = None, threads: int | None = None,
                 **_ignored):
        self.model_dir = Path(model_dir)
        self.device = str(device)
        self.batch_events = batch_events or 1024
        self.threads = 1 if threads is None else threads
        self._loaded = None

    @classmethod
    def load(cls, model_dir, device="cpu", **kwargs) -> ClassifierScorer:
        model_dir = Path(model_dir)
        if not (model_dir / WEIGHTS).exists() or not (model_dir / "tokenizer.json").exists():
            raise FileNotFoundError(f"{model_dir} is not a complete classifier directory: "
                                    f"no {WEIGHTS} or tokenizer.json")
        return cls(model_dir, device, **kwargs)

    def _read(self) -> dict:
        classifier, tokenizer, info = load_classifier(self.model_dir, self.device)
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
            raise FinetuneError(f"{self.model_dir} is a classifier: it has no token confusion matrices")
        state = self._load()
        with torch_threads(self.threads, self.device):
            scores = predict(state["classifier"], state["tokenizer"], state["classifier"].objective, events,
                             batch_size=self.batch_events)
        return {self.column: scores}
