"""The baselines fit on background features and score outliers higher; seeded."""

from __future__ import annotations

import numpy as np
import pytest

from eventlm.analysis.baselines import (
    COMBINED_PARTS,
    NAMES,
    REGISTRY,
    BackgroundTail,
    FlowBaseline,
    TrainSettings,
    atoms_of,
    fit_baselines,
    make_baseline,
)
from eventlm.metrics import auc


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cov = np.eye(12) + 0.5
    train = rng.multivariate_normal(np.zeros(12), cov, 3000).astype(np.float32)
    test_b = rng.multivariate_normal(np.zeros(12), cov, 1000).astype(np.float32)
    test_s = (rng.multivariate_normal(np.zeros(12), cov, 1000) + rng.choice([-3, 3], (1000, 12))).astype(np.float32)
    return train, test_b, test_s


@pytest.fixture(scope="module")
def fitted(data):
    """Every baseline, fitted once (Combined calibrated on held-out events) for the tests below."""
    train, _, _ = data
    return fit_baselines(train[:2400], NAMES, seed=1, settings=TrainSettings(epochs=5), x_calibration=train[2400:])


def test_every_baseline_is_listed_with_a_label():
    from eventlm.analysis.baselines import LABELS

    assert set(NAMES) == set(REGISTRY) | {"combined"} and set(LABELS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_baseline_fits_and_finds_outliers(name, data, fitted):
    _, test_b, test_s = data
    model = fitted[name]
    sb, ss = model.score(test_b), model.score(test_s)
    assert sb.shape == (1000,) and np.all(np.isfinite(sb))
    assert auc(sb, ss) > 0.8
    # an event far outside the background scores above every background event
    far = np.full((1, test_b.shape[1]), 8.0, dtype=np.float32)
    assert model.score(far)[0] > sb.max()


def test_baselines_are_reproducible_with_a_seed(data):
    train, test_b, _ = data
    names = ("autoencoder", "deep_svdd", "flow", "combined")  # the isolation forest: random_state
    a = fit_baselines(train[:1000], names, seed=3, settings=TrainSettings(epochs=1), x_calibration=train[1000:1500])
    b = fit_baselines(train[:1000], names, seed=3, settings=TrainSettings(epochs=1), x_calibration=train[1000:1500])
    c = fit_baselines(train[:1000], ("flow",), seed=4, settings=TrainSettings(epochs=1))
    for name in names:
        np.testing.assert_allclose(a[name].score(test_b), b[name].score(test_b), rtol=1e-6)
    assert not np.allclose(a["flow"].score(test_b), c["flow"].score(test_b))  # the seed is used


def test_flow_score_is_a_normalized_log_density():
    """exp(-score) integrates to 1 over the feature space (here 2-D: a Gaussian column and a 0/1 column,
    dequantised): the score is -log p, no Jacobian or constant dropped (standardized units: the
    standardization's constant Jacobian is the one left out, so the integral runs over them)."""
    rng = np.random.default_rng(5)
    x = np.stack([rng.normal(3.0, 2.0, 2000), rng.random(2000) < 0.3], axis=1).astype(np.float32)
    flow = FlowBaseline(seed=0, settings=TrainSettings(epochs=3), transforms=2, hidden=(16, 16)).fit(x)
    st = flow.standardizer
    z0, z1 = np.meshgrid(np.linspace(-8, 8, 801), np.linspace(-8, 8, 1601), indexing="ij")
    z = np.stack([z0.ravel(), z1.ravel()], axis=1).astype(np.float32)
    density = np.exp(-flow.score(z * st.std + st.mean))
    integral = density.sum() * (16 / 800) * (16 / 1600)
    assert integral == pytest.approx(1.0, abs=0.02)


def test_flow_dequantises_the_atoms_and_only_while_training():
    import torch

    rng = np.random.default_rng(6)
    n = 1000
    present = rng.random(n) < 0.6  # an object present in 60 % of the events, zero-padded otherwise
    x = np.stack([
        np.where(present, rng.normal(4.0, 1.0, n), 0.0),  # continuous with a padding atom
        (rng.random(n) < 0.01).astype(float),  # a rare one-hot column: every value is an atom
        rng.normal(0.0, 1.0, n),  # continuous: no atom
    ], axis=1).astype(np.float32)
    flow = FlowBaseline(seed=2, settings=TrainSettings(epochs=1), transforms=1, hidden=(8, 8))
    flow.validation_fraction = 0.0  # every event a training event: row i of x is row i of the training data
    flow.fit(x)
    z = torch.from_numpy(flow.standardizer(x))
    noisy = flow._training_input(z, torch.arange(n)).numpy()
    changed = noisy != z.numpy()
    np.testing.assert_array_equal(changed[:, 0], ~present)  # the padding, not the present objects
    assert changed[:, 1].all() and not changed[:, 2].any()
    assert (noisy - z.numpy())[changed].std() == pytest.approx(flow.dequantization, rel=0.1)
    # scoring adds no noise: the same events score the same, twice
    np.testing.assert_array_equal(flow.score(x), flow.score(x))
    assert [len(a) for a in atoms_of(flow.standardizer(x), 0.01)] == [1, 2, 0]


def test_combined_is_the_mean_of_its_parts_calibrated_on_held_out_background(data, fitted):
    train, test_b, test_s = data
    combined = fitted["combined"]
    # it reuses the fitted Deep SVDD and flow (no second fit) ...
    assert all(combined.parts[name] is fitted[name] for name in COMBINED_PARTS)
    # ... calibrated on the held-out events, not the training ones
    for name in COMBINED_PARTS:
        np.testing.assert_array_equal(combined.tails[name].sorted, np.sort(fitted[name].score(train[2400:])))
    x = np.concatenate([test_b, test_s])
    expected = np.mean([BackgroundTail(fitted[n].score(train[2400:]))(fitted[n].score(x)) for n in COMBINED_PARTS],
                       axis=0)
    np.testing.assert_allclose(combined.score(x), expected)


def test_combined_without_calibration_events_holds_out_a_fifth_of_the_training_events(data):
    train, _, _ = data
    got = fit_baselines(train[:1000], ("combined",), seed=1, settings=TrainSettings(epochs=1))
    combined = got["combined"]
    assert set(got) == {"combined"} and combined.n_calibration == 200
    held_out = np.sort(np.random.default_rng([1, 13]).permutation(1000)[:200])
    kept = np.setdiff1d(np.arange(1000), held_out)
    for part in combined.parts.values():  # the parts never saw the calibration events
        np.testing.assert_allclose(part.standardizer.mean, train[:1000][kept].mean(axis=0), rtol=1e-5, atol=1e-6)


def test_background_tail_is_the_fraction_of_background_at_or_above_then_an_exponential_tail():
    scores = np.arange(1000, dtype=np.float64)  # the top k = 10 are 990..999
    tail = BackgroundTail(scores)
    np.testing.assert_allclose(tail(np.array([-5.0, 0.0, 500.0, 990.0])), -np.log([1.0, 1.0, 0.5, 0.01]))
    beyond = tail(np.array([991.0, 1000.0, 1e6]))
    assert np.all(np.isfinite(beyond)) and np.all(np.diff(beyond) > 0) and beyond[0] > -np.log(0.01)
    assert tail.tau == pytest.approx(5.0)  # mean excess of 991..999 over 990


def test_combined_needs_fitting_before_scoring(fitted):
    from eventlm.analysis.baselines import CombinedBaseline

    with pytest.raises(RuntimeError, match="fit"):
        CombinedBaseline({n: fitted[n] for n in COMBINED_PARTS}).score(np.zeros((2, 12), np.float32))


def test_scoring_before_fitting_is_an_error():
    with pytest.raises(RuntimeError, match="fit"):
        make_baseline("autoencoder").score(np.zeros((2, 3), np.float32))


def test_flow_keeps_the_epoch_with_the_lowest_validation_loss(fitted):
    flow = fitted["flow"]  # 5 epochs x 2 (the flow's epochs: twice the others')
    assert len(flow.validation_curve) == len(flow.loss_curve) == 10
    assert flow.best_epoch == int(np.argmin(flow.validation_curve))
