"""``eventlm demo --quick``: the main job end to end on the bundled samples (reduced configuration)."""

from __future__ import annotations

import pytest

from eventlm.cli import main


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, background_path, signal_paths, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(background_path.parent)]) == 0
    printed = capsys.readouterr().out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in printed
    text = (out / "results.md").read_text()
    for study in ("tttt_H500", "gluino_1000"):
        assert f"## {study}" in text
        for name in ("metrics.json", "results.md", "roc_" + study + ".png", "score_SR_" + study + ".png"):
            assert (out / study / name).exists(), (study, name)
    for method in ("Isolation forest", "Dense AE", "Deep SVDD", "eventlm (lut, masked)"):
        assert method in text
    assert (out / "token_confusion.png").stat().st_size > 10_000
    assert (out / "model" / "split.json").exists()
