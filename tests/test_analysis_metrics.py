"""Figures of merit: ROC/AUC agree with scikit-learn; n/a where statistics do not reach; seeded bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from eventlm.analysis.metrics import auc, efficiency_at, evaluate, max_sic, roc_curve


def _samples(seed=0, n_b=3000, n_s=800):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, n_b), rng.normal(0.7, 1.3, n_s), rng.uniform(0.2, 2, n_b), rng.uniform(0.5, 1.5, n_s)


def test_auc_matches_scikit_learn_unweighted_and_weighted():
    b, s, wb, ws = _samples()
    y = np.r_[np.zeros(len(b)), np.ones(len(s))]
    assert auc(b, s) == pytest.approx(roc_auc_score(y, np.r_[b, s]), abs=1e-12)
    assert auc(b, s, wb, ws) == pytest.approx(roc_auc_score(y, np.r_[b, s], sample_weight=np.r_[wb, ws]), abs=1e-12)


def test_roc_curve_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    b = rng.integers(0, 10, 500).astype(float)  # many tied scores
    s = rng.integers(2, 12, 300).astype(float)
    y = np.r_[np.zeros(len(b)), np.ones(len(s))]
    fpr, tpr, thr = sk_roc_curve(y, np.r_[b, s], drop_intermediate=False)
    roc = roc_curve(b, s)
    np.testing.assert_allclose(roc.eff_b, fpr)
    np.testing.assert_allclose(roc.eff_s, tpr)
    np.testing.assert_allclose(roc.thresholds[1:], thr[1:])
    assert roc.auc == pytest.approx(roc_auc_score(y, np.r_[b, s]), abs=1e-12)


def test_perfect_and_inverted_separation():
    assert auc([0, 1, 2], [3, 4]) == 1.0
    assert auc([3, 4], [0, 1, 2]) == 0.0


def test_signal_efficiency_is_na_when_background_statistics_do_not_reach():
    b, s, *_ = _samples(n_b=500)
    roc = roc_curve(b, s)
    assert efficiency_at(roc, 1e-2, n_background=500) is not None
    assert efficiency_at(roc, 1e-3, n_background=500) is None
    m = evaluate(b, s, n_bootstrap=0)
    assert m.values["eff_s@0.0001"] is None and m.format("eff_s@0.0001") == "n/a"
    assert m.values["sic@0.01"] == pytest.approx(m.values["eff_s@0.01"] / 0.1)


def test_max_sic_of_a_random_score_is_about_one():
    rng = np.random.default_rng(5)
    roc = roc_curve(rng.normal(size=20000), rng.normal(size=20000))
    assert 0.9 < max_sic(roc) < 1.3


def test_bootstrap_is_seeded_and_errors_shrink_with_statistics():
    b, s, wb, ws = _samples()
    m1 = evaluate(b, s, wb, ws, n_bootstrap=30, seed=7)
    m2 = evaluate(b, s, wb, ws, n_bootstrap=30, seed=7)
    assert m1.to_dict() == m2.to_dict()
    assert 0 < m1.errors["auc"] < 0.05
    big = evaluate(*_samples(n_b=30000, n_s=8000), n_bootstrap=30, seed=7)
    assert big.errors["auc"] < m1.errors["auc"]


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        roc_curve([0.1, np.nan], [0.3])
