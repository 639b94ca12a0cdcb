"""The samples committed in data/: they parse, match MANIFEST.json, and hold the preselection.

No Pythia needed: these read the files. The files checked are the ones MANIFEST.json lists, which
must be every sample in data/; each must be one of the bundle's files (``file_processes``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from eventlm.events import Kind
from eventlm.analysis.features import variables_of
from eventlm.generate.bundle import BACKGROUNDS, FIXTURE_SIGNALS, SIGNALS, file_processes, first_id, id_blocks
from eventlm.generate.detector import analysis_preselection
from eventlm.generate.pythia import PROCESSES

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

MANIFEST = json.loads((DATA_DIR / "MANIFEST.json").read_text())
FILES = tuple(MANIFEST["files"])
SIGNAL_FILES = tuple(f"{p}.csv.gz" for p in SIGNALS if f"{p}.csv.gz" in FILES)


def test_every_signal_card_of_the_suite_is_bundled():
    """data/ holds one file per signal process of the validation suite (issue 10: >= 6 signals, >= 3
    of them with the background's object count)."""
    assert set(SIGNAL_FILES) == {f"{p}.csv.gz" for p in SIGNALS}
    assert len(SIGNALS) >= 6
    assert sum(PROCESSES[p].background_multiplicity for p in SIGNALS) >= 3


@pytest.fixture(scope="module")
def manifest():
    return json.loads((DATA_DIR / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def bundled():
    from eventlm.io import read_events

    return {name: read_events(DATA_DIR / name) for name in FILES}


def test_manifest_matches_the_files(manifest, bundled):
    assert set(FILES) == {path.name for path in DATA_DIR.glob("*.csv.gz")}  # no sample outside the manifest
    assert set(FILES) <= set(file_processes())
    assert {"fixture.csv.gz", "background.csv.gz", "gluino_1000.csv.gz", "tttt_H500.csv.gz"} <= set(FILES)
    for name, events in bundled.items():
        entry = manifest["files"][name]
        assert len(events) == entry["events"]
        counts = dict(zip(*np.unique(np.asarray(ak.to_list(events.process)), return_counts=True)))
        assert {p: int(n) for p, n in counts.items()} == {p: e["events"] for p, e in entry["processes"].items()}
        assert set(counts) == set(file_processes()[name])
    for key in ("command", "seed", "versions", "detector", "luminosity_fb"):
        assert key in manifest


def test_files_are_the_manifests_bytes(manifest):
    for name in FILES:
        data = (DATA_DIR / name).read_bytes()
        assert len(data) == manifest["files"][name]["bytes"], name
        assert hashlib.sha256(data).hexdigest() == manifest["files"][name]["sha256"], name


def test_sample_sizes(bundled):
    assert len(bundled["background.csv.gz"]) >= 60_000
    for name in SIGNAL_FILES:
        assert len(bundled[name]) >= 5_000, name
        assert set(ak.to_list(bundled[name].process)) == {name.removesuffix(".csv.gz")}
    fixture_processes = set(ak.to_list(bundled["fixture.csv.gz"].process))
    assert fixture_processes == set(BACKGROUNDS) | set(FIXTURE_SIGNALS)
    assert set(ak.to_list(bundled["background.csv.gz"].process)) == set(BACKGROUNDS)
    total = sum(path.stat().st_size for path in DATA_DIR.iterdir())  # the whole of data/
    assert total < 30e6


def test_event_ids_are_unique_across_files(bundled):
    ids = np.concatenate([ak.to_numpy(events.event_id) for events in bundled.values()])
    assert len(np.unique(ids)) == len(ids)
    assert len(set(id_blocks().values())) == len(id_blocks())
    for name, events in bundled.items():  # every event id lies in its (file, process) block
        process = np.asarray(ak.to_list(events.process))
        ids = ak.to_numpy(events.event_id)
        for p in file_processes()[name]:
            own = ids[process == p]
            assert len(own) and (own >= first_id(name, p)).all() and (own < first_id(name, p) + 10**7).all()


def test_signal_commands_and_versions_are_recorded(manifest):
    assert set(manifest["versions"]) >= {"eventlm", "pythia8mc", "fastjet"}
    for name in SIGNAL_FILES:
        (process, info), = manifest["files"][name]["processes"].items()
        assert PROCESSES[process].signal
        assert info["seed"] == manifest["seed"] and info["first_id"] == first_id(name, process)
        if "command" in info:  # the signals generated since the commands are recorded
            assert info["command"].startswith(f"eventlm generate {process} --events {info['events']} ")
            assert f"--first-id {info['first_id']} " in info["command"] and "--select analysis" in info["command"]


def test_signals_have_the_object_count_their_cards_promise(manifest, bundled):
    """gluino_1000 and tttt_H500: more objects; the others: within one object of the background's mean,
    and different in energy scale or MET instead."""
    n_bkg = variables_of(bundled["background.csv.gz"])["n_particles"].mean()
    for name in SIGNAL_FILES:
        card = PROCESSES[name.removesuffix(".csv.gz")]
        delta = variables_of(bundled[name])["n_particles"].mean() - n_bkg
        summary = manifest["files"][name]["summary"]
        if card.background_multiplicity:
            assert abs(delta) < 1.0, (name, delta)
            assert max(summary["auc_ht"], summary["auc_met"]) > 0.65, (name, summary)
        else:
            assert delta > 3.0, (name, delta)


def test_manifest_summaries_match_the_files(manifest, bundled):
    n_bkg = variables_of(bundled["background.csv.gz"])["n_particles"].mean()
    for name, events in bundled.items():
        summary = manifest["files"][name]["summary"]
        v = variables_of(events)
        assert summary["events"] == len(events)
        for key in ("n_particles", "ht", "met", "lead_jet_pt"):
            assert summary[f"mean_{key}"] == pytest.approx(v[key].mean(), rel=1e-9), (name, key)
        if name in SIGNAL_FILES:
            assert summary["delta_mean_n_particles"] == pytest.approx(v["n_particles"].mean() - n_bkg, abs=1e-9)
            label = np.r_[np.zeros(len(bundled["background.csv.gz"])), np.ones(len(events))]
            ht = np.r_[variables_of(bundled["background.csv.gz"])["ht"], v["ht"]]
            assert summary["auc_ht"] == pytest.approx(roc_auc_score(label, ht), abs=1e-9), name


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
