"""Generation with real Pythia: determinism, weights, cross sections, selections, object thresholds."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")

from eventlm.events import Kind  # noqa: E402
from eventlm.generate import PROCESSES, analysis_preselection, darkmachines_preselection, generate  # noqa: E402
from eventlm.generate.pythia import decay_table, make_pythia  # noqa: E402


@pytest.fixture(scope="module")
def ttbar():
    return generate("ttbar", 120, seed=11, progress=False)


def _assert_identical(a, b):
    assert ak.to_list(a) == ak.to_list(b)


def test_generation_is_deterministic_for_a_seed(ttbar):
    again = generate("ttbar", 120, seed=11, progress=False)
    _assert_identical(ttbar.events, again.events)
    assert again.n_generated == ttbar.n_generated and again.sigma_pb == ttbar.sigma_pb
    other = generate("ttbar", 120, seed=12, progress=False)
    assert ak.to_list(other.events.met) != ak.to_list(ttbar.events.met)


def test_worker_processes_do_not_change_the_output():
    one = generate("single_top", 500, seed=3, jobs=1, progress=False)  # two shards
    two = generate("single_top", 500, seed=3, jobs=2, progress=False)
    _assert_identical(one.events, two.events)
    assert one.n_generated == two.n_generated


def test_weights_are_sigma_over_generated_times_luminosity(ttbar):
    assert 300.0 < ttbar.sigma_pb < 900.0  # LO Pythia ttbar at 13 TeV
    weights = ak.to_numpy(ttbar.events.weight)
    np.testing.assert_allclose(weights, ttbar.sigma_pb * 10_000.0 / ttbar.n_generated)
    assert ttbar.n_events == 120 <= ttbar.n_generated <= ttbar.n_generated_total
    # sum of weights = sigma x acceptance x luminosity
    assert weights.sum() == pytest.approx(ttbar.sigma_pb * ttbar.acceptance * 10_000.0)
    assert 0.5 < ttbar.acceptance <= 1.0  # the Dark Machines preselection keeps most ttbar
    np.testing.assert_array_equal(ak.to_numpy(ttbar.events.event_id), np.arange(120))
    assert set(ak.to_list(ttbar.events.process)) == {"ttbar"}


def test_head_keeps_weights_physical(ttbar):
    head = ttbar.head(60, first_id=1000)
    assert head.n_generated == int(ttbar.gen_index[59]) < ttbar.n_generated
    np.testing.assert_allclose(ak.to_numpy(head.events.weight), ttbar.sigma_pb * 10_000.0 / head.n_generated)
    assert ak.to_list(head.events.event_id) == list(range(1000, 1060))


def test_objects_are_within_the_format_thresholds(ttbar):
    events = ttbar.events
    assert darkmachines_preselection(events).all()
    part = ak.flatten(events.particles)
    kind, pt, eta = (ak.to_numpy(part[f]) for f in ("kind", "pt", "eta"))
    jets = (kind == Kind.JET) | (kind == Kind.BJET)
    leptons = (kind == Kind.ELECTRON) | (kind == Kind.MUON)
    photons = kind == Kind.PHOTON
    assert (pt[jets] > 20).all() and (np.abs(eta[jets]) < 2.8).all()
    assert (pt[leptons] > 15).all() and (np.abs(eta[leptons]) < 2.7).all()
    assert (pt[photons] > 20).all() and (np.abs(eta[photons]) < 2.37).all()
    assert (np.abs(eta[kind == Kind.BJET]) < 2.5).all()
    charge = ak.to_numpy(part.charge)
    assert (np.abs(charge[leptons]) == 1).all() and (charge[~leptons] == 0).all()
    # pT-ordered within each event; E >= |p| (masses >= 0)
    pts = events.particles.pt
    assert ak.all(pts[:, 1:] <= pts[:, :-1])
    E = ak.to_numpy(part.E)
    assert (E >= pt * np.cosh(eta) * (1 - 1e-5)).all()
    # ttbar: b-jets present, some leptons, real MET
    assert (kind == Kind.BJET).sum() > 0.8 * len(events)
    assert leptons.sum() > 0.3 * len(events)
    assert 20.0 < float(np.median(ak.to_numpy(events.met))) < 200.0


def test_analysis_selection_is_applied():
    sample = generate("tttt_H500", 40, seed=2, selection="analysis", progress=False)
    assert sample.n_events == 40
    assert analysis_preselection(sample.events).all()
    assert 0.5 < sample.acceptance <= 1.0  # four tops: many jets and b-jets


def test_gluino_decay_table_is_taken_from_the_slha_file():
    pythia = make_pythia(PROCESSES["gluino_1000"], 1)
    assert pythia.particleData.m0(1000021) == pytest.approx(1000.0)
    assert pythia.particleData.m0(1000022) == pytest.approx(1.0)
    assert decay_table(pythia, 1000021) == [(pytest.approx(1.0), (-6, 6, 1000022))]


def test_heavy_higgs_decays_to_top_pairs():
    pythia = make_pythia(PROCESSES["tttt_H500"], 1)
    assert pythia.particleData.m0(35) == pytest.approx(500.0)
    table = decay_table(pythia, 35)
    total = sum(b for b, _ in table)
    assert sum(b for b, prods in table if prods == (-6, 6)) / total > 0.95


def test_cli_writes_a_readable_file(tmp_path, capsys):
    from eventlm.cli import main
    from eventlm.io import read_events

    out = tmp_path / "w.csv.gz"
    assert main(["generate", "w_jets", "--events", "20", "--seed", "4", "--out", str(out), "--lumi", "139"]) == 0
    assert "sigma =" in capsys.readouterr().out
    events = read_events(out)
    assert len(events) == 20 and set(ak.to_list(events.process)) == {"w_jets"}
    assert darkmachines_preselection(events).all()
