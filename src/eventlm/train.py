"""Training: split the background, fit the tokenizer, train the transformer, write the model directory.

::

    from eventlm.config import RunConfig
    from eventlm.modeldir import ModelDir
    from eventlm.train import train

    result = train(RunConfig(), ["data/background.csv.gz"], "runs/lut")
    test = ModelDir("runs/lut").select(background, "test")   # the held-out background rows

The model directory (docs/architecture.md), every file written through
:class:`eventlm.modeldir.ModelDir`: ``checkpoint.pt`` (the last epoch: model, optimizer, scheduler
and RNG states, model and run config, tokenizer params, seed, package version, split, metrics),
``best.pt`` (the weights of the best validation epoch, same metadata, no optimizer),
``tokenizer.json``, ``config.toml``, ``split.json`` and ``metrics.json``; ``eventlm train`` adds
``loss.png`` and ``calibration.json``.

The split is recorded as row keys (:mod:`eventlm.rows`), unique by construction, never as event ids.
One seed drives everything: the split (numpy generator keyed ``(seed, 1)``), the sampler's order
(``(seed, epoch)``), the masking (a hash of ``(seed, epoch, event, position)``), the model's
initialisation and dropout (torch, seeded with ``seed``), python's and numpy's global generators.
On CPU the same seed and data give bitwise the same losses, and ``resume=True`` after an interrupted
run continues to the same result as an uninterrupted one (a checkpoint is written after every epoch).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here (NCCL on
CUDA, gloo on CPU), the model is wrapped in DistributedDataParallel, every rank takes every W-th
batch of the same bucketed batch list, validation is sharded and summed over ranks, and rank 0 alone
fits the tokenizer and writes files (the other ranks read ``tokenizer.json`` from the shared output
directory).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from eventlm._version import __version__
from eventlm.batching import BucketBatchSampler, Collator, TokenDataset, make_loader
from eventlm.calibration import Multiplicity
from eventlm.config import RunConfig
from eventlm.errors import CheckpointMismatchError
from eventlm.io import as_events
from eventlm.model import EventTransformer, ModelConfig, token_nll
from eventlm.modeldir import LAST, SPLITS, ModelDir, read_checkpoint
from eventlm.runtime import heap_padding, resolve_device, torch_threads

log = logging.getLogger(__name__)

#: The masking "epoch" key of the validation set: fixed, so the validation loss compares across epochs.
VALIDATION_EPOCH = 1_000_003


@dataclass
class TrainResult:
    out_dir: Path
    epochs_run: int  # epochs completed in total (including before a resume)
    best_epoch: int  # 1-based
    best_val_loss: float
    stopped_early: bool
    metrics: dict = field(repr=False)
    seconds: float = 0.0  # wall time of this call

    @property
    def model_dir(self) -> Path:
        return self.out_dir


# ----------------------------------------------------------------------------------------------------
# seeds, split, data


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_indices(n: int, fractions, seed: int) -> dict[str, np.ndarray]:
    """Positions of the train / validation / test events: a seeded permutation cut by ``fractions``.

    Each split keeps input order. Every event is in exactly one split.
    """
    fractions = np.asarray(fractions, dtype=float)
    perm = np.random.default_rng([seed, 1]).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 2:
        n_train = min(max(n_train, 1), n - 1)
        n_val = min(max(n_val, 1), n - n_train)
    cuts = np.cumsum([n_train, n_val])
    parts = np.split(perm, cuts)
    return {name: np.sort(part) for name, part in zip(SPLITS, parts)}


def unigram_entropy(flat_targets: np.ndarray) -> float:
    """Entropy (nats) of the token frequencies: the loss of a model that ignores the context."""
    _, counts = np.unique(flat_targets, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def target_tokens(dataset: TokenDataset, objective: str, n_met_tokens: int, mask_met: bool, eos: int):
    """The flat tokens the loss predicts (maskable tokens, or every token plus EOS)."""
    if objective == "causal":
        return np.concatenate([dataset.flat, np.full(len(dataset), eos)])
    position = np.arange(len(dataset.flat)) - np.repeat(dataset.offsets[:-1], dataset.lengths)
    n_maskable = dataset.lengths - (0 if mask_met else n_met_tokens)
    return dataset.flat[position < np.repeat(n_maskable, dataset.lengths)]


# ----------------------------------------------------------------------------------------------------
# distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float], device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ----------------------------------------------------------------------------------------------------
# model, schedule, checkpoints


def build_model(config: RunConfig, vocab_size: int) -> EventTransformer:
    spec = asdict(config.model)
    return EventTransformer(ModelConfig(vocab_size=vocab_size, causal=config.train.objective == "causal", **spec))


def lr_factor(step: int, total_steps: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def rng_state() -> dict:
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------------
# the loop


def _fit_tokenizer(config: RunConfig, events, device: str, progress: bool):
    """A new tokenizer of the configured kind, fitted on ``events``; the run seed drives learned ones."""
    import importlib

    from eventlm.tokenize import KINDS, get_tokenizer
    from eventlm.tokenize.base import REGISTRY

    kind = config.tokenizer.kind
    params = dict(config.tokenizer.params)
    if kind in KINDS:
        importlib.import_module(f"eventlm.tokenize.{KINDS[kind]}")
        init_args = set()
        for klass in REGISTRY[kind].__mro__:
            if "__init__" in vars(klass):
                init_args |= set(inspect.signature(klass.__init__).parameters)
        if "seed" in init_args:
            params.setdefault("seed", config.seed)
        if "device" in init_args:
            params.setdefault("device", device)
    tokenizer = get_tokenizer(kind, **params)
    accepted = inspect.signature(tokenizer.fit).parameters
    kwargs = {}
    if "progress" in accepted:
        kwargs["progress"] = progress
    return tokenizer.fit(events, **kwargs)


def _fingerprint(keys: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(keys, dtype=np.uint64).tobytes()).hexdigest()[:16]


def train(
    config: RunConfig,
    background,
    out_dir,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    reader: dict | None = None,
    sources=None,
) -> TrainResult:
    """Train on ``background`` (paths or an event array) and write the model directory ``out_dir``.

    ``reader``: the NanoAOD/PHYSLITE reader options (``{"nanoaod": NanoAODOptions, "physlite": ...}``,
    as :func:`eventlm.io.iter_events` takes them) the background is (or was) read with; the model
    card (``model_card.json``, :mod:`eventlm.card`) records them with the training phase space;
    ``sources``: the file names it lists when ``background`` is an event array read from them.

    ``resume``: continue from ``out_dir/checkpoint.pt`` (its run config is used; the given one is
    ignored except ``device``). ``stop_after_epochs``: return after that many epochs of this call
    (the checkpoint is written, ``resume=True`` continues), e.g. for time-limited batch slots.
    The loss curve is drawn by ``eventlm train`` (:func:`eventlm.plotting.training.plot_loss` on
    ``result.metrics``), not here: training needs no plotting library.
    """
    padding = heap_padding() if config.train.fused else contextlib.nullcontext()
    with torch_threads(config.train.threads, config.device), padding:
        return _train(config, background, out_dir, resume=resume, progress=progress,
                      stop_after_epochs=stop_after_epochs, reader=reader, sources=sources)


@dataclass
class _Data:
    """The tokenized training and validation sets of a run, and what the checkpoint records of them."""

    tokenizer: object
    train: TokenDataset
    validation: TokenDataset
    split_keys: dict  # split name -> row keys (uint64)
    fingerprint: str
    processes: list
    train_weights: object = None  # (N_train,) float32 tensor of loss weights, or None ([train] event_weights)


def _resumed(md: ModelDir, config: RunConfig, resume: bool):
    """``(checkpoint or None, run config)``: a resumed run takes its run config from the checkpoint."""
    if resume and (md.path / LAST).exists():
        ckpt = read_checkpoint(md.path / LAST)
        log.info("resuming %s after epoch %d", md.path, ckpt["epoch"])
        return ckpt, RunConfig.from_dict(ckpt["run_config"]).replace(device=config.device)
    if resume:
        log.info("no checkpoint in %s: starting a new run", md.path)
    return None, config


def _prepare_data(config: RunConfig, background, md: ModelDir, ckpt, dist: Dist, device, progress: bool,
                  reader: dict | None = None, sources=None) -> _Data:
    """Read and split the background, write ``config.toml`` and ``split.json``, fit (rank 0, new
    run) or read the tokenizer, and tokenize the training and validation events."""
    from eventlm.rows import row_keys

    events = as_events(background, config.train.max_events, **(reader or {}))
    keys = row_keys(events)
    split = split_indices(len(events), (config.split.train, config.split.validation, config.split.test),
                          config.seed)
    split_keys = {name: keys[split[name]] for name in SPLITS}
    fingerprint = _fingerprint(keys)
    if ckpt is not None and (ckpt["data_fingerprint"] != fingerprint or any(
            not torch.equal(_key_tensor(split_keys[s]), ckpt["split"][s]) for s in SPLITS)):
        raise CheckpointMismatchError(f"{md.path}: the background events differ from the interrupted run's (or its "
                                      "checkpoint predates row keys: start a new run)")
    if dist.is_main:
        md.path.mkdir(parents=True, exist_ok=True)
        md.write_config(config)
        md.write_split(keys, split, seed=config.seed, fractions=asdict(config.split))
        from eventlm.card import make_card, write_card

        paths = sources if hasattr(background, "fields") else background  # an event array has no file names
        write_card(md.path, make_card(events, inputs=paths, reader=reader,
                                      weights_in_loss=config.train.event_weights != "none"))
    from eventlm.tokenize import load_tokenizer

    if ckpt is None and dist.is_main:
        tokenizer = _fit_tokenizer(config, events[split["train"]], str(device), progress)
        md.write_tokenizer(tokenizer)
    dist.barrier()
    if ckpt is not None or not dist.is_main:
        tokenizer = load_tokenizer(md.tokenizer_path)
    return _Data(
        tokenizer=tokenizer,
        train=TokenDataset(tokenizer.encode(events[split["train"]])),
        validation=TokenDataset(tokenizer.encode(events[split["validation"]])),
        split_keys=split_keys,
        fingerprint=fingerprint,
        processes=sorted(set(np.asarray(events.process[split["train"]]).tolist())),
        train_weights=_loss_weights_tensor(events, split["train"], config.train.event_weights),
    )


def _loss_weights_tensor(events, rows, mode: str):
    w = loss_weights(np.asarray(events.weight[rows], dtype=np.float64), mode)
    if w is not None:
        log.info("event weights in the loss (%s): %d of %d training events weigh < 0", mode,
                 int((w < 0).sum()), len(w))
    return None if w is None else torch.from_numpy(w)


def _key_tensor(keys: np.ndarray) -> torch.Tensor:
    """Row keys (uint64) as an int64 tensor of the same bits (torch has no uint64 checkpoints)."""
    return torch.from_numpy(np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64))


def _checkpoint_meta(config: RunConfig, model: EventTransformer, data: _Data) -> dict:
    """What every checkpoint of the run carries besides its weights: configs, tokenizer, seed,
    package version, split, data fingerprint and the object-count term of the masked score."""
    tokenizer = data.tokenizer
    return {
        "model_config": model.config.to_dict(),
        "run_config": config.to_dict(),
        "tokenizer": {"kind": tokenizer.kind, "params": tokenizer.get_params()},
        "seed": config.seed,
        "eventlm_version": __version__,
        "split": {s: _key_tensor(data.split_keys[s]) for s in SPLITS},  # row keys, as int64 bits
        "data_fingerprint": data.fingerprint,
        "objective": config.train.objective,
        "n_met_tokens": tokenizer.n_met_tokens,
        "processes": data.processes,
        # the object-count term of the masked score (eventlm.calibration.Multiplicity)
        "multiplicity": Multiplicity.fit(np.maximum(data.train.lengths - tokenizer.n_met_tokens, 0),
                                         int(data.train.lengths.max(initial=0))).to_list(),
    }


@dataclass
class _Progress:
    """Where the loop stands: restored from a checkpoint on resume."""

    metrics: dict
    epoch: int = 0
    best_epoch: int = 0
    best_val: float = math.inf
    since_best: int = 0
    stopped_early: bool = False

    def state(self) -> dict:
        return {"epoch": self.epoch, "metrics": self.metrics, "best_epoch": self.best_epoch,
                "best_val_loss": self.best_val, "epochs_since_best": self.since_best,
                "stopped_early": self.stopped_early}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> _Progress:
        return cls(metrics=ckpt["metrics"], epoch=ckpt["epoch"], best_epoch=ckpt["best_epoch"],
                   best_val=ckpt["best_val_loss"], since_best=ckpt["epochs_since_best"],
                   stopped_early=ckpt["stopped_early"])

    def record(self, *, train_loss: float, val_loss: float, lr: float, tokens_per_s: float,
               events_per_s: float, patience: int) -> bool:
        """Append one finished epoch; returns whether it is the best so far."""
        self.epoch += 1
        m = self.metrics
        m["epoch"].append(self.epoch)
        m["train_loss"].append(train_loss)
        m["val_loss"].append(val_loss)
        m["lr"].append(lr)
        m["tokens_per_s"].append(tokens_per_s)
        m["events_per_s"].append(events_per_s)
        improved = val_loss < self.best_val
        if improved:
            self.best_epoch, self.best_val, self.since_best = self.epoch, val_loss, 0
        else:
            self.since_best += 1
            self.stopped_early = self.since_best >= patience
        m["best_epoch"] = self.best_epoch
        return improved


def _train(config, background, out_dir, *, resume, progress, stop_after_epochs, reader=None,
           sources=None) -> TrainResult:
    t_start = time.perf_counter()
    md = ModelDir(out_dir)
    dist = init_distributed(config.device)
    ckpt, config = _resumed(md, config, resume)
    device = resolve_device(config.device, local_rank=dist.local_rank if dist.world > 1 else None)
    tc, seed = config.train, config.seed
    seed_everything(seed)
    data = _prepare_data(config, background, md, ckpt, dist, device, progress, reader, sources)
    special = data.tokenizer.special
    collator = Collator(special, objective=tc.objective, masking=config.masking,
                        n_met_tokens=data.tokenizer.n_met_tokens, seed=seed)
    entropy = unigram_entropy(target_tokens(data.train, tc.objective, data.tokenizer.n_met_tokens,
                                            config.masking.mask_met, special.eos))
    train_sampler = BucketBatchSampler(data.train.lengths, tc.batch_size, seed=seed, bucket_batches=tc.bucket_batches,
                                       num_replicas=dist.world, rank=dist.rank, pad_replicas=True)
    val_sampler = BucketBatchSampler(data.validation.lengths, tc.batch_size, seed=seed, shuffle=False,
                                     bucket_batches=tc.bucket_batches, num_replicas=dist.world, rank=dist.rank,
                                     pad_replicas=False)
    val_sampler.set_epoch(VALIDATION_EPOCH)

    torch.manual_seed(seed)
    model = build_model(config, data.tokenizer.vocab_size).to(device)
    optimizer = model.configure_optimizer(tc.lr, tc.weight_decay, device_type=device.type,
                                          fused=tc.fused or device.type == "cuda")
    total_steps = max(1, tc.epochs * len(train_sampler))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, tc.warmup_steps, tc.min_lr / tc.lr)
    )
    state = _Progress(metrics={"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "step_loss": [],
                               "tokens_per_s": [], "events_per_s": [], "unigram_entropy": entropy})
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = _Progress.from_checkpoint(ckpt)
        set_rng_state(ckpt["rng"])
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.is_main:
        log.info("model: %d parameters, %s; %d train / %d validation events; unigram entropy %.3f nats",
                 model.num_params(), model.config, len(data.train), len(data.validation), entropy)
    meta = _checkpoint_meta(config, model, data)

    epochs_this_call = 0
    while state.epoch < tc.epochs and not state.stopped_early:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
        train_sampler.set_epoch(state.epoch)
        loader = make_loader(data.train, collator, train_sampler, num_workers=tc.num_workers,
                             seed=seed * 1_000_003 + state.epoch, pin_memory=device.type == "cuda")
        bar = _progress(len(train_sampler), f"epoch {state.epoch + 1}/{tc.epochs}", progress and dist.is_main)
        t0 = time.perf_counter()
        sums = _train_epoch(net, model, loader, optimizer, scheduler, device, tc.grad_clip, state.metrics, bar,
                            data.train_weights, fused=tc.fused)
        elapsed = time.perf_counter() - t0
        loss_sum, n_sum, tokens, n_events = dist.sum(sums, device)
        val_loss = evaluate(model, data.validation, collator, val_sampler, device, dist, fused=tc.fused)
        epochs_this_call += 1
        improved = state.record(train_loss=loss_sum / max(n_sum, 1), val_loss=val_loss,
                                lr=scheduler.get_last_lr()[0], tokens_per_s=tokens / elapsed,
                                events_per_s=n_events / elapsed, patience=tc.patience)
        if dist.is_main:
            log.info("epoch %d: train %.4f, validation %.4f (unigram %.4f), %.0f events/s%s", state.epoch,
                     state.metrics["train_loss"][-1], val_loss, entropy, state.metrics["events_per_s"][-1],
                     " (best)" if improved else "")
            weights = {**meta, "model": model.state_dict(), **state.state()}
            if improved:
                md.write_checkpoint(weights, which="best")
            md.write_checkpoint({**weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                 "rng": rng_state()}, which="last")
            md.write_metrics(state.metrics)
        dist.barrier()

    if dist.is_main and state.epoch and state.best_val > entropy:
        log.warning("%s: the best validation loss %.3f is worse than the unigram baseline %.3f nats (every "
                    "token predicted by its training frequency alone): the model has not learned the events; "
                    "its scores and samples mean little (train longer or on more events)",
                    md.path, state.best_val, entropy)
    return TrainResult(out_dir=md.path, epochs_run=state.epoch, best_epoch=state.best_epoch,
                       best_val_loss=state.best_val, stopped_early=state.stopped_early, metrics=state.metrics,
                       seconds=time.perf_counter() - t_start)


#: How ``[train] event_weights`` turns the events' weights into loss weights.
EVENT_WEIGHTS = ("none", "abs", "signed")


def loss_weights(weights, mode: str) -> np.ndarray | None:
    """Per-event loss weights of the training events (None for ``"none"``): ``|w|`` or ``w``, divided
    by the mean ``|w|`` so the loss keeps its scale."""
    if mode not in EVENT_WEIGHTS:
        raise ValueError(f"[train] event_weights must be one of {', '.join(EVENT_WEIGHTS)}, not {mode!r}")
    if mode == "none":
        return None
    w = np.asarray(weights, dtype=np.float64)
    w = np.abs(w) if mode == "abs" else w
    scale = float(np.mean(np.abs(w))) if len(w) else 0.0
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError("[train] event_weights: the training events' weights are all 0 (or not finite)")
    return (w / scale).astype(np.float32)


def weighted_mean(nll: torch.Tensor, token_weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t NLL_t / sum_t |w_t|`` over the targets: each target weighs as its event (signed
    weights keep their sign; the normalisation by ``|w|`` keeps a batch whose weights nearly cancel
    finite)."""
    return (nll * token_weights).sum() / token_weights.abs().sum().clamp_min(1e-12)


