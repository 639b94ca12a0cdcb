"""``eventlm score --workers N``: scoring on several processes gives every input event exactly one
score, in input order, equal to the one-process scores."""

from __future__ import annotations

import subprocess
import sys

import awkward as ak
import numpy as np
import pytest

from eventlm.config import RunConfig
from eventlm.io import read_events
from eventlm.parallel import PoolScorer, score_files_parallel
from eventlm.score import score_files
from eventlm.train import train

TINY = RunConfig(seed=3).replace(
    model={"n_embd": 16, "n_head": 2, "n_layer": 1},
    train={"epochs": 1, "batch_size": 128, "warmup_steps": 5, "max_events": 2000},
)


@pytest.fixture(scope="module")
def models(background_events, tmp_path_factory):
    out = {}
    for objective in ("masked", "causal"):  # passed explicitly: not today's default
        out[objective] = tmp_path_factory.mktemp(f"tiny_{objective}")
        train(TINY.replace(train={"objective": objective}), background_events, out[objective], progress=False)
    return out


@pytest.fixture(scope="module")
def model(models):
    return models["masked"]


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_two_workers_give_each_event_one_score_in_input_order(models, objective, fixture_path, fixture_events,
                                                              tmp_path):
    model = models[objective]
    one = score_files(model, [fixture_path, fixture_path], tmp_path / "one.parquet", step_size=97)
    two = score_files_parallel(model, [fixture_path, fixture_path], tmp_path / "two.parquet", workers=2,
                               step_size=97, piece_events=13, confusion=tmp_path / "confusion.png")
    assert two["workers"] == 2 and two["startup_seconds"] > 0
    assert score_files_parallel(model, [fixture_path], tmp_path / "w1.parquet", workers=1)["workers"] == 1
    a, b = read_events(tmp_path / "one.parquet"), read_events(tmp_path / "two.parquet")
    assert one["events"] == two["events"] == len(b) == 2 * len(fixture_events)
    ids = np.tile(ak.to_numpy(fixture_events.event_id), 2)
    np.testing.assert_array_equal(ak.to_numpy(b.event_id), ids)  # every event once, in input order
    assert ak.to_list(b.process) == ak.to_list(a.process)
    for column in ("anomaly_score", "anomaly_score_sum", "anomaly_score_max", "reco_accuracy"):
        np.testing.assert_allclose(ak.to_numpy(b[column]), ak.to_numpy(a[column]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(b.token_nll)), ak.to_numpy(ak.flatten(a.token_nll)),
                               rtol=1e-5, atol=1e-6)
    assert (tmp_path / "confusion.png").exists()


def test_pool_scorer_refuses_work_outside_its_with_block_and_bad_sizes(model, fixture_events):
    pool = PoolScorer(model, 2)  # no process is started before `with`
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        pool.score(fixture_events[:5])
    with pytest.raises(ValueError, match="workers must be at least 1"):
        PoolScorer(model, 0)


def test_cli_score_workers(model, fixture_path, tmp_path):
    out = tmp_path / "cli.root"
    run = subprocess.run([sys.executable, "-m", "eventlm", "score", str(fixture_path), "--model", str(model),
                          "-o", str(out), "--workers", "2", "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(read_events(out)) == len(read_events(fixture_path))
    bad = subprocess.run([sys.executable, "-m", "eventlm", "score", str(fixture_path), "--model", str(model),
                          "-o", str(tmp_path / "x.root"), "--workers", "0"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["eventlm score: error: argument --workers: must be a positive integer, got 0 "
                                                "(see eventlm score --help)"]
