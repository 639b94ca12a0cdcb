"""The parametric detector model on hand-built truth records (no Pythia needed, FastJet is)."""

from __future__ import annotations

from dataclasses import replace

import awkward as ak
import numpy as np
import pytest

from eventlm.events import Kind, make_events, make_particles

pytest.importorskip("fastjet")

from eventlm.generate.detector import (  # noqa: E402
    DetectorParams,
    analysis_preselection,
    darkmachines_preselection,
    is_b_hadron,
    is_c_hadron,
    reconstruct,
    truth_record,
)

#: No smearing, every object identified, perfect b-tagging: lets tests compare exact numbers.
IDEAL = replace(
    DetectorParams(),
    jet_res_noise=0.0,
    jet_res_stochastic=0.0,
    jet_res_constant=0.0,
    egamma_res_stochastic=0.0,
    egamma_res_constant=0.0,
    muon_res_barrel=(0.0, 0.0),
    muon_res_endcap=(0.0, 0.0),
    met_res_sqrt_sumet=0.0,
    electron_eff=((2.5,), (1.0,)),
    muon_eff=((2.7,), (1.0,)),
    photon_eff=((2.5,), (1.0,)),
    btag_eff_b=1.0,
    btag_eff_c=0.0,
    btag_eff_tau=0.0,
    btag_eff_light=0.0,
)


def p(pid, pt, eta, phi, m=0.0, status=1, mother=21):
    """One truth particle: (pid, status, px, py, pz, E, mother_pid)."""
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    E = np.sqrt(px**2 + py**2 + pz**2 + m**2)
    return (pid, status, px, py, pz, E, mother)


def truth(*events):
    rows = [row for event in events for row in event]
    cols = list(zip(*rows)) if rows else [[]] * 7
    return truth_record(*cols, counts=[len(e) for e in events])


def spray(pt, eta, phi, n=4, pid=211):
    """``n`` pions at one azimuth sharing ``pt`` (so the jet pT is exactly ``pt``): a jet of hadrons."""
    return [p(pid if i % 2 else -pid, pt / n, eta + 0.02 * i, phi, m=0.1396) for i in range(n)]


def run(events, params=IDEAL, seed=1):
    return reconstruct(truth(*events), np.random.default_rng(seed), params)


def kinds(reco, i=0):
    return ak.to_list(reco.particles.kind[i])


def test_hadrons_cluster_into_pt_ordered_jets():
    reco, _ = run([spray(50.0, -1.0, -2.0) + spray(100.0, 0.5, 1.0)])
    jets = reco.particles[0]
    assert kinds(reco) == [Kind.JET, Kind.JET]
    np.testing.assert_allclose(ak.to_numpy(jets.pt), [100.0, 50.0], rtol=1e-4)
    np.testing.assert_allclose(ak.to_numpy(jets.eta), [0.53, -0.97], atol=0.02)
    # energy follows from pT, eta and the jet mass
    assert np.all(ak.to_numpy(jets.E) >= ak.to_numpy(jets.pt * np.cosh(jets.eta)) - 1e-3)


def test_jet_thresholds_and_acceptance():
    reco, _ = run([spray(18.0, 0.0, 0.0) + spray(60.0, 3.0, 2.0) + spray(80.0, -2.0, -2.0)])
    assert kinds(reco) == [Kind.JET]  # 18 GeV below 20, |eta| = 3 outside 2.8
    assert float(reco.particles.pt[0, 0]) == pytest.approx(80.0, rel=1e-4)


def test_isolated_prompt_electron_is_selected_and_removed_from_jets():
    electron = p(11, 50.0, 0.3, 0.0, m=0.000511, mother=24)
    reco, _ = run([[electron] + spray(70.0, -1.0, 2.5)])
    assert kinds(reco) == [Kind.JET, Kind.ELECTRON]
    e = reco.particles[0, 1]
    assert int(e.charge) == -1  # PDG +11 is the electron
    assert float(e.pt) == pytest.approx(50.0, rel=1e-5)
    assert float(reco.particles.pt[0, 0]) == pytest.approx(70.0, rel=1e-4)  # the jet has no electron in it


def test_positron_and_muon_charges():
    reco, _ = run([[p(-11, 40.0, 0.0, 0.0, mother=24), p(13, 30.0, 1.0, 2.0, m=0.1057, mother=24)]])
    got = {(int(k), int(q)) for k, q in zip(reco.particles.kind[0], reco.particles.charge[0])}
    assert got == {(Kind.ELECTRON, +1), (Kind.MUON, -1)}


