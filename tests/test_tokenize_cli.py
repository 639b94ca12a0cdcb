"""``eventlm tokens`` and the token figures render."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from eventlm.cli import main
from eventlm.io import write_events
from eventlm.tokenize import get_tokenizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _files(tmp_path, make_events):
    bg = make_events(300, seed=31, process="ttbar")
    sig = make_events(100, seed=32, process="gluino_1000", start_id=10_000)
    sig = ak.with_field(sig, sig.particles.pt * 3, ["particles", "pt"])
    write_events(bg, tmp_path / "bg.parquet")
    write_events(sig, tmp_path / "sig.parquet")
    return bg, [str(tmp_path / "bg.parquet"), str(tmp_path / "sig.parquet")]


def test_tokens_prints_vocabulary_use_and_draws_frequency(tmp_path, make_events, capsys):
    bg, files = _files(tmp_path, make_events)
    tok_path = get_tokenizer("lut", preset="paper").fit(bg).save(tmp_path / "tokenizer.json")
    out = tmp_path / "plots"
    assert main(["tokens", *files, "--tokenizer", str(tok_path), "--out", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "tokenizer: lut, vocabulary 889 ids" in text
    assert "ttbar:" in text and "gluino_1000:" in text and "content ids used" in text
    assert (out / "token_frequency.png").stat().st_size > 10_000


def test_tokens_fit_learned_draws_resolution(tmp_path, make_events, capsys):
    _, files = _files(tmp_path, make_events)
    out = tmp_path / "vq"
    assert main(["tokens", *files, "--fit", "vqvae", "--epochs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "codes_used" in text and (out / "tokenizer.json").exists()
    for name in ("pt", "eta", "phi"):
        assert (out / f"resolution_{name}.png").stat().st_size > 10_000


def test_tokens_with_mismatched_tokenizer_is_a_clean_error(tmp_path, make_events, capsys):
    bg, files = _files(tmp_path, make_events)
    path = tmp_path / "tokenizer.json"
    path.write_text('{"kind": "lut", "eventlm_version": "0.0.0", "params": {}}')
    assert main(["tokens", *files, "--tokenizer", str(path)]) == 2
    assert "eventlm 0.0.0" in capsys.readouterr().err


def test_token_frequency_plot_renders_without_cli(tmp_path):
    from eventlm.plotting.tokens import plot_token_frequency

    counts = {"bg": np.arange(20), "sig": np.arange(20)[::-1]}
    path = plot_token_frequency(counts, tmp_path / "f.png", n_content=16, boundaries=[(12, "MET")])
    assert path.stat().st_size > 5_000
