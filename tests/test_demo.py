"""``eventlm demo --quick``: the main job end to end on the bundled samples (reduced configuration)."""

from __future__ import annotations

import pytest

from eventlm.demo import signal_names as signal_names_of
from eventlm.cli import main


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, background_path, signal_paths, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(background_path.parent)]) == 0
    printed = capsys.readouterr().out
    for step in ("[1/6]", "[2/6]", "[3/6]", "[4/6]", "[5/6]", "[6/6]"):
        assert step in printed
    text = (out / "results.md").read_text()
    for study in ("tttt_H500", "gluino_1000"):
        assert f"## {study}" in text
        for name in ("metrics.json", "results.md", "roc_" + study + ".png", "score_SR_" + study + ".png"):
            assert (out / study / name).exists(), (study, name)
    for method in ("Isolation forest", "Dense AE", "Deep SVDD", "Flow (MAF)", "Combined (Deep SVDD + flow)",
                   "eventlm (lut, causal)"):
        assert method in text
    # the validation study: every bundled signal, the references, the upper bound, the closure
    assert "## Validation" in text and "length-matched AUC" in text
    for row in ("eventlm anomaly_score (default)", "eventlm anomaly_score_calibrated", "*object count alone*",
                "*HT alone*", "*supervised classifier (upper bound)*", "CR → SR closure"):
        assert row in text, row
    for signal in ("tttt_H500", "gluino_1000"):
        assert f"#### {signal}" in text and (out / "validation" / f"validation_roc_{signal}.png").exists()
    assert (out / "token_confusion.png").stat().st_size > 10_000
    # the search on both bundled studies: their workspace.json loads in pyhf, validates and reproduces the
    # limits and significances results.md reports (pyhf alone, from the file); limits for every signal
    import json

    from test_statistics import assert_pyhf_reproduces

    for study in ("tttt_H500", "gluino_1000"):
        assert "Background estimate and limits" in (out / study / "results.md").read_text()
        lim = json.loads((out / study / "metrics.json").read_text())["statistics"]["limits"][study]
        assert "error" not in lim, lim
        assert_pyhf_reproduces(out / study / "workspace.json", study, lim)
        assert f"| {study} | {lim['z_expected']:.2f} |" in text  # the limit table, as printed
    assert "## Background estimate and limits for every bundled signal" in text
    every = json.loads((out / "limits" / "workspace.json").read_text())
    assert {m["name"] for m in every["measurements"]} == set(signal_names_of(background_path.parent))
    assert (out / "model" / "split.json").exists()


def _installed_copy(site):
    """The package as a wheel installs it, built by hand: ``src/eventlm`` plus the files pyproject.toml
    force-includes (hatchling's mapping), without the source checkout around it."""
    import shutil
    import tomllib

    from conftest import ROOT_DIR

    shutil.copytree(ROOT_DIR / "src" / "eventlm", site / "eventlm", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = tomllib.loads((ROOT_DIR / "pyproject.toml").read_text())
    extra = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for source, target in extra.items():
        (site / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT_DIR / source, site / target)
    return site


def test_regression_the_demo_runs_from_an_installed_package(tmp_path, background_path):
    """Installed from a wheel, `eventlm demo` could find neither analysis/*.toml nor data/: the study configs
    now ship in the package, and the samples are asked for in one line naming --data."""
    import os
    import subprocess
    import sys

    site = _installed_copy(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = ("from eventlm.demo import sample_files, study_configs; from eventlm.analysis.config import "
             "load_analysis_config; c = study_configs(); print(sorted(c), *(p.parent for p in c.values())); "
             f"[load_analysis_config(p) for p in c.values()]; print(len(sample_files({str(background_path.parent)!r})))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["['gluino_1000',", "'tttt_H500']", *[str(site / "eventlm" / "studies")] * 2, "3"]
    run = subprocess.run([sys.executable, "-m", "eventlm", "demo", "--quick", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    lines = [line for line in run.stderr.splitlines() if line.startswith("eventlm ")]
    assert run.returncode == 2 and len(lines) == 1 and "--data" in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr
