"""The samples committed in data/: they parse, match MANIFEST.json, and hold the preselection.

No Pythia needed: these read the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from eventlm.events import Kind
from eventlm.generate.bundle import BACKGROUNDS, SIGNALS
from eventlm.generate.detector import analysis_preselection

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

FILES = ("fixture.csv.gz", "background.csv.gz", "gluino_1000.csv.gz", "tttt_H500.csv.gz")


@pytest.fixture(scope="module")
def manifest():
    return json.loads((DATA_DIR / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def bundled():
    from eventlm.io import read_events

    return {name: read_events(DATA_DIR / name) for name in FILES}


def test_manifest_matches_the_files(manifest, bundled):
    assert set(manifest["files"]) == set(FILES)
    for name, events in bundled.items():
        entry = manifest["files"][name]
        assert len(events) == entry["events"]
        counts = dict(zip(*np.unique(np.asarray(ak.to_list(events.process)), return_counts=True)))
        assert {p: int(n) for p, n in counts.items()} == {p: e["events"] for p, e in entry["processes"].items()}
    for key in ("command", "seed", "versions", "detector", "luminosity_fb"):
        assert key in manifest


def test_sample_sizes(bundled):
    assert len(bundled["background.csv.gz"]) >= 60_000
    assert len(bundled["gluino_1000.csv.gz"]) >= 5_000
    assert len(bundled["tttt_H500.csv.gz"]) >= 5_000
    fixture_processes = set(ak.to_list(bundled["fixture.csv.gz"].process))
    assert fixture_processes == set(BACKGROUNDS) | set(SIGNALS)
    assert set(ak.to_list(bundled["background.csv.gz"].process)) == set(BACKGROUNDS)
    total = sum((DATA_DIR / name).stat().st_size for name in FILES)
    assert total < 30e6


def test_event_ids_are_unique_across_files(bundled):
    ids = np.concatenate([ak.to_numpy(events.event_id) for events in bundled.values()])
    assert len(np.unique(ids)) == len(ids)


def test_preselection_and_thresholds_hold(bundled):
    for name, events in bundled.items():
        assert analysis_preselection(events).all(), name
        part = ak.flatten(events.particles)
        kind, pt, eta = (ak.to_numpy(part[f]) for f in ("kind", "pt", "eta"))
        jets = (kind == Kind.JET) | (kind == Kind.BJET)
        leptons = (kind == Kind.ELECTRON) | (kind == Kind.MUON)
        photons = kind == Kind.PHOTON
        assert (pt[jets] > 20).all() and (np.abs(eta[jets]) < 2.8 + 1e-4).all(), name
        assert (pt[leptons] > 15).all() and (np.abs(eta[leptons]) < 2.7 + 1e-4).all(), name
        assert (pt[photons] > 20).all() and (np.abs(eta[photons]) < 2.37 + 1e-4).all(), name
        assert ak.all(events.particles.pt[:, 1:] <= events.particles.pt[:, :-1] + 1e-3), name


def test_weights_are_physical(manifest, bundled):
    lumi_pb = manifest["luminosity_fb"] * 1000.0
    for name, events in bundled.items():
        process = np.asarray(ak.to_list(events.process))
        weight = ak.to_numpy(events.weight)
        for p, entry in manifest["files"][name]["processes"].items():
            w = weight[process == p]
            np.testing.assert_allclose(w, entry["weight"], rtol=1e-6)
            # weights sum to sigma x acceptance x luminosity
            assert w.sum() == pytest.approx(entry["sigma_pb"] * entry["acceptance"] * lumi_pb, rel=1e-6)


def test_background_is_mixed_by_cross_section_and_shuffled(manifest, bundled):
    events = bundled["background.csv.gz"]
    entries = manifest["files"]["background.csv.gz"]["processes"]
    n = len(events)
    rates = {p: e["generated_sample"]["fraction"] for p, e in entries.items()}
    for p, e in entries.items():
        assert e["events"] == pytest.approx(rates[p] * n, abs=2.0)
    # shuffled: ttbar (the bulk) is spread over the whole file
    is_ttbar = np.asarray(ak.to_list(events.process[:2000])) == "ttbar"
    assert 0.5 < is_ttbar.mean() < 0.99