def batch_loss(net, batch, event_weights=None, *, fused: bool = True) -> tuple[torch.Tensor, int]:
    """The training loss of one batch: the mean :func:`~eventlm.model.token_nll` over its targets, and
    their number; a batch without any target (events with nothing to mask) gives exactly 0.
    ``event_weights``: (N_train,) loss weights of the dataset's events ([train] event_weights), each
    target then weighing as its event (:func:`weighted_mean`).

    ``fused`` (``[train] fused``, the default): the model's fused loss path (``targets=``: the fused
    attention, then the head and the loss in one pass over cache-sized chunks,
    :func:`eventlm.model.head_loss`); ``False``: the logits, then :func:`~eventlm.model.token_nll`
    (the reference; the same loss and gradients to float32 rounding).
    """
    where = batch.targets >= 0  # (B, T)
    n = int(where.sum())
    if fused:
        targets = batch.targets[where]  # (N,)
        if event_weights is None:
            weights = torch.full((n,), 1.0 / max(n, 1), device=targets.device)
        else:
            rows = event_weights[batch.index.to(event_weights.device)].to(targets.device)  # (B,)
            weights = rows[:, None].expand_as(batch.targets)[where]
            weights = weights / weights.abs().sum().clamp_min(1e-12)
        return net(batch.input_ids, batch.padding_mask, where, targets=targets, weights=weights), n
    logits = net(batch.input_ids, batch.padding_mask, where)  # (N, V)
    if n == 0:
        return logits.sum() * 0.0, 0
    nll = token_nll(logits, batch.targets[where])
    if event_weights is None:
        return nll.mean(), n
    rows = event_weights[batch.index.to(event_weights.device)].to(nll.device)  # (B,): the batch's events
    return weighted_mean(nll, rows[:, None].expand_as(batch.targets)[where]), n


