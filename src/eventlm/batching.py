"""Jagged token batches: the dataset, the length-bucketed sampler and the masking collate.

Token ids stay jagged until the batch is built: :class:`TokenDataset` holds one flat int64 array of
every event's tokens plus the offsets (no padding at rest). :class:`BucketBatchSampler` groups events of
similar length so a batch pads only to its own longest event, and :class:`Collator` pads, builds the
key-padding mask and applies the masking, vectorized over the batch (no per-event Python loop).

Randomness. Nothing here draws from a global generator. The sampler's order is a function of
``(seed, epoch)``; the masking of an event is a counter-based hash of ``(seed, epoch, event index,
position)``. So an event is masked the same way whatever the batch size, the number of DataLoader
workers or the number of DDP ranks, and a resumed run sees exactly the batches and masks that an
uninterrupted run would have seen.

Masking modes (:class:`MaskingConfig`): ``one`` particle per event per step (the paper), ``k``
particles, or a ``fraction`` of them (at least one). MET tokens (the tokenizer's trailing
``n_met_tokens``) are not maskable unless ``mask_met``. An event with no maskable token (no particles)
keeps its tokens as context, gets no masked position and adds nothing to the loss; it is counted in
``Batch.n_unmaskable`` rather than dropped, and a batch with no masked position at all gives a loss of
exactly 0 (not NaN).
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from eventlm.config import MaskingConfig
from eventlm.tokenize.base import PAD, SpecialTokens

#: Targets that the loss ignores (``torch.nn.functional.cross_entropy``'s default ``ignore_index``).
IGNORE = -100

# ----------------------------------------------------------------------------------------------------
# jagged storage


def jagged_to_flat(tokens) -> tuple[np.ndarray, np.ndarray]:
    """``(flat int64 tokens, int64 offsets of length N+1)`` of a jagged array of token ids.

    Accepts an awkward array (any layout: a filtered ``tokens[mask]`` or sliced ``tokens[::2]`` array is
    an IndexedArray or a ListArray whose raw ``content`` is *not* the events' tokens; it is packed first,
    which is weaver-core's bug that dropped rows), a list of lists, or a ``(flat, offsets)`` pair.
    """
    if isinstance(tokens, tuple) and len(tokens) == 2:
        flat, offsets = (np.asarray(a, dtype=np.int64) for a in tokens)
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat):
            raise ValueError("offsets must start at 0 and end at len(flat)")
        return flat, offsets
    if isinstance(tokens, list):
        counts = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
        flat = np.fromiter((x for t in tokens for x in t), dtype=np.int64, count=int(counts.sum()))
        return flat, offsets_of(counts)
    import awkward as ak

    tokens = ak.to_packed(ak.Array(tokens))  # weaver-core: never read offsets of an unpacked array
    if tokens.ndim != 2:
        raise ValueError(f"expected jagged token ids (N * var * int), got {tokens.type}")
    counts = ak.to_numpy(ak.num(tokens, axis=1)).astype(np.int64)
    flat = ak.to_numpy(ak.flatten(tokens, axis=1)).astype(np.int64)
    return flat, offsets_of(counts)


def offsets_of(counts: np.ndarray) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]``: the int64 offsets of jagged rows of ``counts`` entries."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


class BatchKey(NamedTuple):
    """What the sampler yields: the event indices of one batch and the epoch (for the masking)."""

    indices: np.ndarray
    epoch: int


class TokenDataset(torch.utils.data.Dataset):
    """Jagged token ids of N events as flat content + offsets, fetched a batch at a time.

    ``dataset[i]`` is event i's token ids; the DataLoader calls :meth:`__getitems__` with a whole batch
    (a list of indices or a :class:`BatchKey`) and hands the result to :class:`Collator`.
    """

    def __init__(self, tokens):
        self.flat, self.offsets = jagged_to_flat(tokens)
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def __getitems__(self, key) -> dict:
        if isinstance(key, BatchKey):
            indices, epoch = np.asarray(key.indices, dtype=np.int64), key.epoch
        else:
            indices, epoch = np.asarray(key, dtype=np.int64), 0
        lengths = self.lengths[indices]
        starts = self.offsets[indices]
        # gather every token of the batch at once: position j of the flat batch reads
        # starts[event of j] + (j - first position of that event)
        batch_offsets = offsets_of(lengths)
        event_of = np.repeat(np.arange(len(indices)), lengths)
        source = starts[event_of] + (np.arange(batch_offsets[-1]) - batch_offsets[event_of])
        return {"index": indices, "flat": self.flat[source], "lengths": lengths, "epoch": epoch}


# ----------------------------------------------------------------------------------------------------
# sampler


class BucketBatchSampler(torch.utils.data.Sampler):
    """Length-bucketed batches, reshuffled every epoch from ``(seed, epoch)``.

    Each epoch: shuffle all events, cut the shuffled list into buckets of ``bucket_batches`` batches,
    sort each bucket by length (ties keep the shuffled order), cut it into batches, then shuffle the
    order of all batches. Every event is in exactly one batch per epoch; only the last batch may be
    partial and it is kept. ``shuffle=False`` gives the same bucketing without randomness (validation).

    Distributed (``num_replicas > 1``): every rank builds the same batch list, and rank r takes batches
    r, r + W, r + 2W, ... (the ``DistributedSampler`` equivalent). With ``pad_replicas`` (training) the
    list is first extended by repeating its first batches so every rank runs the same number of steps
    (DDP needs that); without it (evaluation) each event is seen by exactly one rank.
    """

    def __init__(
        self,
        lengths,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        bucket_batches: int = 32,
        num_replicas: int = 1,
        rank: int = 0,
        pad_replicas: bool = True,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.bucket_batches = max(1, bucket_batches)
        self.num_replicas = num_replicas
        self.rank = rank
        self.pad_replicas = pad_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every batch of ``epoch`` (all ranks), in the order they are served."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, epoch, 0x5A4D]) if self.shuffle else None
        order = rng.permutation(n) if rng is not None else np.arange(n)
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, n, bucket):
            members = order[start : start + bucket]
            members = members[np.argsort(self.lengths[members], kind="stable")]
            batches.extend(np.split(members, np.arange(self.batch_size, len(members), self.batch_size)))
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[np.ndarray]:
        batches = self.batches()
        if self.num_replicas > 1:
            if self.pad_replicas and batches:
                extra = -len(batches) % self.num_replicas
                batches = batches + [batches[i % len(batches)] for i in range(extra)]
            batches = batches[self.rank :: self.num_replicas]
        return batches

    def __iter__(self) -> Iterator[BatchKey]:
        for batch in self._rank_batches():
            yield BatchKey(batch, self.epoch)

    def __len__(self) -> int:
        n_batches = -(-len(self.lengths) // self.batch_size) if len(self.lengths) else 0
        if self.num_replicas == 1:
            return n_batches
        if self.pad_replicas:
            return -(-n_batches // self.num_replicas)
        return len(range(self.rank, n_batches, self.num_replicas))


# ----------------------------------------------------------------------------------------------------
# collate


class Batch(NamedTuple):
    """A padded batch. ``T`` is the longest event of the batch (+1 for the causal objective)."""

    input_ids: torch.Tensor  # (B, T) int64, PAD-filled; MASK at masked positions
    targets: torch.Tensor  # (B, T) int64, the true token where a loss is taken, IGNORE elsewhere
    padding_mask: torch.Tensor  # (B, T) bool, True at real tokens (the attention key mask)
    index: torch.Tensor  # (B,) int64, dataset index of each row
    lengths: torch.Tensor  # (B,) int64, number of tokens of each event (before BOS/EOS)
    n_unmaskable: int  # events of the batch with nothing to mask (masked objective)

    def to(self, device) -> Batch:
        non_blocking = torch.device(device).type == "cuda"
        return self._replace(
            **{
                f: getattr(self, f).to(device, non_blocking=non_blocking)
                for f in ("input_ids", "targets", "padding_mask", "index", "lengths")
            }
        )


def pad(flat: np.ndarray, lengths: np.ndarray, *, width: int | None = None, shift: int = 0):
    """Scatter jagged ``flat`` tokens into a PAD-filled ``(B, width)`` array, starting at column ``shift``.

    Returns ``(padded, rows, cols)``: the row and column each flat token went to.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max(initial=0)) + shift if width is None else width
    offsets = offsets_of(lengths)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(flat)) - offsets[rows] + shift
    padded = np.full((len(lengths), width), PAD, dtype=np.int64)
    padded[rows, cols] = flat
    return padded, rows, cols


