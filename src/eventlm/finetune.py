"""Fine-tuning: a supervised signal-vs-background classifier on the pre-trained event transformer.

::

    from eventlm.finetune import finetune

    result = finetune("runs/causal", "data/gluino_1000.csv.gz", "data/background.csv.gz", "runs/clf_gluino")
    scores = result.predict(events)          # P(signal), balanced classes, one per event in order

    eventlm finetune runs/causal --signal data/gluino_1000.csv.gz --background data/background.csv.gz \\
        --out runs/clf_gluino
    eventlm score data/tttt_H500.csv.gz --model runs/clf_gluino -o scored.root   # column score_clf_gluino

Architecture: :mod:`eventlm.classifier` (the pre-trained transformer, mean pooling, a small head).

Training. Binary cross entropy with the signal class weighted by ``n_background / n_signal`` (balanced
classes), AdamW (lr 1e-3, weight decay 0.01), batches of 256, a seeded 20 % validation split of the
labelled events (stratified) that picks the best epoch. ``freeze=True`` keeps the backbone fixed (no
dropout; its pooled features are computed once) and trains the head only; otherwise every weight is
trained. ``scratch=True`` gives the same architecture with random weights (the baseline of the
transfer study). One seed drives the signal subsample, the validation split, the batch order, the
head's initialisation and dropout.

The test split. By default the background rows of the pre-trained model's held-out test split
(:meth:`eventlm.modeldir.ModelDir.in_split`, by row key) are not used for training (counted in the log
and in ``classifier.json``), so that split stays an unbiased evaluation set for both the anomaly
score and the classifier.

The classifier directory, written through :meth:`eventlm.modeldir.ModelDir.write_classifier` (refused
in a language model's directory): ``classifier.json`` (the settings and numbers of the run; written
last), ``classifier.pt`` (model config and weights of backbone and head) and ``tokenizer.json``.
``eventlm score`` writes the classifier's P(signal) as one float32 column ``score_<name>`` (name:
``--name``, default the directory's name).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import torch
from torch.nn import functional as F

from eventlm.classifier import KIND, EventClassifier, column_name, predict, rows_batch, token_inputs
from eventlm.errors import EventlmError
from eventlm.modeldir import LANGUAGE_MODEL, ModelDir
from eventlm.runtime import torch_threads

log = logging.getLogger(__name__)

BATCH_SIZE = 256

__all__ = ["FinetuneError", "FinetuneResult", "column_name", "finetune"]


class FinetuneError(EventlmError, ValueError):
    """Inputs that cannot train a classifier (no signal, no background, a non-model directory)."""


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from eventlm.metrics import auc

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
        return predict(self.classifier, self.tokenizer, events, batch_size=batch_size)


def _load_events(source, what: str):
    from eventlm.io import as_events

    events = as_events(source)
    if len(events) == 0:
        where = "the event array" if isinstance(source, ak.Array) else source
        raise FinetuneError(f"no {what} events in {where}")
    return events


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


def _warn_shared(sig: ak.Array, bkg: ak.Array) -> None:
    """One warning when signal and background share events (the same file given twice, say): those
    are labelled both ways and no classifier can separate them."""
    def keys(events):
        met = ak.to_numpy(events.met).astype(np.float32).view(np.int32)
        return set(zip(ak.to_numpy(events.event_id).tolist(), met.tolist(), ak.to_numpy(ak.num(events.particles)).tolist()))

    shared = len(keys(sig) & keys(bkg))
    if shared:
        log.warning("%d of the %d signal events are also background events (same event id, MET and objects): "
                    "labelled both ways, they cannot be separated%s", shared, len(sig),
                    " (is the signal the background file?)" if shared == len(sig) else "")


def _finetune(model_dir, signal, background, out_dir, *, freeze, epochs, seed, max_signal, max_background, scratch,
              name, exclude_test, lr, validation, progress, device) -> FinetuneResult:
    from eventlm._version import __version__
    from eventlm.model import EventTransformer

    t0 = time.perf_counter()
    md = ModelDir(model_dir)
    if md.kind != LANGUAGE_MODEL:
        raise FinetuneError(f"{md.path} is already a classifier directory; give the pre-trained model's")
    if out_dir is not None and ModelDir(out_dir).path.exists() and any(
            (Path(out_dir) / f).exists() for f in ("best.pt", "checkpoint.pt")):
        raise FinetuneError(f"{out_dir}: holds a language model; write the classifier to a directory of its own "
                            "(--out)")
    if epochs < 1:
        raise FinetuneError(f"epochs must be >= 1, got {epochs}")
    if scratch and freeze:
        raise FinetuneError("a model trained from scratch cannot have a frozen backbone")
    backbone, tokenizer, ckpt = md.load(device=device)
    objective = ckpt["objective"]
    torch.manual_seed(seed)
    if scratch:
        backbone = EventTransformer(backbone.config).to(device)  # same architecture, random weights
    rng = np.random.default_rng([int(seed), 3])

    sig = _load_events(signal, "signal")
    bkg = _load_events(background, "background")
    n_bkg_given = len(bkg)
    n_excluded = 0
    if exclude_test and md.has_split():
        in_test = md.in_split(bkg, "test")
        n_excluded = int(in_test.sum())
        if n_excluded:
            log.info("left out %d background rows of the pre-trained model's test split (of %d given)",
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
    _warn_shared(sig, bkg)

    ids_s, mask_s = token_inputs(tokenizer.encode(sig), tokenizer.special, objective)
    ids_b, mask_b = token_inputs(tokenizer.encode(bkg), tokenizer.special, objective)
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
                logits = classifier(*rows_batch(ids, mask, idx, device))
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
        "backbone": str(md.path),
        "backbone_weights": md.stamp(),
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
        out[idx] = classifier.features(*rows_batch(ids, mask, idx, device))
    return out


@torch.no_grad()
def _validate(classifier, features, ids, mask, y, val_idx, pos_weight, device) -> tuple[float, float]:
    classifier.eval()
    if features is not None:
        logits = classifier.head(features[val_idx])[:, 0]
    else:
        parts = []
        for start in range(0, len(val_idx), 1024):
            parts.append(classifier(*rows_batch(ids, mask, val_idx[start:start + 1024], device)))
        logits = torch.cat(parts)
    target = torch.from_numpy(y[val_idx]).to(device)
    loss = float(F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight.to(device)))
    return loss, _auc(y[val_idx], logits.float().cpu().numpy())


# --------------------------------------------------------------------------------------------------
# the classifier directory


def save_classifier(result: FinetuneResult, out_dir) -> Path:
    """Write the classifier directory through :meth:`ModelDir.write_classifier`."""
    state = {
        "model_config": result.classifier.backbone.config.to_dict(),
        "objective": result.objective,
        "state_dict": result.classifier.state_dict(),
        "tokenizer_fingerprint": result.tokenizer.fingerprint(),
        "eventlm_version": result.info["eventlm_version"],
    }
    ModelDir(out_dir).write_classifier(state, {**result.info, "history": result.history}, result.tokenizer)
    return Path(out_dir)
