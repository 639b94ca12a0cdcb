"""The CR threshold rule on distributions with a known optimum, and the SR yields and significances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from eventlm.analysis.threshold import asimov_significance, choose_threshold, region_yields


def test_youden_threshold_of_two_equal_width_gaussians_is_the_midpoint():
    rng = np.random.default_rng(0)
    b, s = rng.normal(0.0, 1.0, 200_000), rng.normal(2.0, 1.0, 200_000)
    thr = choose_threshold(b, s, method="youden")
    assert thr.value == pytest.approx(1.0, abs=0.05)
    # J at the optimum: 2 Phi(1) - 1
    assert thr.youden_j == pytest.approx(2 * norm.cdf(1.0) - 1, abs=0.01)


def test_youden_threshold_does_not_depend_on_the_signal_normalisation():
    rng = np.random.default_rng(1)
    b, s = rng.normal(0.0, 1.0, 50_000), rng.normal(1.5, 0.5, 20_000)
    # where the densities cross, on the signal side: the root of N(x;0,1) = N(x;1.5,0.5)
    # (x^2/2 = (x-1.5)^2/(2*0.25) + ln 2 ... solved numerically below)
    xs = np.linspace(0.3, 3, 100_000)
    cross = xs[np.argmin(np.abs(norm.pdf(xs, 0, 1) - norm.pdf(xs, 1.5, 0.5)))]
    t1 = choose_threshold(b, s)
    t2 = choose_threshold(b, s, None, np.full(len(s), 1e-3))  # a tiny injected signal fraction
    assert t1.value == pytest.approx(cross, abs=0.05)
    assert t2.value == pytest.approx(t1.value)


def test_fixed_background_efficiency_threshold_is_the_background_quantile():
    rng = np.random.default_rng(2)
    b = rng.normal(0.0, 1.0, 400_000)
    thr = choose_threshold(b, None, method="background_efficiency", background_efficiency=0.1)
    assert thr.value == pytest.approx(norm.ppf(0.9), abs=0.01)
    assert thr.eff_b <= 0.1
    assert np.mean(b >= thr.value) == pytest.approx(0.1, abs=1e-4)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        choose_threshold([1.0], [2.0], method="best")


def test_asimov_significance_limits():
    assert asimov_significance(5.0, 0.0) is None
    assert asimov_significance(0.0, 10.0) == 0.0
    # s << b: Z_A -> s / sqrt(b)
    assert asimov_significance(1.0, 1e6) == pytest.approx(1e-3, rel=1e-3)
    s, b = 10.0, 5.0
    assert asimov_significance(s, b) == pytest.approx(math.sqrt(2 * ((s + b) * math.log(1 + s / b) - s)))


def test_region_yields_are_weighted_and_scale_with_luminosity():
    scores_b = np.array([0.1, 0.5, 0.9, 1.5])
    weights_b = np.array([1.0, 2.0, 3.0, 4.0])
    scores_s = np.array([0.4, 1.2, 2.0])
    weights_s = np.array([0.5, 0.5, 1.0])
    y = region_yields("SR", 0.9, scores_b, scores_s, weights_b, weights_s, lumi_scale=13.9)
    assert y.b == pytest.approx(7.0 * 13.9) and y.s == pytest.approx(1.5 * 13.9)
    assert y.n_b == 2 and y.n_s == 2
    assert y.eff_b == pytest.approx(0.7) and y.eff_s == pytest.approx(0.75)
    assert y.s_over_sqrt_b == pytest.approx(y.s / math.sqrt(y.b))
    # the significance grows like sqrt(L)
    y2 = region_yields("SR", 0.9, scores_b, scores_s, weights_b, weights_s, lumi_scale=4 * 13.9)
    assert y2.s_over_sqrt_b == pytest.approx(2 * y.s_over_sqrt_b)
