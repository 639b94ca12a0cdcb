"""Training: split the background, fit the tokenizer, train the transformer, write the model directory.

::

    from eventlm.config import RunConfig
    from eventlm.train import train, load_split

    result = train(RunConfig(), ["data/background.csv.gz"], "runs/lut")
    test_ids = load_split("runs/lut")["test"]          # held-out background event ids

The model directory (docs/architecture.md): ``checkpoint.pt`` (the last epoch: model, optimizer,
scheduler and RNG states, model and run config, tokenizer params, seed, package version, split,
metrics), ``best.pt`` (the weights of the best validation epoch, same metadata, no optimizer),
``tokenizer.json``, ``config.toml``, ``split.json``, ``metrics.json`` and ``loss.png``.

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
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from eventlm._version import __version__
from eventlm.batching import BucketBatchSampler, Collator, TokenDataset, make_loader
from eventlm.calibration import Multiplicity
from eventlm.config import RunConfig, save_config
from eventlm.errors import CheckpointMismatchError
from eventlm.model import EventTransformer, ModelConfig

log = logging.getLogger(__name__)

#: The masking "epoch" key of the validation set: fixed, so the validation loss compares across epochs.
VALIDATION_EPOCH = 1_000_003
SPLITS = ("train", "validation", "test")


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


def load_split(model_dir) -> dict[str, np.ndarray]:
    """Event ids of the train / validation / test background of a model directory (``split.json``)."""
    data = json.loads((Path(model_dir) / "split.json").read_text())
    return {name: np.asarray(data[name], dtype=np.int64) for name in SPLITS}


def load_background(background, max_events: int | None = None):
    """An event array from paths (read through :mod:`eventlm.io`) or an event array."""
    import awkward as ak

    if isinstance(background, ak.Array):
        return background if not max_events else background[:max_events]
    from eventlm.io import read_events

    return read_events(background, max_events=max_events or None)


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


def resolve_device(device: str, dist: Dist) -> torch.device:
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda requested but torch sees no CUDA device")
        if dist.world > 1:
            torch.cuda.set_device(dist.local_rank)
            return torch.device("cuda", dist.local_rank)
    return torch.device(device)


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


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _write_json(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def load_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint file as a dict (see :func:`eventlm.modeldir.read_checkpoint`: one-line errors)."""
    from eventlm.modeldir import read_checkpoint

    return read_checkpoint(path, map_location=map_location)


def load_model(model_dir, *, which: str = "best", device="cpu"):
    """``(model in eval mode, tokenizer, checkpoint dict)`` of a model directory.

    ``which``: ``"best"`` (the best validation epoch, falling back to the last) or ``"last"``.
    The directory is checked whole first (:class:`eventlm.modeldir.ModelDir`).
    """
    from eventlm.modeldir import ModelDir

    return ModelDir(model_dir).load(which=which, device=device)


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


