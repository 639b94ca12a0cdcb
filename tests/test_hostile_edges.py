"""Hostile numbers and inputs that parse but make no sense (issue 24): every numeric option and config
value is checked at its edges before any work (NaN, inf, negative, beyond int64, shapes that do not fit
together), in one line naming the option or key, exit status 2; ids that would overflow are refused,
never wrapped."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import one_error, random_events, study_toml

from eventlm.config import RunConfig
from eventlm.io import read_events, write_events

TINY = RunConfig(seed=5).replace(
    tokenizer={"kind": "lut", "params": {}},
    model={"n_embd": 16, "n_head": 2, "n_layer": 1},
    train={"objective": "causal", "epochs": 1, "batch_size": 64, "warmup_steps": 2},
)


def parse_error(capsys, argv, *needles):
    """An option argparse refuses: exit status 2 and one line holding every needle."""
    from eventlm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    write_events(random_events(60, seed=31), folder / "in.parquet")
    return folder


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    """A causal tiny model with its sampling table."""
    from conftest import trained_model

    from eventlm.sample import prepare_sampling

    events = random_events(200, seed=32)
    model = trained_model(tmp_path_factory, TINY, events)
    prepare_sampling(model, events)
    return model


@pytest.mark.parametrize(("toml", "needle"), [
    ("seed = -1", "seed = -1 must be in [0, 2**63 - 1]"),
    ("seed = 1180591620717411303424", "seed = 1180591620717411303424 must be in [0, 2**63 - 1]"),
    ("[model]\nn_embd = 18\nn_head = 4", "[model] n_embd = 18 is not a multiple of n_head = 4"),
    ("[model]\nn_embd = 12\nn_head = 4", "needs an even head dimension"),
    ('[model]\nposition = "learned"\nmax_len = 4', "[model] max_len = 4 is shorter than the longest token sequence"),
    ("[model]\ndropout = 1.5", "[model] dropout = 1.5 must be < 1"),
    ("[train]\nlr = nan", "[train] lr = nan must be a finite number"),
    ("[train]\ngrad_clip = inf", "[train] grad_clip = inf must be a finite number"),
])
def test_train_config_values_at_the_edges(folder, tmp_path, capsys, toml, needle):
    (tmp_path / "c.toml").write_text(toml + "\n")
    one_error(capsys, ["train", str(folder / "in.parquet"), "--out", str(tmp_path / "m"), "--config",
                       str(tmp_path / "c.toml")], "c.toml", needle)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**70), "1.5"])
def test_seeds_out_of_range_are_refused(folder, tmp_path, capsys, seed):
    for argv in (["train", str(folder / "in.parquet"), "--out", str(tmp_path / "m")],
                 ["sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "s.parquet")],
                 ["finetune", str(tmp_path), "--signal", "s.parquet", "--background", "b.parquet", "--out", "x"]):
        parse_error(capsys, [*argv, f"--seed={seed}"], "--seed", seed)


@pytest.mark.parametrize("temperature", ["nan", "inf", "-inf", "0", "-1"])
def test_sample_temperature_must_be_finite_and_positive(tmp_path, capsys, temperature):
    parse_error(capsys, ["sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "s.parquet"),
                         f"--temperature={temperature}"], "--temperature", "finite number > 0", temperature)


def test_sample_first_id_is_refused_beyond_int64_never_wrapped(causal, tmp_path, capsys):
    top = 2**63 - 1
    one_error(capsys, ["sample", str(causal), "-n", "10", "-o", str(tmp_path / "a.parquet"),
                       f"--first-id={top - 5}", "--no-progress"], "--first-id", "would not fit in int64", "never wrapped")
    one_error(capsys, ["sample", str(causal), "-n", "1", "-o", str(tmp_path / "a.parquet"),
                       f"--first-id={-(2**63) - 1}", "--no-progress"], "--first-id", "int64")
    assert not (tmp_path / "a.parquet").exists()
    from eventlm.cli import main

    assert main(["sample", str(causal), "-n", "3", "-o", str(tmp_path / "b.parquet"), f"--first-id={top - 2}",
                 "--no-progress"]) == 0
    assert read_events(tmp_path / "b.parquet").event_id.tolist() == [top - 2, top - 1, top]


def test_analyze_workers_zero_and_a_scheduler_with_nothing_listening(folder, tmp_path, capsys):
    bkg = write_events(random_events(40, seed=33), tmp_path / "b.root")
    sig = write_events(random_events(40, seed=34, process="sig", start_id=1000), tmp_path / "s.root")
    (tmp_path / "study.toml").write_text(study_toml(background=bkg, signal=sig))
    config = str(tmp_path / "study.toml")
    parse_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--executor", "futures", "--workers", "0"],
                "--workers", "must be a positive integer, got 0")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    one_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{port}"],
              "study.toml", "[run] scheduler", f"127.0.0.1:{port}", "no dask scheduler answers there")
    assert time.perf_counter() - t0 < 10  # dask itself waits 30 s, after reading and writing the inputs
    one_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--scheduler", "nonsense"],
              "expected a scheduler address like tcp://HOST:8786")
    assert not (tmp_path / "o").exists()