def _train_epoch(net, model, loader, optimizer, scheduler, device, grad_clip: float, metrics: dict, bar,
                 event_weights=None, fused: bool = True) -> list:
    """One pass over ``loader``: ``[loss sum, targets, tokens, events]`` of this rank (the step
    losses are appended to ``metrics["step_loss"]``)."""
    model.train()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    loss_sum, n_sum, tokens, n_events = 0.0, 0, 0, 0
    t0 = time.perf_counter()
    for batch in loader:
        batch = batch.to(device)
        with amp:
            loss, n = batch_loss(net, batch, event_weights, fused=fused)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        value = float(loss.detach())
        if n:  # a batch of events without particles has no target (loss 0): not a point on the curve
            metrics["step_loss"].append(value)
        loss_sum += value * n
        n_sum += n
        tokens += int(batch.padding_mask.sum())
        n_events += len(batch.lengths)
        if bar is not None:
            elapsed = time.perf_counter() - t0
            bar.set_postfix(loss=f"{value:.3f}", tok_s=f"{tokens / max(elapsed, 1e-9):.0f}", refresh=False)
            bar.update()
    if bar is not None:
        bar.close()
    return [loss_sum, n_sum, tokens, n_events]


@torch.no_grad()
def evaluate(model: EventTransformer, dataset: TokenDataset, collator: Collator, sampler, device, dist: Dist,
             fused: bool = True) -> float:
    """Mean loss over every target of ``dataset`` (fixed masks), summed over ranks (``fused``: through
    :func:`eventlm.model.head_loss`, as :func:`batch_loss`)."""
    model.eval()
    loss_sum, n_sum = 0.0, 0
    loader = make_loader(dataset, collator, sampler, num_workers=0)
    for batch in loader:
        batch = batch.to(device)
        where = batch.targets >= 0
        n = int(where.sum())
        if n == 0:
            continue
        if fused:
            loss_sum += float(model(batch.input_ids, batch.padding_mask, where, targets=batch.targets[where]))
        else:
            logits = model(batch.input_ids, batch.padding_mask, where)  # (N, V)
            loss_sum += float(token_nll(logits, batch.targets[where]).sum())
        n_sum += n
    loss_sum, n_sum = dist.sum([loss_sum, n_sum], device)
    return loss_sum / n_sum if n_sum else 0.0


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar off a terminal (a log file gets the epoch lines, not carriage returns)
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=None)
