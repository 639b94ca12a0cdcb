"""What a first-time user hits (issue 23): the model passed the same way everywhere, score --max-events,
-v anywhere, progress off a terminal one line per file, each log message once, train storing what
sampling needs, the unigram warning, Kind in awkward comparisons, reader-option typos, dir(eventlm),
py.typed and the help texts."""
# one tiny causal model (1 layer x 16, one epoch on the fixture) through `eventlm train`: about 15 s

from __future__ import annotations

import inspect
import logging

import awkward as ak
import numpy as np
import pytest
from conftest import one_error

import eventlm
from eventlm.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory, fixture_path, one_torch_thread):
    d = tmp_path_factory.mktemp("first-user")
    (d / "run.toml").write_text("seed = 1\n[train]\nepochs = 1\nbatch_size = 64\n"
                                "[model]\nn_layer = 1\nn_embd = 16\nn_head = 2\n")
    assert main(["train", str(fixture_path), "--out", str(d / "model"), "--config", str(d / "run.toml"),
                 "--no-progress"]) == 0
    return d / "model"


@pytest.mark.slow
def test_train_stores_what_sampling_needs_and_warns_below_the_unigram_baseline(model, tmp_path, caplog):
    assert (model / "sampling.npz").exists()
    # sampled without --reference, the model given either way
    assert main(["sample", str(model), "-n", "5", "-o", str(tmp_path / "a.parquet"), "--no-progress"]) == 0
    assert main(["sample", "--model", str(model), "-n", "5", "-o", str(tmp_path / "b.parquet"), "--no-progress"]) == 0
    assert eventlm.read_events(tmp_path / "a.parquet").event_id.tolist() == list(range(5))
    # one epoch of a tiny model is worse than predicting each token by its frequency: said so
    import json

    metrics = json.loads((model / "metrics.json").read_text())
    assert min(metrics["val_loss"]) > metrics["unigram_entropy"]
    from eventlm.config import RunConfig
    from eventlm.train import train

    with caplog.at_level(logging.WARNING, logger="eventlm.train"):
        train(RunConfig(seed=2).replace(train={"epochs": 1, "batch_size": 64},
                                        model={"n_layer": 1, "n_embd": 8, "n_head": 1}),
              _fixture(), tmp_path / "m", progress=False)
    assert any("worse than the unigram baseline" in r.getMessage() for r in caplog.records)


def _fixture():
    from conftest import DATA_DIR

    return eventlm.read_events(DATA_DIR / "fixture.csv.gz", max_events=200)


@pytest.mark.slow
def test_score_takes_the_model_either_way_and_max_events(model, fixture_path, tmp_path):
    import uproot

    assert main(["score", str(model), str(fixture_path), "-o", str(tmp_path / "a.root"), "--max-events", "37",
                 "--no-progress"]) == 0
    assert main(["score", str(fixture_path), "--model", str(model), "-o", str(tmp_path / "b.root"),
                 "--max-events", "37", "--no-progress"]) == 0
    with uproot.open(tmp_path / "a.root") as a, uproot.open(tmp_path / "b.root") as b:
        assert a["Events"].num_entries == b["Events"].num_entries == 37
        np.testing.assert_array_equal(a["Events/anomaly_score"].array(library="np"),
                                      b["Events/anomaly_score"].array(library="np"))
        first = eventlm.read_events(fixture_path, max_events=37).event_id.to_numpy()
        np.testing.assert_array_equal(a["Events/event"].array(library="np"), first)


@pytest.mark.slow
def test_score_off_a_terminal_says_one_line_per_file_and_each_message_once(model, nanoaod_path, tmp_path):
    """Regression: the reader's INFO and warnings came twice per file (the warm-up read the file
    first), and a bar without a total wrote carriage-return updates into a log file."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "eventlm", "score", str(model), str(nanoaod_path), str(nanoaod_path),
                          "-o", str(tmp_path / "s.root")], capture_output=True, text=True, check=True)
    lines = out.stderr.strip().splitlines()
    assert "\r" not in out.stderr and "it/s" not in out.stderr and "event/s]" not in out.stderr
    progress = [line for line in lines if line.startswith("INFO eventlm.progress")]
    assert len(progress) == 2 and progress[-1].endswith("(400 of 400)"), lines
    assert len(lines) == len(set(lines)), lines  # each message once
    assert any("met from MET_pt" in line for line in lines)


def test_verbose_is_accepted_after_the_subcommand(tmp_path, capsys):
    code = main(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "m.onnx"), "-v"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err  # -v: the traceback too
    one_error(capsys, ["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "m.onnx")], "missing")


def test_the_model_twice_is_an_error(tmp_path, capsys):
    one_error(capsys, ["sample", str(tmp_path), "--model", str(tmp_path), "-n", "1", "-o", str(tmp_path / "x.root")],
              "given twice")


def test_help_texts_tell_the_truth(capsys):
    from eventlm.score import SCORE_COLUMNS

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "causal" in text and "Masked-token transformer anomaly" not in text
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for column in SCORE_COLUMNS:
        assert column in text, column
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert not project["description"].startswith("Masked-token")


def test_kind_compares_in_awkward(fixture_events):
    """Regression: `particles.kind == Kind.BJET` raised a dtype TypeError (an IntEnum scalar)."""
    p = fixture_events.particles
    bjets = p[p.kind == eventlm.Kind.BJET]
    assert ak.all(bjets.kind == 1) and ak.sum(ak.num(bjets)) == ak.sum(p.kind == 1) > 0
    assert ak.sum(p.kind != eventlm.Kind.JET) == ak.sum(p.kind != 0)
    assert ak.sum(p.kind >= eventlm.Kind.ELECTRON) == ak.sum(p.kind >= 2)
    assert (np.arange(5) == eventlm.Kind.MUON).tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("source", ["nanoaod", "csv"])
def test_a_reader_option_typo_is_named_as_a_typo(source, nanoaod_path, fixture_path):
    """Regression: `btag_wpp=` said "not a readable ROOT file" for NanoAOD and was ignored for CSV."""
    path = nanoaod_path if source == "nanoaod" else fixture_path
    with pytest.raises(TypeError, match=r"unknown reader option 'btag_wpp' \(did you mean 'btag_wp'\?\)"):
        eventlm.read_events(path, btag_wpp=0.5)


def test_the_public_api_is_listed_and_typed():
    assert {"read_events", "iter_events", "write_events", "Kind"} <= set(dir(eventlm))
    from pathlib import Path

    assert (Path(eventlm.__file__).parent / "py.typed").exists()
    for name in ("read_events", "iter_events", "write_events"):
        function = getattr(eventlm, name)
        annotations = function.__annotations__
        assert "return" in annotations, name
        assert all(p.name in annotations for p in inspect.signature(function).parameters.values()
                   if p.kind is not p.VAR_KEYWORD), name
