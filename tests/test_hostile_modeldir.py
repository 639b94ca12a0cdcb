"""Hostile model directories and training/scoring options (issue 13): checked whole before any event
is read, one line naming the file or the option, exit status 2, no traceback."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import one_error, tiny_config

from eventlm.cli import main
from eventlm.errors import CheckpointMismatchError, ModelDirError
from eventlm.io import write_events
from eventlm.modeldir import ModelDir, check_device
from eventlm.train import train

TINY = tiny_config("masked")
TOML = """seed = 5
[tokenizer]
kind = "lut"
[model]
n_embd = 16
n_head = 2
n_layer = 1
[train]
objective = "masked"
epochs = {epochs}
batch_size = 64
warmup_steps = 2
"""


@pytest.fixture(scope="module")
def events():
    from conftest import random_events

    return random_events(300, seed=11)


@pytest.fixture(scope="module")
def model_dir(events, tmp_path_factory):
    from conftest import trained_model

    return trained_model(tmp_path_factory, TINY, events)


@pytest.fixture(scope="module")
def inputs(events, tmp_path_factory):
    return write_events(events[:50], tmp_path_factory.mktemp("in") / "in.parquet")


def copy_dir(model_dir, tmp_path):
    return shutil.copytree(model_dir, tmp_path / "m")


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(4096), pickle.dumps([1, 2, 3]),
                                     pickle.dumps({"hello": "world"})], ids=["empty", "random", "list", "dict"])
def test_broken_weights_are_one_line_naming_the_file(model_dir, tmp_path, inputs, capsys, content):
    m = copy_dir(model_dir, tmp_path)
    (m / "best.pt").write_bytes(content)
    out = tmp_path / "s.parquet"
    one_error(capsys, ["score", str(inputs), "--model", str(m), "-o", str(out), "--no-progress"],
              str(m / "best.pt"), "not an eventlm checkpoint")
    assert not out.exists()
    with pytest.raises(ModelDirError, match="best.pt"):
        ModelDir(m).open_scorer()


def test_malicious_pickle_does_not_run(model_dir, tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    m = copy_dir(model_dir, tmp_path)
    (m / "best.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelDirError, match="refused to unpickle"):
        ModelDir(m).check()
    assert not (tmp_path / "pwned").exists()


def test_tokenizer_from_another_run_with_same_vocabulary_is_refused(model_dir, events, tmp_path, inputs, capsys):
    other = tmp_path / "other"
    train(TINY.replace(seed=9), events[::-1][:200], other, progress=False)
    from eventlm.tokenize import load_tokenizer

    mine, theirs = load_tokenizer(model_dir / "tokenizer.json"), load_tokenizer(other / "tokenizer.json")
    assert mine.vocab_size == theirs.vocab_size and mine.fingerprint() != theirs.fingerprint()
    m = copy_dir(model_dir, tmp_path)
    shutil.copy(other / "tokenizer.json", m / "tokenizer.json")
    one_error(capsys, ["score", str(inputs), "--model", str(m), "-o", str(tmp_path / "s.parquet")],
              "tokenizer.json", "not the tokenizer best.pt was trained with")
    with pytest.raises(CheckpointMismatchError):
        ModelDir(m).load()


def test_good_directory_loads_and_matches(model_dir):
    model, tokenizer, ckpt = ModelDir(model_dir).check().load(device="cpu")
    assert not model.training and tokenizer.vocab_size == ckpt["model_config"]["vocab_size"]


@pytest.mark.parametrize("device", ["cuda:7", "banana"])
def test_unavailable_device(model_dir, tmp_path, inputs, capsys, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    one_error(capsys, ["score", str(inputs), "--model", str(model_dir), "-o", str(tmp_path / "s.parquet"),
                       "--device", device], f"--device {device}")
    with pytest.raises(ModelDirError):
        check_device(device)


def test_score_to_csv_is_refused_before_scoring(model_dir, tmp_path, inputs, capsys):
    m = copy_dir(model_dir, tmp_path)
    (m / "best.pt").write_bytes(b"")  # would fail when the model loads: the output is checked first
    one_error(capsys, ["score", str(inputs), "--model", str(m), "-o", str(tmp_path / "x.csv")],
              "x.csv", "cannot write CSV")
    assert not (tmp_path / "x.csv").exists()


def test_score_step_size_zero(model_dir, tmp_path, inputs, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["score", str(inputs), "--model", str(model_dir), "-o", str(tmp_path / "s.root"), "--step-size", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--step-size" in err


def test_train_negative_epochs_refused(events, tmp_path, capsys):
    src = write_events(events, tmp_path / "bkg.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(src), "--out", str(tmp_path / "m"), "--epochs", "-1"])
    assert exit_.value.code == 2 and "--epochs" in capsys.readouterr().err
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML.format(epochs=-1))
    one_error(capsys, ["train", str(src), "--out", str(tmp_path / "m"), "--config", str(cfg)],
              "[train] epochs = -1", ">= 1")
    cfg.write_text(TOML.format(epochs='"five"'))
    one_error(capsys, ["train", str(src), "--out", str(tmp_path / "m"), "--config", str(cfg)],
              "[train] epochs = 'five'", "int")
    assert not (tmp_path / "m").exists()


def test_resume_with_other_epochs_is_not_ignored(model_dir, events, tmp_path, capsys):
    src = write_events(events, tmp_path / "bkg.parquet")
    m = copy_dir(model_dir, tmp_path)
    before = (m / "checkpoint.pt").read_bytes()
    one_error(capsys, ["train", str(src), "--out", str(m), "--resume", "--epochs", "4", "--no-progress"],
              "--epochs 4", "was started with 1")
    assert (m / "checkpoint.pt").read_bytes() == before


def test_tokens_with_a_model_directory_and_a_zero_entry_file(model_dir, events, tmp_path, capsys):
    src = write_events(events[:40], tmp_path / "e.parquet")
    assert main(["tokens", str(src), "--tokenizer", str(model_dir)]) == 0
    assert "content ids used" in capsys.readouterr().out
    empty = write_events(events[:0], tmp_path / "zero.root")
    one_error(capsys, ["tokens", str(empty), "--tokenizer", str(model_dir)], "zero.root", "no events")
    one_error(capsys, ["tokens", str(src), "--tokenizer", str(tmp_path)], "without tokenizer.json")


@pytest.mark.parametrize("line,problem", [
    ("2;ttbar;1;50000;0.1;j,100000,-50000,0.5,0.1;", "negative pt"),
    ("2;ttbar;1;50000;0.1;j,-100000,50000,0.5,0.1;", "negative E"),
    ("2;ttbar;1;50000;0.1;j,100000,50000,1e30,0.1;", "beyond 10"),
])
def test_score_applies_the_same_policy_as_info(model_dir, tmp_path, capsys, line, problem):
    path = tmp_path / "bad.csv"
    path.write_text("1;ttbar;1;50000;0.1;j,100000,50000,-0.5,-3.1;\n" + line + "\n")
    out = tmp_path / "s.parquet"
    one_error(capsys, ["score", str(path), "--model", str(model_dir), "-o", str(out), "--no-progress"],
              str(path), "line 2", problem)
    one_error(capsys, ["info", str(path)], str(path), "line 2", problem)
    assert not out.exists()


def test_gpu_trained_learned_tokenizer_loads_on_cpu(events, tmp_path):
    """A directory whose learned tokenizer was trained on CUDA (its JSON and the checkpoint record
    device "cuda") loads on a CPU-only machine: tensors are mapped to the CPU, the fingerprint is still
    checked on the file as written."""
    import json

    config = TINY.replace(tokenizer={"kind": "vqvae", "params": {"codebook_size": 16, "hidden": 16,
                                                                 "latent_dim": 4, "patience": 1}})
    m = tmp_path / "vq"
    train(config, events, m, progress=False)
    payload = json.loads((m / "tokenizer.json").read_text())
    payload["params"]["device"] = "cuda"
    (m / "tokenizer.json").write_text(json.dumps(payload))
    for name in ("best.pt", "checkpoint.pt"):
        ckpt = torch.load(m / name, weights_only=True)
        ckpt["tokenizer"]["params"]["device"] = "cuda"
        torch.save(ckpt, m / name)
    model, tokenizer, _ = ModelDir(m).check(device="cpu").load(device="cpu")
    assert str(tokenizer.torch_device) == "cpu"
    assert len(ModelDir(m).open_scorer().score(events[:5])["anomaly_score"]) == 5


def test_score_on_a_truncated_root_file(model_dir, events, tmp_path, capsys):
    good = write_events(events, tmp_path / "good.root")
    cut = tmp_path / "cut.root"
    cut.write_bytes(good.read_bytes()[:-300])
    out = tmp_path / "s.root"
    one_error(capsys, ["score", str(cut), "--model", str(model_dir), "-o", str(out), "--no-progress"],
              str(cut), "truncated or corrupt")
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.root")] == []


def test_resume_with_the_same_command_line_is_accepted(events, tmp_path, capsys):
    """Repeating the original command with --resume (config file plus a flag) continues the run;
    a config file that asks for something else is refused."""
    src = write_events(events, tmp_path / "bkg.parquet")
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML.format(epochs=5))
    out = tmp_path / "m"
    argv = ["train", str(src), "--out", str(out), "--config", str(cfg), "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    assert main([*argv, "--resume"]) == 0
    cfg.write_text(TOML.format(epochs=1).replace("batch_size = 64", "batch_size = 32"))
    one_error(capsys, ["train", str(src), "--out", str(out), "--config", str(cfg), "--resume"],
              "run.toml", "[train] batch_size")


def test_written_checkpoint_reads_back_and_is_checked(model_dir, tmp_path):
    md = ModelDir(tmp_path / "w")
    from eventlm.tokenize import load_tokenizer

    md.write_tokenizer(load_tokenizer(model_dir / "tokenizer.json"))
    state = torch.load(model_dir / "best.pt", weights_only=True)
    path = md.write_checkpoint(state, which="best")
    assert path.name == "best.pt" and [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    model, tokenizer, ckpt = md.check().load()
    assert ckpt["model_config"] == state["model_config"]


def test_score_on_error_skip_scores_every_good_event_once_in_order(model_dir, events, tmp_path, capsys):
    """`eventlm score --on-error skip`: the bad lines are left out and counted, the rest scored in order."""
    import awkward as ak

    from eventlm.io import read_events

    good = write_events(events[:40], tmp_path / "good.csv")
    lines = good.read_text().splitlines()
    lines[5] = lines[5].replace(";", ";;", 1)  # a malformed line
    lines[17] = "not an event"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scored.parquet"
    assert main(["score", "--model", str(model_dir), str(bad), "--output", str(tmp_path / "x.parquet"),
                 "--no-progress"]) == 2
    assert "bad.csv, line 6" in capsys.readouterr().err
    assert main(["score", "--model", str(model_dir), str(bad), "--output", str(out), "--on-error", "skip",
                 "--no-progress"]) == 0
    scored = read_events(out)
    expected = np.delete(ak.to_numpy(events[:40].event_id), [5, 17])
    np.testing.assert_array_equal(ak.to_numpy(scored.event_id), expected)
    assert np.isfinite(ak.to_numpy(scored.anomaly_score)).all()


def test_train_on_error_skip_trains_on_the_good_events(events, tmp_path, capsys):
    """`eventlm train --on-error skip`: bad background lines are left out, named, and not trained on."""
    import json

    good = write_events(events[:200], tmp_path / "bkg.csv")
    lines = good.read_text().splitlines()
    lines[3] = "garbage"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    args = ["train", str(bad), "--out", str(tmp_path / "m"), "--epochs", "1", "--no-progress"]
    assert main(args) == 2 and "bad.csv, line 4" in capsys.readouterr().err
    assert main([*args, "--on-error", "skip"]) == 0
    split = json.loads((tmp_path / "m" / "split.json").read_text())
    assert split["n_events"] == 199
    assert (tmp_path / "m" / "calibration.json").exists()
