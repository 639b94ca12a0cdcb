"""The baselines fit on background features and score outliers higher; seeded."""

from __future__ import annotations

import numpy as np
import pytest

from eventlm.analysis.baselines import NAMES, TrainSettings, fit_baselines, make_baseline
from eventlm.metrics import auc


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cov = np.eye(12) + 0.5
    train = rng.multivariate_normal(np.zeros(12), cov, 3000).astype(np.float32)
    test_b = rng.multivariate_normal(np.zeros(12), cov, 1000).astype(np.float32)
    test_s = (rng.multivariate_normal(np.zeros(12), cov, 1000) + rng.choice([-3, 3], (1000, 12))).astype(np.float32)
    return train, test_b, test_s


@pytest.mark.parametrize("name", NAMES)
def test_baseline_fits_and_finds_outliers(name, data):
    train, test_b, test_s = data
    model = make_baseline(name, seed=1, settings=TrainSettings(epochs=5)).fit(train)
    sb, ss = model.score(test_b), model.score(test_s)
    assert sb.shape == (1000,) and np.all(np.isfinite(sb))
    assert auc(sb, ss) > 0.8


def test_baselines_are_reproducible_with_a_seed(data):
    train, test_b, _ = data
    names = ("autoencoder", "deep_svdd")  # the isolation forest is seeded through random_state
    a = fit_baselines(train, names, seed=3, settings=TrainSettings(epochs=1))
    b = fit_baselines(train, names, seed=3, settings=TrainSettings(epochs=1))
    for name in names:
        np.testing.assert_allclose(a[name].score(test_b), b[name].score(test_b), rtol=1e-6)


def test_scoring_before_fitting_is_an_error():
    with pytest.raises(RuntimeError, match="fit"):
        make_baseline("autoencoder").score(np.zeros((2, 3), np.float32))