def test_non_isolated_electron_stays_in_the_jet():
    electron = p(11, 20.0, 0.5, 1.0, mother=24)  # inside a 100 GeV spray: isolation fails
    reco, _ = run([[electron] + spray(100.0, 0.52, 1.02)])
    assert kinds(reco) == [Kind.JET]
    assert float(reco.particles.pt[0, 0]) == pytest.approx(120.0, rel=1e-3)


def test_electron_from_hadron_decay_is_not_prompt():
    electron = p(11, 40.0, 0.0, 0.0, mother=511)  # isolated but from a B decay
    reco, _ = run([[electron] + spray(80.0, -1.5, 2.0)])
    assert Kind.ELECTRON not in kinds(reco)
    assert kinds(reco) == [Kind.JET, Kind.JET]  # the calorimeter still sees it as a jet


def test_muons_never_enter_jets():
    muon = p(13, 20.0, 0.5, 1.0, m=0.1057, mother=521)  # non-prompt muon inside a jet
    reco, _ = run([[muon] + spray(100.0, 0.52, 1.02)])
    assert kinds(reco) == [Kind.JET]
    assert float(reco.particles.pt[0, 0]) == pytest.approx(100.0, rel=1e-3)


def test_collinear_photon_dresses_the_electron():
    electron = p(11, 40.0, 0.0, 0.0, mother=11)
    fsr = p(22, 10.0, 0.03, 0.02, mother=11)
    reco, _ = run([[electron, fsr] + spray(80.0, -1.5, 2.0)])
    assert kinds(reco) == [Kind.JET, Kind.ELECTRON]
    assert float(reco.particles.pt[0, 1]) == pytest.approx(50.0, rel=1e-3)


def test_prompt_isolated_photon_but_not_pi0_photons():
    prompt_photon = p(22, 60.0, 1.0, -1.0, mother=21)
    pi0_photon = p(22, 30.0, -1.0, 2.0, mother=111)
    reco, _ = run([[prompt_photon, pi0_photon]])
    assert kinds(reco) == [Kind.PHOTON, Kind.JET]
    assert int(reco.particles.charge[0, 0]) == 0


def test_object_thresholds_of_the_format():
    objects = [
        p(11, 14.0, 0.0, 0.0, mother=24),  # below 15 GeV
        p(13, 30.0, 2.75, 1.0, mother=24),  # |eta| > 2.7
        p(22, 19.0, 0.0, 2.0, mother=21),  # photon below 20 GeV
        p(22, 30.0, 2.4, -2.0, mother=21),  # photon |eta| > 2.37
    ]
    reco, _ = run([objects])
    # the identified electron and photons are taken out of the jet inputs even when they fail the cut
    assert kinds(reco) == []


def test_b_tagging_matches_b_hadrons():
    b_hadron = p(521, 40.0, 0.52, 1.02, m=5.28, status=-2)
    c_hadron = p(421, 30.0, -1.0, -2.0, m=1.86, status=-2)
    event = [b_hadron, c_hadron] + spray(100.0, 0.5, 1.0) + spray(60.0, -1.0, -2.0) + spray(40.0, 2.0, 3.0)
    reco, _ = run([event])
    assert kinds(reco) == [Kind.BJET, Kind.JET, Kind.JET]
    # outside the tracker no tag
    far = [p(511, 40.0, 2.62, 1.0, m=5.28, status=-2)] + spray(100.0, 2.6, 1.0)
    reco, _ = run([far])
    assert kinds(reco) == [Kind.JET]


def test_mistag_rates_follow_the_labels():
    params = replace(IDEAL, btag_eff_b=0.77, btag_eff_c=0.2, btag_eff_light=0.01)
    n = 3000
    b_events = [[p(511, 30.0, 0.02, 0.01, m=5.28, status=-2)] + spray(80.0, 0.0, 0.0)] * n
    c_events = [[p(411, 30.0, 0.02, 0.01, m=1.87, status=-2)] + spray(80.0, 0.0, 0.0)] * n
    light = [spray(80.0, 0.0, 0.0)] * n
    rates = []
    for events in (b_events, c_events, light):
        reco, _ = run(events, params)
        rates.append(float(np.mean(ak.to_numpy(reco.particles.kind[:, 0]) == Kind.BJET)))
    assert rates[0] == pytest.approx(0.77, abs=0.03)
    assert rates[1] == pytest.approx(0.20, abs=0.03)
    assert rates[2] == pytest.approx(0.01, abs=0.007)