def causal_pad(flat: np.ndarray, lengths: np.ndarray, special: SpecialTokens, *, width: int | None = None):
    """The one causal padding: ``(inputs, targets, real)``, each (B, width), width at least n + 1.

    ``inputs`` = ``BOS t1 .. tn`` then PAD; ``targets`` = ``t1 .. tn EOS`` then PAD; ``real`` is True
    at the n + 1 positions that predict a term (position t predicts term t). Training, validation,
    scoring, the classifier and the sampler's prompt all pad through here.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max(initial=0)) + 1 if width is None else width
    inputs, _, _ = pad(flat, lengths, width=width, shift=1)
    inputs[:, 0] = special.bos
    targets, _, _ = pad(flat, lengths, width=width)
    targets[np.arange(len(lengths)), lengths] = special.eos
    real = np.arange(width)[None, :] <= lengths[:, None]  # BOS + n tokens
    return inputs, targets, real


def model_inputs(flat: np.ndarray, lengths: np.ndarray, special: SpecialTokens, objective: str):
    """``(input ids (B, T), padding mask (B, T))`` of whole events as a model of ``objective`` reads
    them: causal ``BOS t1 .. tn``, masked ``t1 .. tn`` (nothing hidden)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if objective == "causal":
        inputs, _, real = causal_pad(flat, lengths, special)
        return inputs, real
    ids, _, _ = pad(flat, lengths, width=max(int(lengths.max(initial=0)), 1))
    return ids, np.arange(ids.shape[1])[None, :] < lengths[:, None]


