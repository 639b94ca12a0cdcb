"""Training: split, model directory, learning, determinism, resume, config files."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import torch

from eventlm.config import RunConfig, dumps_toml, load_config, save_config
from eventlm.modeldir import ModelDir
from eventlm.rows import row_keys
from eventlm.train import split_indices, train

#: A tiny, fast run (mechanics tests).
TINY = RunConfig(seed=7).replace(
    model={"n_embd": 32, "n_head": 2, "n_layer": 1},
    train={"epochs": 3, "batch_size": 64, "warmup_steps": 5, "patience": 10},
)


@pytest.fixture(scope="module")
def tiny_events():
    from conftest import random_events

    return random_events(600, seed=3)


def test_split_is_seeded_disjoint_and_complete():
    a = split_indices(1000, (0.7, 0.1, 0.2), seed=1)
    b = split_indices(1000, (0.7, 0.1, 0.2), seed=1)
    c = split_indices(1000, (0.7, 0.1, 0.2), seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["test"], c["test"])
    assert [len(a[k]) for k in ("train", "validation", "test")] == [700, 100, 200]
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(1000))


def test_model_directory_has_every_artefact(tiny_events, tmp_path):
    result = train(TINY.replace(train={"epochs": 1}), tiny_events, tmp_path, progress=False)
    for name in ("checkpoint.pt", "best.pt", "tokenizer.json", "config.toml", "split.json", "metrics.json"):
        assert (tmp_path / name).exists(), name
    assert not list(tmp_path.glob(".*tmp*"))  # every file renamed into place
    assert load_config(tmp_path / "config.toml") == TINY.replace(train={"epochs": 1})
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for key in ("model_config", "run_config", "tokenizer", "seed", "eventlm_version", "split", "optimizer",
                "scheduler", "rng", "epoch", "metrics", "model"):
        assert key in ckpt, key
    md = ModelDir(tmp_path)
    split = json.loads((tmp_path / "split.json").read_text())
    keys = np.concatenate([np.asarray(split[s], dtype=np.uint64) for s in ("train", "validation", "test")])
    assert sorted(keys.tolist()) == sorted(row_keys(tiny_events).tolist())  # every row once
    masks = [md.in_split(tiny_events, s) for s in ("train", "validation", "test")]
    np.testing.assert_array_equal(sum(m.astype(int) for m in masks), 1)
    assert result.epochs_run == 1 and json.loads((tmp_path / "metrics.json").read_text())["epoch"] == [1]
    # the tokenizer was fitted on the training events only
    from eventlm.tokenize import get_tokenizer

    fractions = (TINY.split.train, TINY.split.validation, TINY.split.test)
    positions = split_indices(len(tiny_events), fractions, TINY.seed)  # computed apart from the keys
    np.testing.assert_array_equal(np.flatnonzero(masks[0]), positions["train"])
    train_events = tiny_events[positions["train"]]
    expected = get_tokenizer("lut").fit(train_events).get_params()
    _, tokenizer, _ = ModelDir(tmp_path).load()
    assert tokenizer.get_params() == expected


def test_same_seed_gives_bitwise_same_losses(tiny_events, tmp_path):
    a = train(TINY, tiny_events, tmp_path / "a", progress=False)
    b = train(TINY, tiny_events, tmp_path / "b", progress=False)
    assert a.metrics["step_loss"] == b.metrics["step_loss"]
    assert a.metrics["val_loss"] == b.metrics["val_loss"]
    c = train(TINY.replace(seed=8), tiny_events, tmp_path / "c", progress=False)
    assert a.metrics["step_loss"] != c.metrics["step_loss"]


def test_fused_training_trains_the_same_model_as_the_reference(tiny_events, tmp_path):
    """[train] fused (the default: eventlm.model.head_loss, the fused attention, fused AdamW) and the
    reference ops, same seed: the same validation losses, epoch by epoch, to float32 rounding."""
    assert TINY.train.fused
    fused = train(TINY, tiny_events, tmp_path / "fused", progress=False)
    reference = train(TINY.replace(train={"fused": False}), tiny_events, tmp_path / "reference", progress=False)
    assert fused.metrics["val_loss"] == pytest.approx(reference.metrics["val_loss"], rel=1e-5)
    assert fused.metrics["step_loss"] == pytest.approx(reference.metrics["step_loss"], rel=1e-5)
    assert fused.metrics["val_loss"][-1] < fused.metrics["val_loss"][0]  # it learns


def test_resume_after_interruption_equals_uninterrupted_run(tiny_events, tmp_path):
    full = train(TINY, tiny_events, tmp_path / "full", progress=False)
    part = train(TINY, tiny_events, tmp_path / "part", progress=False, stop_after_epochs=1)
    assert part.epochs_run == 1
    resumed = train(RunConfig(), tiny_events, tmp_path / "part", resume=True, progress=False)  # config from ckpt
    assert resumed.epochs_run == 3
    assert resumed.metrics["step_loss"] == full.metrics["step_loss"]
    assert resumed.metrics["val_loss"] == full.metrics["val_loss"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_data(tiny_events, tmp_path):
    from eventlm.errors import CheckpointMismatchError

    train(TINY, tiny_events, tmp_path, progress=False, stop_after_epochs=1)
    with pytest.raises(CheckpointMismatchError):
        train(TINY, tiny_events[:500], tmp_path, resume=True, progress=False)


def test_early_stopping_keeps_best_epoch(tiny_events, tmp_path):
    """A learning rate far too large makes the validation loss rise: training stops after
    ``patience`` epochs without improvement, and best.pt is the best epoch's, not the last."""
    config = TINY.replace(train={"epochs": 30, "patience": 2, "lr": 0.05, "warmup_steps": 1})
    result = train(config, tiny_events, tmp_path, progress=False)
    val = result.metrics["val_loss"]
    assert result.stopped_early
    assert result.epochs_run < 30 and result.epochs_run - result.best_epoch == 2
    assert result.best_val_loss == min(val) and result.best_epoch == int(np.argmin(val)) + 1
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and last["epoch"] == result.epochs_run and last["stopped_early"]
    again = train(config, tiny_events, tmp_path, resume=True, progress=False)  # nothing left to do
    assert again.epochs_run == result.epochs_run and again.metrics["val_loss"] == val