def test_heavy_flavour_hadron_codes():
    b = np.array([511, 521, 531, 541, 5122, 5232, 10521, 513])
    c = np.array([411, 421, 431, 4122, 4332, 443])
    light = np.array([211, 111, 321, 2212, 3122, 22, 11, 5, 4, 5101, 1000022])
    assert is_b_hadron(b).all() and not is_c_hadron(b).any()
    assert is_c_hadron(c).all() and not is_b_hadron(c).any()
    assert not is_b_hadron(light).any() and not is_c_hadron(light).any()


def test_met_is_the_vector_sum_of_invisibles():
    event = [
        p(12, 30.0, 0.0, 0.0, mother=24),
        p(-14, 40.0, 1.0, np.pi / 2, mother=24),
        p(1000022, 50.0, -2.0, np.pi, m=1.0, mother=1000021),
    ] + spray(100.0, 0.0, -1.0)
    reco, _ = run([event])
    # (30 - 50, 40) -> |(-20, 40)|
    assert float(reco.met[0]) == pytest.approx(np.hypot(20.0, 40.0), rel=1e-5)
    assert float(reco.met_phi[0]) == pytest.approx(np.arctan2(40.0, -20.0), rel=1e-5)
    assert kinds(reco) == [Kind.JET]  # invisibles are not clustered
    assert float(reco.particles.pt[0, 0]) == pytest.approx(100.0, rel=1e-4)


def test_met_resolution_grows_with_sum_et():
    params = replace(IDEAL, met_res_sqrt_sumet=0.5)
    reco, _ = run([spray(400.0, 0.0, 0.0, n=8)] * 2000, params)
    # no invisibles: MET is the resolution term alone, Rayleigh with sigma = 0.5 sqrt(400) = 10 GeV
    assert float(np.mean(ak.to_numpy(reco.met))) == pytest.approx(10.0 * np.sqrt(np.pi / 2), rel=0.05)


def test_smearing_is_reproducible_and_realistic():
    events = [spray(100.0, 0.0, 0.0, n=6)] * 4000
    a, _ = run(events, DetectorParams(), seed=7)
    b, _ = run(events, DetectorParams(), seed=7)
    pt = ak.to_numpy(a.particles.pt[:, 0])
    np.testing.assert_array_equal(pt, ak.to_numpy(b.particles.pt[:, 0]))
    expected = np.sqrt((3.0 / 100) ** 2 + 0.75**2 / 100 + 0.04**2)
    assert np.std(pt) / np.mean(pt) == pytest.approx(expected, rel=0.08)
    assert np.mean(pt) == pytest.approx(100.0, rel=0.01)


def test_empty_events_and_darkmachines_preselection():
    reco, presel = run([[], spray(50.0, 0.0, 0.0), spray(70.0, 0.0, 0.0), [p(13, 30.0, 0.0, 0.0, mother=24)]])
    assert ak.to_list(ak.num(reco.particles)) == [0, 1, 1, 1]
    assert presel.tolist() == [False, False, True, True]


def test_analysis_preselection():
    def event(kind, pt):
        counts = [len(kind)]
        return make_particles(kind, [0] * len(kind), pt, [0.0] * len(kind), [0.0] * len(kind), pt, counts)

    particles = ak.concatenate(
        [
            event([1, 0, 0, 0], [100.0, 80.0, 70.0, 60.0]),  # HT 310, 4 jets, 1 b
            event([0, 0, 0, 0], [100.0, 80.0, 70.0, 60.0]),  # no b-jet
            event([1, 0, 0], [200.0, 80.0, 70.0]),  # three jets
            event([1, 0, 0, 0], [70.0, 60.0, 50.0, 40.0]),  # HT 220
        ]
    )
    events = make_events(event_id=range(4), process="x", weight=[1.0] * 4, met=[0.0] * 4, met_phi=[0.0] * 4,
                         particles=particles)
    assert analysis_preselection(events).tolist() == [True, False, False, False]
    assert darkmachines_preselection(events).tolist() == [True, True, True, True]


def test_dark_matter_fermions_are_invisible():
    """Pythia's Xd (PDG 52) pair of the ttbar_S200_inv signal adds to MET like a neutralino pair."""
    event = [
        p(52, 60.0, 0.5, 0.0, m=1.0, mother=35),
        p(-52, 20.0, -0.5, np.pi, m=1.0, mother=35),
    ] + spray(100.0, 0.0, -1.0)
    reco, _ = run([event])
    assert float(reco.met[0]) == pytest.approx(40.0, rel=1e-4)  # (60 - 20, 0)
    assert float(reco.met_phi[0]) == pytest.approx(0.0, abs=1e-5)
    assert kinds(reco) == [Kind.JET]
