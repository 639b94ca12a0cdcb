"""Event variables and fixed-length features, on events built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from eventlm.analysis.features import OBJECT_FEATURES, Standardizer, fixed_features, variables_of
from eventlm.events import Kind, make_events, make_particles


def _events():
    J, B, E, M, G = (int(k) for k in (Kind.JET, Kind.BJET, Kind.ELECTRON, Kind.MUON, Kind.PHOTON))
    kinds = [[J, B, E, J], [M, G], []]
    pts = [[100.0, 50.0, 30.0, 200.0], [40.0, 25.0], []]
    counts = [len(k) for k in kinds]
    flat_k = sum(kinds, [])
    flat_pt = sum(pts, [])
    n = len(flat_k)
    charge = [0 if k in (J, B, G) else -1 for k in flat_k]
    particles = make_particles(flat_k, charge, flat_pt, [0.5] * n, [0.1] * n, [300.0] * n, counts)
    return make_events(event_id=[1, 2, 3], process="ttbar", weight=[1.0, 1.0, 1.0], met=[60.0, 10.0, 0.0],
                       met_phi=[0.0, 1.0, -1.0], particles=particles)


def test_event_variables_count_b_jets_as_jets():
    v = variables_of(_events())
    np.testing.assert_array_equal(v["n_jets"], [3, 0, 0])
    np.testing.assert_array_equal(v["n_bjets"], [1, 0, 0])
    np.testing.assert_array_equal(v["n_leptons"], [1, 1, 0])
    np.testing.assert_allclose(v["ht"], [350.0, 0.0, 0.0])
    np.testing.assert_allclose(v["lead_jet_pt"], [200.0, 0.0, 0.0])
    np.testing.assert_allclose(v["meff"], [350.0 + 60.0 + 30.0, 10.0 + 40.0, 0.0])


def test_fixed_features_order_by_pt_and_zero_pad():
    x = fixed_features(_events(), n_objects=3)
    assert x.shape == (3, 3 * OBJECT_FEATURES + 3)
    first = x[0, :OBJECT_FEATURES]
    assert first[int(Kind.JET)] == 1 and first[5] == pytest.approx(np.log(200.0))  # leading object: the 200 GeV jet
    assert np.all(x[1, 2 * OBJECT_FEATURES : 3 * OBJECT_FEATURES] == 0)  # 2 objects: third slot padded
    assert np.all(x[2, : 3 * OBJECT_FEATURES] == 0)  # empty event


def test_fixed_features_of_a_filtered_array_keep_every_row():
    # regression (weaver-core): padding a filtered, unpacked awkward array must not drop or shift rows
    events = _events()[[True, False, True]]
    x = fixed_features(events, n_objects=2)
    assert x.shape[0] == 2
    assert x[0, 5] == pytest.approx(np.log(200.0))
    assert np.all(x[1, : 2 * OBJECT_FEATURES] == 0)


def test_standardizer_uses_training_statistics():
    train = np.array([[0.0, 1.0], [2.0, 1.0]])
    std = Standardizer.fit(train)
    np.testing.assert_allclose(std(train)[:, 0], [-1.0, 1.0])
    assert np.all(np.isfinite(std(np.array([[5.0, 7.0]]))))  # constant column: no division by zero