def test_causal_objective_trains_and_samples_decodable_events(tiny_events, tmp_path):
    result = train(TINY.replace(train={"objective": "causal", "epochs": 1}), tiny_events, tmp_path, progress=False)
    assert np.isfinite(result.best_val_loss)
    from eventlm.sample import sample_tokens

    model, tokenizer, _ = ModelDir(tmp_path).load()
    flat, lengths = sample_tokens(model, tokenizer, 8, seed=0)
    decoded = tokenizer.decode(ak.unflatten(flat, lengths), specials="drop")
    assert len(decoded) == 8


def test_training_on_background_lowers_validation_loss_below_unigram_entropy(background_events, tmp_path):
    """A model that uses the rest of the event predicts the masked particle better than its frequency."""
    # ~160 optimizer steps: enough to get clear of the unigram (the default run reaches ~1 nat below it)
    config = RunConfig(seed=1).replace(train={"epochs": 3, "max_events": 20_000, "warmup_steps": 20})
    result = train(config, background_events, tmp_path, progress=False)
    entropy = result.metrics["unigram_entropy"]
    val = result.metrics["val_loss"]
    assert val[-1] < val[0]
    assert result.best_val_loss < entropy - 0.3, (result.best_val_loss, entropy)


def test_config_toml_round_trip(tmp_path):
    config = RunConfig(seed=3, device="cuda").replace(
        tokenizer={"kind": "lut", "params": {"preset": "fine", "max_particles": 12}},
        model={"n_layer": 3, "normformer": True, "position": "learned"},
        train={"objective": "causal", "lr": 1e-3},
        masking={"mode": "fraction", "fraction": 0.3, "mask_met": True},
        split={"train": 0.5, "validation": 0.25, "test": 0.25},
    )
    path = save_config(config, tmp_path / "run.toml")
    assert load_config(path) == config
    assert "[masking]" in dumps_toml(config.to_dict())
    (tmp_path / "bad.toml").write_text("[train]\nepochz = 3\n")
    with pytest.raises(ValueError, match="epochz"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(ValueError):
        RunConfig().replace(split={"train": 0.9})  # no longer sums to 1