def maskable_positions(lengths: np.ndarray, width: int, n_met_tokens: int, mask_met: bool) -> np.ndarray:
    """(B, width) bool: the positions a masked objective may hide (particles; MET too if ``mask_met``)."""
    n_maskable = np.asarray(lengths) - (0 if mask_met else n_met_tokens)
    return np.arange(width)[None, :] < np.maximum(n_maskable, 0)[:, None]


def hash_uniform(seed: int, epoch: int, index: np.ndarray, width: int) -> np.ndarray:
    """(len(index), width) uniforms in [0, 1), a pure function of (seed, epoch, event index, position).

    SplitMix64 over a counter: vectorized, and independent of how events are grouped into batches.
    """
    mix = np.uint64(0xBF58476D1CE4E5B9)
    mix2 = np.uint64(0x94D049BB133111EB)
    key = np.array([(seed * 0x9E3779B97F4A7C15 + epoch * 0xD1B54A32D192ED03) % 2**64], dtype=np.uint64)
    x = (np.asarray(index, dtype=np.uint64)[:, None] * np.uint64(0x100000001B3)
         + np.arange(width, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15) + key)
    x = (x ^ (x >> np.uint64(30))) * mix
    x = (x ^ (x >> np.uint64(27))) * mix2
    x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


class Collator:
    """Pads a batch from :meth:`TokenDataset.__getitems__` and applies the objective's masking.

    ``objective="masked"``: hide tokens (see :class:`MaskingConfig`) and take the loss there.
    ``objective="causal"``: ``BOS t1 .. tn`` -> ``t1 .. tn EOS`` (next-token prediction, no masking).
    Picklable (plain attributes), so it runs inside DataLoader workers.
    """

    def __init__(
        self,
        special: SpecialTokens,
        *,
        objective: str = "masked",
        masking: MaskingConfig = MaskingConfig(),
        n_met_tokens: int = 0,
        seed: int = 0,
        pad_to: int | None = None,
    ):
        if objective not in ("masked", "causal"):
            raise ValueError(f"objective {objective!r}: choose 'masked' or 'causal'")
        self.special = special
        self.objective = objective
        self.masking = masking
        self.n_met_tokens = n_met_tokens
        self.seed = seed
        self.pad_to = pad_to  # pad every batch to at least this width (fixed-shape baseline); None: batch max

    def __call__(self, items: dict) -> Batch:
        if isinstance(items, list):  # a DataLoader without __getitems__ support: list of single events
            raise TypeError("Collator expects TokenDataset.__getitems__ output")
        lengths, flat, index = items["lengths"], items["flat"], items["index"]
        if self.objective == "causal":
            return self._causal(flat, lengths, index)
        width = max(int(np.max(lengths, initial=0)), self.pad_to or 0)
        tokens, _, _ = pad(flat, lengths, width=width)
        m = self.masking
        maskable = maskable_positions(lengths, width, self.n_met_tokens, m.mask_met)
        n_maskable = maskable.sum(axis=1)
        if m.mode == "one":
            n_mask = np.minimum(n_maskable, 1)
        elif m.mode == "k":
            n_mask = np.minimum(n_maskable, m.k)
        else:
            n_mask = np.minimum(n_maskable, np.maximum(1, np.rint(m.fraction * n_maskable).astype(np.int64)))
        # a random rank among each event's maskable positions; mask the n_mask lowest ranks
        keys = np.where(maskable, hash_uniform(self.seed, items["epoch"], index, width), 2.0)
        ranks = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        hidden = ranks < n_mask[:, None]
        targets = np.where(hidden, tokens, IGNORE)
        inputs = np.where(hidden, self.special.mask, tokens)
        return Batch(
            input_ids=torch.from_numpy(inputs),
            targets=torch.from_numpy(targets),
            padding_mask=torch.from_numpy(tokens != PAD),
            index=torch.from_numpy(np.asarray(index, dtype=np.int64)),
            lengths=torch.from_numpy(np.asarray(lengths, dtype=np.int64)),
            n_unmaskable=int((n_maskable == 0).sum()),
        )

    def _causal(self, flat, lengths, index) -> Batch:
        lengths = np.asarray(lengths, dtype=np.int64)
        width = max(int(lengths.max(initial=0)) + 1, self.pad_to or 0)
        inputs, targets, real = causal_pad(flat, lengths, self.special, width=width)
        targets = np.where(real, targets, IGNORE)
        return Batch(
            input_ids=torch.from_numpy(inputs),
            targets=torch.from_numpy(targets),
            padding_mask=torch.from_numpy(real),
            index=torch.from_numpy(np.asarray(index, dtype=np.int64)),
            lengths=torch.from_numpy(lengths),
            n_unmaskable=0,
        )


def make_loader(
    dataset: TokenDataset,
    collator: Collator,
    sampler,
    *,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``sampler``'s batches; worker RNGs are derived from the run seed."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=num_workers,
        worker_init_fn=_seed_worker if num_workers else None,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def _seed_worker(worker_id: int) -> None:
    # torch gives each worker initial_seed() = base_seed + worker_id, base_seed drawn from the loader's
    # generator (seeded by the run seed); derive numpy's and python's streams from it.
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
