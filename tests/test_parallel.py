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
from eventlm.apply import score_files
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


def test_experiment_files_score_the_same_on_two_workers(model):
    """Regression (issue 24): `score --workers 2` on NanoAOD or PHYSLITE died with `PicklingError:
    Can't pickle <lambda> ... vector.backends.awkward` (the readers' events carried coffea's behaviour
    dict). Every real NanoAOD and PHYSLITE file (TTree and RNTuple) in tests/data: the events as the
    reader gives them, scored on two workers, get the scores of one, in order."""
    from conftest import TEST_DATA

    files = sorted(TEST_DATA.glob("*.root"))
    assert len(files) >= 14
    with PoolScorer(model, 2) as pool:  # each step cut in two pieces, one per worker
        for path in files:
            events = read_events(path)
            one, two = pool.local.score(events), pool.score(events)
            assert len(events) > 0 and sorted(one) == sorted(two), path.name
            for name, values in one.items():
                a, b = (ak.to_numpy(ak.ravel(v)) for v in (values, two[name]))
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=f"{path.name} {name}")


def test_workers_are_capped_by_the_events_and_the_cores(model, nanoaod_path, tmp_path, caplog):
    """`--workers 1000` on 5 events starts no more processes than events or cores, and says so; the
    NanoAOD events reach the workers (they could not be pickled before)."""
    from eventlm.parallel import capped_workers, usable_cores

    assert capped_workers(1000, 5, cores=16) == 5 and capped_workers(1000, 500, cores=3) == 3
    assert capped_workers(2, 500, cores=16) == 2 and capped_workers(4, 0, cores=16) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "--workers 1000: starting 5 worker process(es) (the input holds 5 event(s))",
        "--workers 1000: starting 3 worker process(es) (3 usable core(s))",
        "--workers 4: starting 1 worker process(es) (the input holds 0 event(s))"]
    run = subprocess.run([sys.executable, "-m", "eventlm", "score", str(nanoaod_path), "--max-events", "5",
                          "--model", str(model), "-o", str(tmp_path / "s.parquet"), "--workers", "1000",
                          "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    cap = [line for line in run.stderr.splitlines() if "--workers 1000" in line]
    assert len(cap) == 1 and f"starting {min(5, usable_cores())} worker" in cap[0], run.stderr
    scored = read_events(tmp_path / "s.parquet")
    assert scored.event_id.tolist() == read_events(nanoaod_path, max_events=5).event_id.tolist()
