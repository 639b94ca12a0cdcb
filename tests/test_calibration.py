"""Calibration per object-count class and the object-count term (eventlm.calibration)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eventlm.calibration import Multiplicity, ScoreCalibration


def _scores(n_events=30_000, seed=0):
    """A score that rises with the object count and has an exponential upper tail, as an NLL does."""
    rng = np.random.default_rng(seed)
    n = rng.integers(4, 15, n_events)
    return rng.gumbel(2.0 * n, 1.0 + 0.1 * n), n


def test_calibrated_score_has_the_same_background_efficiency_in_every_class():
    x, n = _scores()
    cal = ScoreCalibration.fit("anomaly_score", x[:20_000], n[:20_000])
    xt, nt = x[20_000:], n[20_000:]
    y = cal.transform(xt, nt)
    # a raw threshold at the 1 % quantile of the few-object events selects everything with many objects
    raw_cut = np.quantile(xt[nt <= 5], 0.99)
    assert np.mean(xt[nt >= 10] >= raw_cut) > 0.9
    # the calibrated threshold keeps ~10 % and ~1 % in every class (a finite-sample check)
    for c in range(len(cal.lower)):
        sel = cal.class_of(nt) == c
        assert np.mean(y[sel] >= 1.0) == pytest.approx(0.1, abs=0.03)
        assert np.mean(y[sel] >= 2.0) == pytest.approx(0.01, abs=0.012)


def test_classes_merge_until_each_holds_min_events():
    x, n = _scores(5000)
    n = n.copy()
    n[:3] = 30  # a rare multiplicity far above the rest joins the top class
    cal = ScoreCalibration.fit("s", x, n, min_events=800)
    assert min(cal.n_events) >= 800 and sum(cal.n_events) == len(x)
    assert cal.class_of(np.array([0, 4, 30, 99])).tolist() == [0, 0, len(cal.lower) - 1, len(cal.lower) - 1]


def test_tail_beyond_the_largest_calibration_score_keeps_ordering_events():
    x, n = _scores(5000)
    cal = ScoreCalibration.fit("s", x, n)
    top = np.array([x.max() + 1, x.max() + 5, x.max() + 50])
    y = cal.transform(top, np.full(3, int(n[np.argmax(x)])))
    assert np.all(np.diff(y) > 0) and np.all(np.isfinite(y))


def test_round_trip_through_json():
    import json

    x, n = _scores(5000)
    cal = ScoreCalibration.fit("s", x, n)
    back = ScoreCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(back.transform(x, n), cal.transform(x, n))


def test_bad_calibration_input_is_refused():
    with pytest.raises(ValueError, match="finite"):
        ScoreCalibration.fit("s", np.array([1.0, np.nan]), np.array([4, 5]))
    with pytest.raises(ValueError, match="one object count per score"):
        ScoreCalibration.fit("s", np.array([1.0]), np.array([4, 5]))


def test_multiplicity_term_is_minus_log_of_the_smoothed_frequency():
    m = Multiplicity.fit(np.array([4, 4, 5, 6, 6, 6]), max_objects=7)
    k = 8  # counts 0..7
    expected = -np.log((np.array([0, 2, 1, 3]) + 1) / (6 + k))
    np.testing.assert_allclose(m.nll(np.array([0, 4, 5, 6])), expected)
    assert m.nll(np.array([50]))[0] == pytest.approx(-np.log(1 / (6 + k)))  # beyond the table: like unseen


def test_default_score_combines_two_tail_probabilities_and_reads_back():
    """DefaultScore on synthetic background: the calibrated combination selects 10^-k of the rows it
    was fitted on above k, rises with either term, survives JSON, and q=inf is the smaller p-value."""
    from eventlm.calibration import DefaultScore

    rng = np.random.default_rng(4)
    n = rng.integers(4, 10, 20_000)
    nll = rng.gamma(5.0, 2.0, len(n)) + 3.0 * n
    scale = rng.lognormal(np.log(60.0 * n), 0.3)
    d = DefaultScore.fit(nll, scale, n)
    s = d.transform(nll, scale, n)
    assert np.isfinite(s).all() and (s >= 0).all()
    for k in (1.0, 2.0):
        assert np.mean(s >= k) == pytest.approx(10 ** -k, rel=0.15)
    # an event rare in either direction scores high; the scale is judged within its object count
    hi_nll = d.transform(np.array([200.0]), np.array([360.0]), np.array([6]))
    hi_scale = d.transform(np.array([30.0]), np.array([2000.0]), np.array([6]))
    typical = d.transform(np.array([30.0]), np.array([360.0]), np.array([6]))
    assert hi_nll[0] > 2 and hi_scale[0] > 2 and typical[0] < 1
    assert d.transform(np.array([30.0]), np.array([900.0]), np.array([4]))[0] > \
        d.transform(np.array([30.0]), np.array([900.0]), np.array([9]))[0]
    back = ScoreCalibration.from_dict(json.loads(json.dumps(
        ScoreCalibration.fit("anomaly_score_nll", nll, n).with_default(d).to_dict())))
    np.testing.assert_array_equal(back.default.transform(nll, scale, n), s)
    tip = DefaultScore.fit(nll, scale, n, q=np.inf, nll_weight=1.0)
    p1, p2 = tip.terms(nll, scale, n)
    order = np.argsort(np.minimum(p1, p2))
    assert np.all(np.diff(tip.transform(nll, scale, n)[order]) <= 0)
    assert DefaultScore.from_dict(json.loads(json.dumps(tip.to_dict()))).q == np.inf
    for bad in ({"q": 0.5}, {"nll_weight": -1.0}, {"nll_weight": float("nan")}):
        with pytest.raises(ValueError, match="q|nll_weight"):
            DefaultScore.from_dict(d.to_dict() | bad)
    # the weight scales the likelihood's term only
    assert DefaultScore.statistic(np.array([1e-3]), np.array([1.0]), 2.0, 3.0)[0] == pytest.approx(-3 * np.log(1e-3))
    assert DefaultScore.statistic(np.array([1.0]), np.array([1e-3]), 2.0, 3.0)[0] == pytest.approx(-np.log(1e-3))
