"""Event weights in the training loss ([train] event_weights): none (default), abs, signed."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import torch

from eventlm.config import RunConfig
from eventlm.train import loss_weights, train, weighted_mean

TINY = RunConfig(seed=7).replace(
    tokenizer={"kind": "lut", "params": {}},
    model={"n_embd": 16, "n_head": 2, "n_layer": 1},
    train={"objective": "causal", "epochs": 1, "batch_size": 64, "warmup_steps": 2, "threads": 1},
)


def test_weighted_loss_is_the_signed_weighted_mean():
    from eventlm.model import token_nll

    rng = np.random.default_rng(0)
    logits, targets = torch.from_numpy(rng.normal(size=(50, 7)).astype(np.float32)), torch.from_numpy(rng.integers(0, 7, 50))
    w = torch.from_numpy(rng.uniform(0.5, 1.5, 50).astype(np.float32) * np.where(rng.random(50) < 0.25, -1, 1))
    ce = -torch.log_softmax(logits, dim=1)[torch.arange(50), targets]
    got = weighted_mean(token_nll(logits, targets), w)
    assert float(got) == pytest.approx(float((w * ce).sum() / w.abs().sum()), rel=1e-6)


def test_loss_weights_treat_negative_weights_as_documented():
    w = np.array([2.0, -1.0, 1.0, 0.0])
    assert loss_weights(w, "none") is None
    np.testing.assert_allclose(loss_weights(w, "abs"), np.abs(w) / 1.0)  # mean |w| = 1
    np.testing.assert_allclose(loss_weights(w, "signed"), w / 1.0)
    with pytest.raises(ValueError, match="event_weights must be one of"):
        loss_weights(w, "clip")
    with pytest.raises(ValueError, match="all 0"):
        loss_weights(np.zeros(3), "abs")


def test_equal_weights_train_as_no_weights_and_signed_weights_train(tmp_path):
    from conftest import random_events

    events = random_events(400, seed=4)
    equal = ak.with_field(events, np.full(len(events), 3.5), "weight")
    plain = train(TINY, equal, tmp_path / "plain", progress=False)
    weighted = train(TINY.replace(train={"event_weights": "signed"}), equal, tmp_path / "weighted", progress=False)
    # every weight the same: the weighted loss is the plain mean (up to the float32 rounding of the sums)
    np.testing.assert_allclose(weighted.metrics["step_loss"], plain.metrics["step_loss"], rtol=2e-5)
    # NLO-like: a quarter of the events weigh < 0; the loss stays finite and the card says weights were used
    rng = np.random.default_rng(1)
    nlo = ak.with_field(events, np.where(rng.random(len(events)) < 0.25, -1.0, 1.0), "weight")
    result = train(TINY.replace(train={"event_weights": "signed"}), nlo, tmp_path / "nlo", progress=False)
    assert np.isfinite(result.metrics["step_loss"]).all()
    assert json.loads((tmp_path / "nlo" / "model_card.json").read_text())["weights_in_loss"] is True
    assert json.loads((tmp_path / "plain" / "model_card.json").read_text())["weights_in_loss"] is False
