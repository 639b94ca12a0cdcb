"""Figures of merit: ROC/AUC agree with scikit-learn; n/a where statistics do not reach; seeded bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from eventlm.metrics import auc, efficiency_at, evaluate, max_sic, roc_curve


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


def _signed(seed=11, n_b=600, n_s=400, negative=0.25):
    """NLO-like samples: about ``negative`` of the events weigh < 0, scores rounded (ties)."""
    rng = np.random.default_rng(seed)
    b, s = np.round(rng.normal(0, 1, n_b), 1), np.round(rng.normal(0.8, 1, n_s), 1)
    wb = rng.uniform(0.5, 1.5, n_b) * np.where(rng.random(n_b) < negative, -1, 1)
    ws = rng.uniform(0.5, 1.5, n_s) * np.where(rng.random(n_s) < negative, -1, 1)
    return b, s, wb, ws


def test_signed_weights_auc_is_the_pairwise_weighted_statistic():
    """The reference, written out: sum_ij w_i w_j ([s_j > b_i] + [s_j == b_i] / 2) / (W_B W_S)."""
    b, s, wb, ws = _signed()
    assert (wb < 0).mean() == pytest.approx(0.25, abs=0.05) and (ws < 0).mean() == pytest.approx(0.25, abs=0.05)
    above = (s[None, :] > b[:, None]) + 0.5 * (s[None, :] == b[:, None])
    reference = float((wb[:, None] * ws[None, :] * above).sum() / (wb.sum() * ws.sum()))
    assert auc(b, s, wb, ws) == pytest.approx(reference, abs=1e-12)
    # the efficiencies at every threshold are the plain weighted fractions
    roc = roc_curve(b, s, wb, ws)
    for t, eff_b, eff_s in zip(roc.thresholds[1:], roc.eff_b[1:], roc.eff_s[1:]):
        assert eff_b == pytest.approx(wb[b >= t].sum() / wb.sum(), abs=1e-12)
        assert eff_s == pytest.approx(ws[s >= t].sum() / ws.sum(), abs=1e-12)


def test_signed_weights_give_figures_in_range_or_a_reason_never_a_clip():
    b, s, wb, ws = _signed(n_b=3000, n_s=2000)
    m = evaluate(b, s, wb, ws, n_bootstrap=20, seed=1)
    for key, value in m.values.items():
        if value is None:
            assert key in m.undefined and "\n" not in m.undefined[key]
        elif not key.startswith("sic"):
            assert 0.0 <= value <= 1.0, (key, value)
    # eff_S at eff_B = 1e-2: the weighted signal fraction at the first threshold (from the top) whose
    # background efficiency reaches 1e-2, interpolated from the one before
    roc = roc_curve(b, s, wb, ws)
    i = int(np.nonzero(roc.eff_b >= 1e-2)[0][0])
    t_before, t_at = roc.thresholds[i - 1], roc.thresholds[i]
    fb = [wb[b >= t].sum() / wb.sum() if np.isfinite(t) else 0.0 for t in (t_before, t_at)]
    fs = [ws[s >= t].sum() / ws.sum() if np.isfinite(t) else 0.0 for t in (t_before, t_at)]
    expected = fs[0] + (fs[1] - fs[0]) * (1e-2 - fb[0]) / (fb[1] - fb[0])
    assert m.values["eff_s@0.01"] == pytest.approx(expected, abs=1e-12)
    # 1e-4 needs 10^4 effective background events: n/a, and the table can say why
    assert m.values["eff_s@0.0001"] is None and "effective background events" in m.undefined["eff_s@0.0001"]
    assert m.errors["auc"] is not None and m.errors["auc"] > 0


def test_an_efficiency_above_one_is_undefined_not_reported():
    # the signal's negative weights sit at low scores: above a mid threshold more than all of it passes
    b = np.linspace(0, 1, 200)
    s = np.r_[np.full(50, 0.9), np.full(10, 0.1)]
    ws = np.r_[np.ones(50), -np.ones(10) * 2]  # total 30, 50 above 0.5: eff_S = 1.67
    roc = roc_curve(b, s, None, ws)
    assert roc.eff_s.max() > 1
    m = evaluate(b, s, None, ws, working_points=(0.2,), n_bootstrap=0)
    assert m.values["eff_s@0.2"] is None and "outside [0, 1]" in m.undefined["eff_s@0.2"]
    from eventlm.analysis.threshold import region_yields

    y = region_yields("SR", 0.5, b, s, None, ws)
    assert y.s == pytest.approx(50.0) and y.s_total == pytest.approx(30.0)  # yields are the signed sums
    assert y.eff_s is None and "outside [0, 1]" in y.undefined["eff_s"]


def test_non_positive_total_weight_is_said_not_raised():
    m = evaluate([0.1, 0.2, 0.3], [0.5, 0.6], [1, 1, 1], [1.0, -2.0], n_bootstrap=5)
    assert all(v is None for v in m.values.values())
    assert "summed signal weight is -1" in m.undefined["auc"]


def test_length_matched_auc_skips_classes_without_positive_effective_statistics():
    from eventlm.analysis.study import measure

    b, s, wb, ws = _signed(n_b=4000, n_s=3000)
    rng = np.random.default_rng(2)
    n_b, n_s = rng.integers(3, 6, len(b)), rng.integers(3, 6, len(s))
    ws = np.where(n_s == 5, -np.abs(ws), ws)  # class 5: the signal sums to < 0
    r = measure(b, s, n_b, n_s, wb, ws, n_bootstrap=10)
    assert r.stratified is not None and 0 <= r.stratified <= 1
    # the reference: classes 3 and 4 only, each the weighted AUC, averaged with the signal weight
    parts = [(auc(b[n_b == n], s[n_s == n], wb[n_b == n], ws[n_s == n]), ws[n_s == n].sum()) for n in (3, 4)]
    assert r.stratified == pytest.approx(np.average([p[0] for p in parts], weights=[p[1] for p in parts]), abs=1e-12)
    r = measure(b[:40], s[:40], n_b[:40], n_s[:40], wb[:40], ws[:40], n_bootstrap=4)
    assert r.stratified is None and "no object-count class" in r.metrics.undefined["length_matched_auc"]


def test_background_efficiency_threshold_stops_at_the_first_crossing_of_a_signed_curve():
    from eventlm.analysis.threshold import choose_threshold

    # from the top: +1 (eff 1/3), -1 (0), +1 (1/3), +1 (2/3), +1 (1): the target 0.2 is first exceeded at 3.0
    scores = np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    weights = np.array([1.0, -1.0, 1.0, 1.0, 1.0]) / 3
    thr = choose_threshold(scores, method="background_efficiency", background_efficiency=0.2, weights_b=weights)
    assert thr.value > 3.0 and thr.eff_b == 0.0
