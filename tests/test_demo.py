"""``eventlm demo --quick``: the main job end to end on the bundled samples (reduced configuration)."""

from __future__ import annotations

import pytest

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
    for method in ("Isolation forest", "Dense AE", "Deep SVDD", "eventlm (lut, causal)"):
        assert method in text
    # the validation study: every bundled signal, the references, the upper bound, the closure
    assert "## Validation" in text and "length-matched AUC" in text
    for row in ("eventlm anomaly_score (default)", "eventlm anomaly_score_calibrated", "*object count alone*",
                "*HT alone*", "*supervised classifier (upper bound)*", "CR → SR closure"):
        assert row in text, row
    for signal in ("tttt_H500", "gluino_1000"):
        assert f"#### {signal}" in text and (out / "validation" / f"validation_roc_{signal}.png").exists()
    assert (out / "token_confusion.png").stat().st_size > 10_000
    assert (out / "model" / "split.json").exists()
