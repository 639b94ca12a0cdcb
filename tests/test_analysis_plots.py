"""Every analysis figure renders to a non-trivial PNG (they were also checked by eye, see docs/results.md)."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from eventlm.metrics import roc_curve
from eventlm.plotting.analysis import label_for, plot_confusion, plot_roc, plot_sic, plot_stack

LABEL = label_for("ATLAS", "Internal", 13.0, 139.0)


@pytest.fixture(scope="module")
def score_hist():
    rng = np.random.default_rng(0)
    h = hist.Hist(
        hist.axis.StrCategory([], name="process", growth=True),
        hist.axis.StrCategory(["all", "CR", "SR"], name="region"),
        hist.axis.Regular(40, 0, 10, name="score"),
        storage=hist.storage.Weight(),
    )
    for process, mu, n, w in (("ttbar", 4.0, 5000, 0.05), ("w_jets", 4.3, 800, 0.1), ("tttt_H500", 5.5, 500, 1e-3)):
        for region in ("CR", "SR"):
            h.fill(process=process, region=region, score=rng.normal(mu, 0.8, n), weight=w)
    return h


def _nontrivial(path):
    assert path.exists() and path.stat().st_size > 10_000


@pytest.mark.parametrize("region", ["CR", "SR"])
def test_score_stack_renders(score_hist, tmp_path, region):
    path = tmp_path / f"score_{region}.png"
    plot_stack(score_hist, path, region=region, signals=["tttt_H500"], threshold=5.0, label=LABEL,
               title="tttt_H500", lumi_scale=13.9)
    _nontrivial(path)


def test_stack_of_an_unknown_region_is_an_error(score_hist, tmp_path):
    with pytest.raises(KeyError, match="VR"):
        plot_stack(score_hist, tmp_path / "x.png", region="VR", signals=["tttt_H500"])


@pytest.mark.parametrize("style", ["rejection", "standard"])
def test_roc_and_sic_render(tmp_path, style):
    rng = np.random.default_rng(1)
    b = rng.normal(size=5000)
    curves = {"eventlm": roc_curve(b, rng.normal(0.6, 1, 1000)), "Dense AE": roc_curve(b, rng.normal(0.3, 1, 1000))}
    plot_roc(curves, tmp_path / "roc.png", aucs={k: f"AUC = {c.auc:.3f}" for k, c in curves.items()},
             style=style, label=LABEL, title="tttt_H500")
    _nontrivial(tmp_path / "roc.png")
    plot_sic(curves, tmp_path / "sic.png", label=LABEL, title="tttt_H500")
    _nontrivial(tmp_path / "sic.png")


def test_token_confusion_renders(tmp_path):
    rng = np.random.default_rng(2)
    vocab = 30
    true = rng.integers(1, vocab - 4, 3000)
    pred = np.where(rng.random(3000) < 0.4, true, rng.integers(1, vocab - 4, 3000))
    m = np.zeros((vocab, vocab), dtype=np.int64)
    np.add.at(m, (true, pred), 1)
    plot_confusion({"Background": m, "Signal": m.T}, tmp_path / "confusion.png", n_content=vocab - 4)
    _nontrivial(tmp_path / "confusion.png")


def test_score_by_multiplicity_means_and_figure(tmp_path):
    from eventlm.plotting.analysis import plot_score_vs_multiplicity, score_by_multiplicity

    rng = np.random.default_rng(3)
    n = rng.integers(2, 12, 20_000)
    score = 5.0 - 0.1 * n + rng.normal(0, 0.5, len(n))
    n[:5] = 40  # a multiplicity with too few events for a point
    c = score_by_multiplicity(n, score)
    assert 40 not in c["n"] and list(c["n"]) == list(range(2, 12))
    np.testing.assert_allclose(c["mean"], 5.0 - 0.1 * c["n"], atol=5 * c["error"].max())
    assert (c["error"] > 0).all() and (c["error"] < 0.05).all()
    curves = {"lut": {"background": c, "signal": score_by_multiplicity(n, score + 0.3)}}
    plot_score_vs_multiplicity(curves, tmp_path / "mult.png", label=LABEL, title="test")
    _nontrivial(tmp_path / "mult.png")
