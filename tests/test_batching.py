"""Jagged batching: dataset, bucketed sampler, padding/masking collate."""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
import torch

from eventlm.batching import (
    IGNORE,
    BatchKey,
    BucketBatchSampler,
    Collator,
    TokenDataset,
    jagged_to_flat,
    make_loader,
)
from eventlm.config import MaskingConfig
from eventlm.tokenize.base import PAD, SpecialTokens

N_CONTENT = 885
SPECIAL = SpecialTokens(N_CONTENT)
N_MET = 2


def random_tokens(n=300, seed=0, max_particles=18, n_met=N_MET, empty_every=0):
    """Jagged token ids like the look-up table's: particles 1..875, then n_met MET tokens."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_particles + 1, size=n)
    if empty_every:
        counts[::empty_every] = 0
    events = []
    for c in counts:
        met = [int(rng.integers(876, 881)), int(rng.integers(881, 886))][:n_met]
        events.append([int(t) for t in rng.integers(1, 876, size=c)] + met)
    return ak.Array(events)


def collate_all(dataset, collator, sampler):
    return [collator(dataset.__getitems__(key)) for key in sampler]


def unpad(batch) -> list[list[int]]:
    """The original tokens of each row (inputs with the masked targets put back)."""
    tokens = torch.where(batch.targets >= 0, batch.targets, batch.input_ids)
    return [row[mask].tolist() for row, mask in zip(tokens, batch.padding_mask)]


def test_collate_pads_to_longest_event_and_masks_padding():
    tokens = random_tokens(64)
    ds = TokenDataset(tokens)
    batch = Collator(SPECIAL, n_met_tokens=N_MET)(ds.__getitems__(list(range(10))))
    lengths = ak.num(tokens[:10]).to_numpy()
    assert batch.input_ids.shape == (10, lengths.max())
    assert batch.padding_mask.sum(1).tolist() == lengths.tolist()
    assert (batch.input_ids[~batch.padding_mask] == PAD).all()
    assert (batch.input_ids[batch.padding_mask] != PAD).all()
    assert unpad(batch) == tokens[:10].tolist()


def test_one_particle_masked_per_event_never_met():
    tokens = random_tokens(200, empty_every=7)
    ds = TokenDataset(tokens)
    batch = Collator(SPECIAL, n_met_tokens=N_MET, seed=3)(ds.__getitems__(list(range(200))))
    n_particles = ak.num(tokens).to_numpy() - N_MET
    hidden = batch.targets >= 0
    np.testing.assert_array_equal(hidden.sum(1).numpy(), np.minimum(n_particles, 1))
    assert (batch.input_ids[hidden] == SPECIAL.mask).all()
    rows, cols = torch.nonzero(hidden, as_tuple=True)
    assert (cols.numpy() < n_particles[rows.numpy()]).all()  # never a MET token
    assert (batch.targets[~hidden] == IGNORE).all()
    assert batch.n_unmaskable == int((n_particles == 0).sum()) > 0


@pytest.mark.parametrize(
    "masking, expected",
    [
        (MaskingConfig(mode="k", k=3), lambda n: np.minimum(n, 3)),
        (MaskingConfig(mode="fraction", fraction=0.5), lambda n: np.minimum(n, np.maximum(1, np.rint(0.5 * n)))),
        (MaskingConfig(mode="one", mask_met=True), lambda n: np.minimum(n + N_MET, 1)),
    ],
)
def test_masking_modes(masking, expected):
    tokens = random_tokens(200)
    ds = TokenDataset(tokens)
    batch = Collator(SPECIAL, masking=masking, n_met_tokens=N_MET)(ds.__getitems__(list(range(200))))
    n_particles = ak.num(tokens).to_numpy() - N_MET
    np.testing.assert_array_equal((batch.targets >= 0).sum(1).numpy(), expected(n_particles))


def test_met_tokens_maskable_when_configured():
    tokens = ak.Array([[880, 884]] * 50)  # no particles: only MET is maskable
    ds = TokenDataset(tokens)
    batch = Collator(SPECIAL, masking=MaskingConfig(mask_met=True), n_met_tokens=N_MET)(ds.__getitems__(range(50)))
    assert (batch.targets >= 0).sum().item() == 50
    batch = Collator(SPECIAL, n_met_tokens=N_MET)(ds.__getitems__(range(50)))
    assert (batch.targets >= 0).sum().item() == 0 and batch.n_unmaskable == 50


def test_masking_reproducible_from_seed_and_independent_of_batching():
    tokens = random_tokens(300)
    ds = TokenDataset(tokens)
    collator = Collator(SPECIAL, n_met_tokens=N_MET, seed=11)

    def masked_position(batches):
        out = {}
        for b in batches:
            for i, row in zip(b.index.tolist(), (b.targets >= 0).int().argmax(1).tolist()):
                out[i] = row
        return out

    a = masked_position(collate_all(ds, collator, BucketBatchSampler(ds.lengths, 32, seed=1)))
    b = masked_position(collate_all(ds, collator, BucketBatchSampler(ds.lengths, 7, seed=2)))
    assert a == b  # same seed and epoch: same mask, whatever the batching
    other_seed = Collator(SPECIAL, n_met_tokens=N_MET, seed=12)
    c = masked_position(collate_all(ds, other_seed, BucketBatchSampler(ds.lengths, 32, seed=1)))
    assert a != c
    sampler = BucketBatchSampler(ds.lengths, 32, seed=1)
    sampler.set_epoch(1)
    d = masked_position(collate_all(ds, collator, sampler))
    assert a != d  # a new mask every epoch


def test_sampler_covers_every_event_once_and_keeps_last_partial_batch():
    lengths = np.random.default_rng(0).integers(2, 21, size=1001)
    sampler = BucketBatchSampler(lengths, 64, seed=5, bucket_batches=4)
    batches = [key.indices for key in sampler]
    assert len(batches) == len(sampler) == 16
    assert sorted(np.concatenate(batches).tolist()) == list(range(1001))
    assert sorted(len(b) for b in batches)[0] == 1001 % 64
    # bucketing: a batch holds events of similar length
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < np.ptp(lengths) / 2


def test_sampler_reshuffles_every_epoch_deterministically():
    lengths = np.random.default_rng(0).integers(2, 21, size=500)
    sampler = BucketBatchSampler(lengths, 32, seed=5)
    epoch0 = [k.indices.tolist() for k in sampler]
    assert epoch0 == [k.indices.tolist() for k in BucketBatchSampler(lengths, 32, seed=5)]
    sampler.set_epoch(1)
    epoch1 = [k.indices.tolist() for k in sampler]
    assert epoch0 != epoch1
    assert sorted(sum(epoch1, [])) == list(range(500))


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_sampler_splits_batches_between_ranks(world):
    lengths = np.random.default_rng(0).integers(2, 21, size=517)
    samplers = [BucketBatchSampler(lengths, 32, seed=1, num_replicas=world, rank=r) for r in range(world)]
    per_rank = [[k.indices for k in s] for s in samplers]
    assert len({len(p) for p in per_rank}) == 1  # every rank runs the same number of steps
    assert all(len(p) == len(s) for p, s in zip(per_rank, samplers))
    seen = np.concatenate([np.concatenate(p) for p in per_rank])
    assert set(seen.tolist()) == set(range(517))
    # evaluation: no padding, each event on exactly one rank
    evals = [BucketBatchSampler(lengths, 32, shuffle=False, num_replicas=world, rank=r, pad_replicas=False)
             for r in range(world)]
    seen = np.concatenate([k.indices for s in evals for k in s])
    assert sorted(seen.tolist()) == list(range(517))
    assert sum(len(s) for s in evals) == -(-517 // 32)


@pytest.mark.parametrize("select", ["mask", "slice", "take"])
def test_weaver_core_filtered_array_padding_drops_no_rows(select):
    """Regression (weaver-core): padding a filtered awkward array silently dropped rows.

    ``tokens[mask]`` is an IndexedArray/ListArray whose raw content and offsets are those of the
    unfiltered array; reading them without ``ak.to_packed`` pads the wrong rows.
    """
    tokens = random_tokens(400, seed=2)
    if select == "mask":
        keep = ak.num(tokens) % 3 != 0
    elif select == "slice":
        keep = slice(None, None, 2)
    else:
        keep = np.random.default_rng(0).permutation(400)[:150]
    filtered = tokens[keep]
    expected = filtered.tolist()
    flat, offsets = jagged_to_flat(filtered)
    assert len(offsets) - 1 == len(expected)
    ds = TokenDataset(filtered)
    batches = collate_all(ds, Collator(SPECIAL, n_met_tokens=N_MET), BucketBatchSampler(ds.lengths, 16, seed=0))
    rows = {}
    for b in batches:
        rows.update(zip(b.index.tolist(), unpad(b)))
    assert [rows[i] for i in range(len(expected))] == expected


def test_jagged_input_forms_agree():
    tokens = random_tokens(50)
    a = jagged_to_flat(tokens)
    b = jagged_to_flat(tokens.tolist())
    c = jagged_to_flat(a)
    for x, y in ((a, b), (a, c)):
        np.testing.assert_array_equal(x[0], y[0])
        np.testing.assert_array_equal(x[1], y[1])


def test_causal_collate_adds_bos_and_eos():
    tokens = ak.Array([[5, 6, 7, 880, 884], [], [9, 880, 884]])
    batch = Collator(SPECIAL, objective="causal")(TokenDataset(tokens).__getitems__([0, 1, 2]))
    bos, eos = SPECIAL.bos, SPECIAL.eos
    assert batch.input_ids.tolist() == [[bos, 5, 6, 7, 880, 884], [bos, 0, 0, 0, 0, 0], [bos, 9, 880, 884, 0, 0]]
    assert batch.targets.tolist() == [
        [5, 6, 7, 880, 884, eos], [eos] + [IGNORE] * 5, [9, 880, 884, eos, IGNORE, IGNORE]]
    assert batch.padding_mask.sum(1).tolist() == [6, 1, 4]


def test_dataloader_with_workers_loses_and_reorders_nothing():
    tokens = random_tokens(300, seed=4)
    ds = TokenDataset(tokens)
    collator = Collator(SPECIAL, n_met_tokens=N_MET, seed=9)
    sampler = BucketBatchSampler(ds.lengths, 32, seed=9)
    serial = [(b.index.tolist(), b.input_ids.tolist()) for b in make_loader(ds, collator, sampler, seed=9)]
    parallel = [(b.index.tolist(), b.input_ids.tolist())
                for b in make_loader(ds, collator, sampler, num_workers=2, seed=9)]
    assert serial == parallel  # workers change nothing: masks depend on (seed, epoch, event)
    assert sorted(i for idx, _ in serial for i in idx) == list(range(300))
    pickle.loads(pickle.dumps(collator))


def test_batch_key_and_plain_indices_fetch_the_same_events():
    ds = TokenDataset(random_tokens(20))
    a = ds.__getitems__([3, 1, 2])
    b = ds.__getitems__(BatchKey(np.array([3, 1, 2]), 0))
    np.testing.assert_array_equal(a["flat"], b["flat"])
    np.testing.assert_array_equal(a["flat"], np.concatenate([ds[3], ds[1], ds[2]]))