def _fingerprint(event_ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(event_ids, dtype=np.int64).tobytes()).hexdigest()[:16]


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with ``n`` torch intra-op threads (``n <= 0``: leave torch's setting), then restore it.

    The model is small: one thread per process is faster than several, and on a shared machine
    several threads per process slow everything down (OpenMP spinning).
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    config: RunConfig,
    background,
    out_dir,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train on ``background`` (paths or an event array) and write the model directory ``out_dir``.

    ``resume``: continue from ``out_dir/checkpoint.pt`` (its run config is used; the given one is
    ignored except ``device``). ``stop_after_epochs``: return after that many epochs of this call
    (the checkpoint is written, ``resume=True`` continues), e.g. for time-limited batch slots.
    """
    with cpu_threads(config.train.threads if not config.device.startswith("cuda") else 0):
        return _train(config, background, out_dir, resume=resume, progress=progress,
                      stop_after_epochs=stop_after_epochs)


def _train(config, background, out_dir, *, resume, progress, stop_after_epochs) -> TrainResult:
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    dist = init_distributed(config.device)
    ckpt = None
    if resume and (out_dir / "checkpoint.pt").exists():
        ckpt = load_checkpoint(out_dir / "checkpoint.pt")
        config = RunConfig.from_dict(ckpt["run_config"]).replace(device=config.device)
        log.info("resuming %s after epoch %d", out_dir, ckpt["epoch"])
    elif resume:
        log.info("no checkpoint in %s: starting a new run", out_dir)
    device = resolve_device(config.device, dist)
    tc = config.train
    seed = config.seed
    seed_everything(seed)

    # ---- data and split ------------------------------------------------------------------------
    events = load_background(background, tc.max_events)
    event_ids = np.asarray(events.event_id, dtype=np.int64)
    split = split_indices(len(events), (config.split.train, config.split.validation, config.split.test), seed)
    split_ids = {name: event_ids[split[name]] for name in SPLITS}
    if ckpt is not None:
        if ckpt["data_fingerprint"] != _fingerprint(event_ids) or any(
            not torch.equal(torch.from_numpy(split_ids[s]), ckpt["split"][s]) for s in SPLITS
        ):
            raise CheckpointMismatchError(f"{out_dir}: the background events differ from the interrupted run's")
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.toml")
        payload = {"seed": seed, "fractions": asdict(config.split), "n_events": len(events),
                   **{s: split_ids[s].tolist() for s in SPLITS}}
        if len(np.unique(event_ids)) != len(event_ids):
            log.warning("event ids are not unique: split.json also records input positions")
            payload["index"] = {s: split[s].tolist() for s in SPLITS}
        _write_json(payload, out_dir / "split.json")

    # ---- tokenizer (fitted on the training events only, by rank 0) -----------------------------
    from eventlm.tokenize import load_tokenizer

    if ckpt is None and dist.is_main:
        tokenizer = _fit_tokenizer(config, events[split["train"]], str(device), progress)
        tokenizer.save(out_dir / "tokenizer.json")
    dist.barrier()
    if ckpt is not None or not dist.is_main:
        tokenizer = load_tokenizer(out_dir / "tokenizer.json")
    train_ds = TokenDataset(tokenizer.encode(events[split["train"]]))
    val_ds = TokenDataset(tokenizer.encode(events[split["validation"]]))
    processes = sorted(set(np.asarray(events.process[split["train"]]).tolist()))
    del events

    special = tokenizer.special
    collator = Collator(special, objective=tc.objective, masking=config.masking,
                        n_met_tokens=tokenizer.n_met_tokens, seed=seed)
    entropy = unigram_entropy(target_tokens(train_ds, tc.objective, tokenizer.n_met_tokens,
                                            config.masking.mask_met, special.eos))
    train_sampler = BucketBatchSampler(train_ds.lengths, tc.batch_size, seed=seed, bucket_batches=tc.bucket_batches,
                                       num_replicas=dist.world, rank=dist.rank, pad_replicas=True)
    val_sampler = BucketBatchSampler(val_ds.lengths, tc.batch_size, seed=seed, shuffle=False,
                                     bucket_batches=tc.bucket_batches, num_replicas=dist.world, rank=dist.rank,
                                     pad_replicas=False)
    val_sampler.set_epoch(VALIDATION_EPOCH)

    # ---- model and optimizer -------------------------------------------------------------------
    torch.manual_seed(seed)
    model = build_model(config, tokenizer.vocab_size).to(device)
    optimizer = model.configure_optimizer(tc.lr, tc.weight_decay, device_type=device.type)
    total_steps = max(1, tc.epochs * len(train_sampler))
    min_ratio = tc.min_lr / tc.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, tc.warmup_steps, min_ratio)
    )
    metrics = {"epoch": [], "train_loss": [], "val_loss": [], "lr": [], "step_loss": [],
               "tokens_per_s": [], "events_per_s": [], "unigram_entropy": entropy}
    start_epoch, best_epoch, best_val, since_best, stopped_early = 0, 0, math.inf, 0, False
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        metrics = ckpt["metrics"]
        start_epoch = ckpt["epoch"]
        best_epoch, best_val = ckpt["best_epoch"], ckpt["best_val_loss"]
        since_best, stopped_early = ckpt["epochs_since_best"], ckpt["stopped_early"]
        set_rng_state(ckpt["rng"])
    net = model
    if dist.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if dist.is_main:
        log.info("model: %d parameters, %s; %d train / %d validation events; unigram entropy %.3f nats",
                 model.num_params(), model.config, len(train_ds), len(val_ds), entropy)

    meta = {
        "model_config": model.config.to_dict(),
        "run_config": config.to_dict(),
        "tokenizer": {"kind": tokenizer.kind, "params": tokenizer.get_params()},
        "seed": seed,
        "eventlm_version": __version__,
        "split": {s: torch.from_numpy(split_ids[s]) for s in SPLITS},
        "data_fingerprint": _fingerprint(event_ids),
        "objective": tc.objective,
        "n_met_tokens": tokenizer.n_met_tokens,
        "processes": processes,
        # the object-count term of the masked score (eventlm.calibration.Multiplicity)
        "multiplicity": Multiplicity.fit(np.maximum(train_ds.lengths - tokenizer.n_met_tokens, 0),
                                         int(train_ds.lengths.max(initial=0))).to_list(),
    }
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    epoch = start_epoch
    epochs_this_call = 0
    while epoch < tc.epochs and not stopped_early:
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
        train_sampler.set_epoch(epoch)
        loader = make_loader(train_ds, collator, train_sampler, num_workers=tc.num_workers,
                             seed=seed * 1_000_003 + epoch, pin_memory=device.type == "cuda")
        model.train()
        loss_sum, n_sum, tokens, n_events = 0.0, 0, 0, 0
        t0 = time.perf_counter()
        bar = _progress(len(train_sampler), f"epoch {epoch + 1}/{tc.epochs}", progress and dist.is_main)
        for batch in loader:
            batch = batch.to(device)
            where = batch.targets >= 0
            with amp:
                logits = net(batch.input_ids, batch.padding_mask, where)  # (N, V)
            n = int(where.sum())
            loss = F.cross_entropy(logits.float(), batch.targets[where]) if n else logits.sum() * 0.0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
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
        elapsed = time.perf_counter() - t0
        loss_sum, n_sum, tokens, n_events = dist.sum([loss_sum, n_sum, tokens, n_events], device)
        val_loss = evaluate(model, val_ds, collator, val_sampler, device, dist)
        epoch += 1
        epochs_this_call += 1
        metrics["epoch"].append(epoch)
        metrics["train_loss"].append(loss_sum / max(n_sum, 1))
        metrics["val_loss"].append(val_loss)
        metrics["lr"].append(scheduler.get_last_lr()[0])
        metrics["tokens_per_s"].append(tokens / elapsed)
        metrics["events_per_s"].append(n_events / elapsed)
        improved = val_loss < best_val
        if improved:
            best_epoch, best_val, since_best = epoch, val_loss, 0
        else:
            since_best += 1
            stopped_early = since_best >= tc.patience
        metrics["best_epoch"] = best_epoch
        if dist.is_main:
            log.info("epoch %d: train %.4f, validation %.4f (unigram %.4f), %.0f events/s%s", epoch,
                     metrics["train_loss"][-1], val_loss, entropy, metrics["events_per_s"][-1],
                     " (best)" if improved else "")
            state = {**meta, "model": model.state_dict(), "epoch": epoch, "metrics": metrics,
                     "best_epoch": best_epoch, "best_val_loss": best_val, "epochs_since_best": since_best,
                     "stopped_early": stopped_early}
            if improved:
                _atomic_save(state, out_dir / "best.pt")
            _atomic_save({**state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "rng": rng_state()}, out_dir / "checkpoint.pt")
            _write_json(metrics, out_dir / "metrics.json")
        dist.barrier()

    finished = epoch >= tc.epochs or stopped_early
    if dist.is_main and finished and metrics["epoch"]:
        from eventlm.plotting.training import plot_loss

        plot_loss(metrics, out_dir / "loss.png")
    dist.barrier()
    return TrainResult(out_dir=out_dir, epochs_run=epoch, best_epoch=best_epoch, best_val_loss=best_val,
                       stopped_early=stopped_early, metrics=metrics, seconds=time.perf_counter() - t_start)


@torch.no_grad()
def evaluate(model: EventTransformer, dataset: TokenDataset, collator: Collator, sampler, device, dist: Dist) -> float:
    """Mean loss over every target of ``dataset`` (fixed masks), summed over ranks."""
    model.eval()
    loss_sum, n_sum = 0.0, 0
    loader = make_loader(dataset, collator, sampler, num_workers=0)
    for batch in loader:
        batch = batch.to(device)
        where = batch.targets >= 0
        n = int(where.sum())
        if n == 0:
            continue
        logits = model(batch.input_ids, batch.padding_mask, where)  # (N, V)
        loss_sum += float(F.cross_entropy(logits.float(), batch.targets[where], reduction="sum"))
        n_sum += n
    loss_sum, n_sum = dist.sum([loss_sum, n_sum], device)
    return loss_sum / n_sum if n_sum else 0.0


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
