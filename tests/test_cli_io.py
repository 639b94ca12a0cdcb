"""``eventlm info`` and ``eventlm convert``."""

from __future__ import annotations

import awkward as ak
import pytest
from conftest import assert_same_events, random_events

from eventlm.cli import main
from eventlm.io import read_events, write_events


@pytest.fixture
def sample(tmp_path):
    events = ak.concatenate([random_events(60, seed=1), random_events(40, seed=2, process="gluino_1000", start_id=60)])
    return write_events(events, tmp_path / "sample.csv.gz"), events


def test_info_prints_counts_weights_and_multiplicities(sample, capsys):
    path, events = sample
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: 100 events" in out
    ttbar_weight = float(ak.sum(events.weight[events.process == "ttbar"]))
    assert any(line.split()[:2] == ["ttbar", "60"] and float(line.split()[2]) == pytest.approx(ttbar_weight, rel=1e-5)
               for line in out.splitlines())
    assert any(line.split()[:2] == ["gluino_1000", "40"] for line in out.splitlines())
    n_jets = int(ak.sum(events.particles.kind == 0))
    assert any(line.split()[:2] == ["jet", str(n_jets)] for line in out.splitlines())
    for name in ("bjet", "electron", "muon", "photon"):
        assert f"\n{name} " in out


@pytest.mark.parametrize("suffix", [".root", ".parquet", ".csv"])
def test_convert_between_formats(sample, tmp_path, suffix, capsys):
    path, events = sample
    out = tmp_path / f"converted{suffix}"
    assert main(["convert", str(path), str(out), "--step-size", "16"]) == 0
    assert "wrote 100 events" in capsys.readouterr().out
    assert_same_events(events, read_events(out))


def test_convert_skip_reports_bad_lines(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text("1;ttbar;1;1000;0;\n2;ttbar;1;1000;0;j,1,2;\n3;ttbar;1;1000;0;\n")
    assert main(["convert", str(src), str(tmp_path / "ok.root"), "--on-error", "skip"]) == 0
    assert "skipped 1 bad" in capsys.readouterr().out
    assert read_events(tmp_path / "ok.root").event_id.tolist() == [1, 3]


def test_bad_file_is_one_line_error_and_exit_2(tmp_path, capsys):
    src = tmp_path / "bad.csv"
    src.write_text("1;ttbar;1;1000;0;\n2;ttbar;1;1000;0;j,1,2;\n")
    assert main(["info", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(src) in err[0] and "line 2" in err[0] and "Traceback" not in err[0]
    assert main(["convert", str(src), str(tmp_path / "x.root")]) == 2
    assert not (tmp_path / "x.root").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.csv"]  # no temporary file left either


def test_missing_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.root")]) == 2
    assert "missing.root" in capsys.readouterr().err


def test_convert_drops_extras_into_csv_with_a_warning(tmp_path, caplog):
    events = random_events(10)
    src = write_events(events, tmp_path / "s.root", extra_columns={"anomaly_score": events.met})
    with caplog.at_level("WARNING"):
        assert main(["convert", str(src), str(tmp_path / "s.csv")]) == 0
    assert "dropped anomaly_score" in caplog.text
    assert_same_events(events, read_events(tmp_path / "s.csv"))


def test_output_into_a_closed_pipe_ends_quietly(sample):
    """`eventlm info FILE | head -1`: the reader is gone before the output; no traceback, status 141."""
    import subprocess
    import sys

    path, _ = sample
    run_cli = "import sys; from eventlm.cli import main; sys.exit(main(sys.argv[1:]))"
    with subprocess.Popen([sys.executable, "-c", run_cli, "info", str(path)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()  # like `head` exiting before eventlm writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
