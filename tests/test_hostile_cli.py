"""Hostile and clumsy command lines and study configs (issue 13): one line naming the option, key or
file, exit status 2, no traceback (unless ``-v``); checked before any work starts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import one_error, study_toml

from eventlm.io import write_events


@pytest.fixture
def study(tmp_path, make_events):
    rng = np.random.default_rng(0)
    bkg, sig = make_events(200, seed=1), make_events(100, seed=2, process="sig", start_id=1000)
    scored = {
        "background": write_events(bkg, tmp_path / "bkg.root",
                                   extra_columns={"anomaly_score": rng.normal(3, 1, 200).astype(np.float32)}),
        "signal": write_events(sig, tmp_path / "sig.root",
                               extra_columns={"anomaly_score": rng.normal(4, 1, 100).astype(np.float32)}),
        "plain": write_events(bkg, tmp_path / "plain.parquet"),
    }

    def config(name="study.toml", cr="n_jets <= 3", sr="n_jets >= 4", n_bootstrap="5", background=None,
               model=""):
        path = tmp_path / name
        path.write_text(study_toml(background=background or scored["background"], signal=scored["signal"],
                                   cr=cr, sr=f'selection = "{sr}"', n_bootstrap=n_bootstrap, study=model))
        return str(path)

    return config, scored, tmp_path


def test_n_bootstrap_five_is_refused_before_work(study, capsys):
    config, _, tmp = study
    one_error(capsys, ["analyze", config(n_bootstrap='"five"'), "--out", str(tmp / "out")],
              "study.toml", "[metrics] n_bootstrap = 'five' must be an integer")
    assert not (tmp / "out").exists()


def test_control_region_selecting_nothing_is_said_before_processing(study, capsys):
    config, _, tmp = study
    one_error(capsys, ["analyze", config(cr="n_jets > 100"), "--out", str(tmp / "out"), "--no-progress"],
              "control region CR", "selects no background event")
    assert not (tmp / "out" / "hists.pkl").exists()


def test_analyze_without_model_on_inputs_without_scores(study, capsys):
    config, scored, tmp = study
    one_error(capsys, ["analyze", config(background=scored["plain"]), "--out", str(tmp / "out")],
              "plain.parquet", "no anomaly_score column, and no model")


def test_empty_signal_region_warns(study, caplog):
    from eventlm.analysis.config import load_analysis_config
    from eventlm.cli.analyze import precheck

    config, _, tmp = study
    cfg = load_analysis_config(config(sr="n_jets > 100"))
    precheck(cfg, None, tmp / "out")
    warned = [r.getMessage() for r in caplog.records if "selects no" in r.getMessage()]
    assert warned and all("signal region SR" in w and "n/a" in w for w in warned)


def test_bad_option_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "eventlm", "info", "--on-error", "maybe", "x.csv"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--on-error" in lines[0] and "maybe" in lines[0]


def test_verbose_shows_the_traceback(tmp_path):
    d = tmp_path / "dir.csv"
    d.mkdir()
    quiet = subprocess.run([sys.executable, "-m", "eventlm", "info", str(d)], capture_output=True, text=True)
    loud = subprocess.run([sys.executable, "-m", "eventlm", "-v", "info", str(d)], capture_output=True, text=True)
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert "is a directory" in quiet.stderr.strip().splitlines()[-1]


def test_comma_in_process_label_is_explained(tmp_path, capsys):
    path = tmp_path / "c.csv"
    path.write_text("1;ttbar;1;5000;0.1;j,100000,50000,0.5,0.1;\n2;tt,bar;1;5000;0.1;j,100000,50000,0.5,0.1;\n")
    one_error(capsys, ["info", str(path)], "c.csv, line 2", "process label 'tt,bar' contains ','")
    from eventlm.io import read_events

    events, report = read_events(path, on_error="skip", return_report=True)
    assert events.event_id.tolist() == [1] and "contains ','" in report.skipped[0].problem


def test_train_config_missing_or_malformed(tmp_path, make_events, capsys):
    src = write_events(make_events(20), tmp_path / "b.parquet")
    one_error(capsys, ["train", str(src), "--out", str(tmp_path / "m"), "--config", str(tmp_path / "nope.toml")],
              "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochz = 3\n")
    one_error(capsys, ["train", str(src), "--out", str(tmp_path / "m"), "--config", str(bad)], "bad.toml", "epochz")
    assert not (tmp_path / "m").exists()
