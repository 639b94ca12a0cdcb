"""The scaling study's plumbing (analysis/scaling.py, ``make scaling``): its ``--quick`` mode end to end
on the bundled fixture, the reuse of what a run already trained, and the report's numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("scaling_script", ROOT / "analysis" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    assert _script().main(["--quick", "--out", str(out)]) == 0
    return out


def test_quick_mode_trains_every_point_and_writes_the_report(quick_run):
    result = json.loads((quick_run / "scaling.json").read_text())
    names = {p["name"] for p in result["points"]}
    assert names == {"n100_L2x64", "n200_L2x64", "n100_L1x16"}  # two training sizes, two model sizes
    for p in result["points"]:
        assert p["n_train"] in (100, 200) and p["n_validation"] == 50
        assert p["n_parameters"] > 0 and p["epochs_run"] == 1
        assert np.isfinite(p["test_nll_per_event"]) and p["test_nll_per_event"] > 0
        for signal in ("gluino_1000", "tttt_H500"):
            for score in ("anomaly_score", "calibrated", "nll"):
                m = p["signals"][signal][score]
                assert 0.0 <= m["auc"] <= 1.0 and m["auc_err"] > 0
                assert 0.0 <= m["eff_s@0.01"] <= 1.0
        # the model directory trained exactly the split it says (the rest of the pool is never seen)
        split = json.loads((quick_run / "models" / p["name"] / "split.json").read_text())
        sizes = {k: len(v) for k, v in split.items() if k in ("train", "validation", "test")}
        assert sizes == {"train": p["n_train"], "validation": 50, "test": 0}, sizes
    small = {p["name"]: p for p in result["points"]}
    assert small["n100_L1x16"]["n_parameters"] < small["n100_L2x64"]["n_parameters"]
    assert result["test_set"]["background"] == 600
    assert set(result["ht"]) == {"gluino_1000", "tttt_H500"}
    md = (quick_run / "scaling.md").read_text()
    assert "| gluino_1000 | anomaly_score |" in md and "HT alone" in md
    for name in ("scaling_events.png", "scaling_model_size.png"):
        assert (quick_run / name).stat().st_size > 20_000


def test_a_second_run_reuses_the_trained_models_and_their_evaluation(quick_run):
    before = {f: f.stat().st_mtime_ns for f in quick_run.glob("models/*/best.pt")}
    points_before = {f.name: f.read_text() for f in quick_run.glob("points/*.json")}
    assert _script().main(["--quick", "--out", str(quick_run)]) == 0
    assert {f: f.stat().st_mtime_ns for f in quick_run.glob("models/*/best.pt")} == before
    assert {f.name: f.read_text() for f in quick_run.glob("points/*.json")} == points_before


def test_a_model_calibrated_under_another_default_is_recalibrated_and_evaluated_again(quick_run):
    # a model directory whose calibration.json holds another rule's numbers (an earlier default) must
    # not put that score into the study under the name anomaly_score
    model = quick_run / "models" / "n100_L2x64"
    calibration = json.loads((model / "calibration.json").read_text())
    point = json.loads((quick_run / "points" / "n100_L2x64.json").read_text())
    calibration["default"]["nll_weight"] = 7.0
    (model / "calibration.json").write_text(json.dumps(calibration))
    weights = (model / "best.pt").stat().st_mtime_ns
    assert _script().main(["--quick", "--out", str(quick_run)]) == 0
    assert json.loads((model / "calibration.json").read_text())["default"]["nll_weight"] != 7.0
    assert (model / "best.pt").stat().st_mtime_ns == weights  # recalibrated, not retrained
    again = json.loads((quick_run / "points" / "n100_L2x64.json").read_text())
    assert again["signals"]["gluino_1000"]["anomaly_score"] == point["signals"]["gluino_1000"]["anomaly_score"]
    # the evaluation is tied to the calibration's bytes: another calibration file, another evaluation
    (model / "calibration.json").write_text(json.dumps(json.loads((model / "calibration.json").read_text()), indent=3))
    assert _script().main(["--quick", "--out", str(quick_run), "--points", "n100_L2x64"]) == 0
    import hashlib

    third = json.loads((quick_run / "points" / "n100_L2x64.json").read_text())
    assert third["calibration_sha256"] == hashlib.sha256((model / "calibration.json").read_bytes()).hexdigest()
    assert third["calibration_sha256"] != again["calibration_sha256"]


def test_the_pool_is_read_from_its_parts_in_order(tmp_path, fixture_events):
    from eventlm.io import read_events, write_events

    for i, part in enumerate((fixture_events[:30], fixture_events[30:50]), start=1):
        (tmp_path / f"part{i}").mkdir()
        write_events(part, tmp_path / f"part{i}" / "background.csv.gz")
    (tmp_path / "part10").mkdir()  # numeric order, not text order
    write_events(fixture_events[50:55], tmp_path / "part10" / "background.csv.gz")
    pool, note = _script().read_pool(tmp_path)
    ids = np.asarray(pool.event_id)
    expected = np.concatenate([np.asarray(read_events(tmp_path / f"part{i}" / "background.csv.gz").event_id)
                               for i in (1, 2, 10)])
    np.testing.assert_array_equal(ids, expected)
    assert note.count("part") == 3
    pool, _ = _script().read_pool(tmp_path, max_events=40)  # only as much as the study needs
    np.testing.assert_array_equal(np.asarray(pool.event_id), expected[:40])
