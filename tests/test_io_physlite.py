"""ATLAS PHYSLITE input on real files (TTree ``CollectionTree`` of two releases, RNTuple ``EventData``).

The counts, b-tag decisions and MET soft term are checked against selections written here directly on
the files' own branches (in MeV) with uproot.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import assert_same_events, real_file

from eventlm.events import Kind
from eventlm.io import read_events
from eventlm.io.physlite import PHYSLITEOptions, from_nanoevents
from eventlm.io.uproot_patch import tree_keys

#: file -> (tree, separator, event-number branch, b-tag container, tagger)
FILES = {
    "PHYSLITE_example.root": ("CollectionTree", ".", "EventInfoAuxDyn.eventNumber",
                              "BTagging_AntiKt4EMPFlowAuxDyn", "DL1dv01"),
    "DAOD_PHYSLITE_21.2.108.0.art.pool.root": ("CollectionTree", ".", "EventInfoAux./EventInfoAux.eventNumber",
                                               "BTagging_AntiKt4EMPFlow_201903AuxDyn", "DL1r"),
    "uproot-physlite-rntuple_v1-0-0-0.root": ("EventData", ":", "EventInfoAuxDyn:eventNumber",
                                              "BTagging_AntiKt4EMPFlowAuxDyn", "DL1dv01"),
}
#: loose kinematic cuts of the defaults, in the file's MeV
LOOSE = {"Jets": (20e3, 2.8), "Electrons": (15e3, 2.47), "Muons": (15e3, 2.5), "Photons": (20e3, 2.37)}
KINDS = {"Jets": (Kind.JET, Kind.BJET), "Electrons": (Kind.ELECTRON,), "Muons": (Kind.MUON,),
         "Photons": (Kind.PHOTON,)}
WP77 = {"DL1dv01": 2.456, "DL1r": 2.195}


@lru_cache(maxsize=None)
def _raw(name: str):
    tree_name, sep, event_key, btag, tagger = FILES[name]
    with uproot.open(real_file(name)) as f:
        tree = f[tree_name]
        keys = set(tree_keys(tree))
        wanted = {event_key: "event"}
        for coll in LOOSE:
            for fld in ("pt", "eta", "phi"):
                wanted[f"Analysis{coll}AuxDyn{sep}{fld}"] = f"{coll}.{fld}"
        link = ("AnalysisJetsAuxDyn.btaggingLink/AnalysisJetsAuxDyn.btaggingLink.m_persIndex" if sep == "."
                else "AnalysisJetsAuxDyn:btaggingLink")
        wanted[link] = "link"
        for p in ("pb", "pc", "pu"):
            wanted[f"{btag}{sep}{tagger}_{p}"] = p
        for fld in ("mpx", "mpy", "name"):
            wanted[f"MET_Core_AnalysisMETAuxDyn{sep}{fld}"] = f"soft.{fld}"
        missing = [k for k in wanted if k not in keys and k.split("/")[0] not in keys]
        assert not missing, missing
        arrays = tree.arrays(list(wanted))
        out = {short: arrays[key] for key, short in wanted.items()}
        if out["link"].fields:
            out["link"] = out["link"]["m_persIndex"]
        return out, tree.num_entries


@lru_cache(maxsize=None)
def _read(name: str, options: PHYSLITEOptions | None = None):
    return read_events(real_file(name), physlite=options)


def _count(events, kinds) -> np.ndarray:
    return ak.to_numpy(sum(ak.sum(events.particles.kind == int(k), axis=1) for k in kinds))


def _loose(raw, coll) -> np.ndarray:
    pt_cut, eta_cut = LOOSE[coll]
    return ak.to_numpy(ak.sum((raw[f"{coll}.pt"] > pt_cut) & (abs(raw[f"{coll}.eta"]) < eta_cut), axis=1))


@pytest.mark.parametrize("name", FILES)
def test_every_physlite_file_converts_in_order_in_gev_within_the_loose_selection(name):
    events = _read(name)
    raw, n = _raw(name)
    assert len(events) == n
    np.testing.assert_array_equal(events.event_id.to_numpy(), ak.to_numpy(raw["event"]).astype(np.int64))
    met = events.met.to_numpy()
    assert np.all(np.isfinite(met)) and np.all(met >= 0) and np.median(met) < 500  # GeV, not MeV
    for coll, kinds in KINDS.items():
        assert np.all(_count(events, kinds) <= _loose(raw, coll)), coll
    p = events.particles
    assert ak.all(p.pt[:, :-1] >= p.pt[:, 1:])
    assert ak.all(p.pt > 15.0) and ak.max(p.pt) < 7000.0  # GeV
    lepton = (p.kind == int(Kind.ELECTRON)) | (p.kind == int(Kind.MUON))
    assert ak.all(abs(p.charge[lepton]) == 1)
    assert np.all(np.isfinite(events.weight.to_numpy()))


@pytest.mark.parametrize("name", FILES)
def test_kinematic_only_reproduces_the_loose_selection_and_the_btag_decision(name):
    events = _read(name, PHYSLITEOptions.kinematic_only())
    raw, _ = _raw(name)
    for coll, kinds in KINDS.items():
        np.testing.assert_array_equal(_count(events, kinds), _loose(raw, coll), err_msg=coll)
    # the b-tag decision, written here: DL1 discriminant of the linked BTagging object, fc 0.018
    tagger = FILES[name][4]
    index = ak.values_astype(raw["link"], np.int64)
    pb, pc, pu = (raw[p][index] for p in ("pb", "pc", "pu"))
    d = np.log(pb / (0.018 * pc + 0.982 * pu))
    jet_ok = (raw["Jets.pt"] > 20e3) & (abs(raw["Jets.eta"]) < 2.8)
    b = jet_ok & (abs(raw["Jets.eta"]) < 2.5) & (d > WP77[tagger])
    np.testing.assert_array_equal(_count(events, (Kind.BJET,)), ak.to_numpy(ak.sum(b, axis=1)))
    # MeV -> GeV: the leading jet of each event
    lead = ak.to_numpy(ak.fill_none(ak.max(raw["Jets.pt"][jet_ok], axis=1), 0.0)) / 1000.0
    jets = events.particles[(events.particles.kind == int(Kind.JET)) | (events.particles.kind == int(Kind.BJET))]
    np.testing.assert_allclose(ak.to_numpy(ak.fill_none(ak.max(jets.pt, axis=1), 0.0)), lead, rtol=1e-6)


def test_btag_working_points_order_the_number_of_bjets():
    name = "DAOD_PHYSLITE_21.2.108.0.art.pool.root"
    n = {wp: int(ak.sum(read_events(real_file(name), physlite=PHYSLITEOptions(btag_wp=wp)).particles.kind
                        == int(Kind.BJET))) for wp in (60, 77, 85)}
    assert 0 < n[60] <= n[77] <= n[85] and n[60] < n[85]
    gn2 = read_events(real_file("PHYSLITE_example.root"),
                      physlite=PHYSLITEOptions(btag_tagger="GN2v00", btag_cut=-100.0, btag_fc=0.1))
    central = gn2.particles[(abs(gn2.particles.eta) < 2.5)
                            & ((gn2.particles.kind == int(Kind.JET)) | (gn2.particles.kind == int(Kind.BJET)))]
    assert ak.all(central.kind == int(Kind.BJET))  # a cut below every score tags every central jet
    with pytest.raises(ValueError, match="btag_cut"):
        PHYSLITEOptions(btag_tagger="GN2v00")
    with pytest.raises(ValueError, match="btag_wp"):
        PHYSLITEOptions(btag_wp=50)


@pytest.mark.parametrize("name", FILES)
def test_met_is_the_selected_objects_plus_the_track_soft_term(name):
    events = _read(name)
    raw, _ = _raw(name)
    p = events.particles
    soft = raw["soft.name"] == "PVSoftTrkCore"
    mpx = -ak.sum(p.pt * np.cos(p.phi), axis=1) + ak.sum(raw["soft.mpx"][soft], axis=1) / 1000.0
    mpy = -ak.sum(p.pt * np.sin(p.phi), axis=1) + ak.sum(raw["soft.mpy"][soft], axis=1) / 1000.0
    np.testing.assert_allclose(events.met.to_numpy(), np.hypot(mpx, mpy).to_numpy(), rtol=1e-4, atol=1e-3)
    hard = read_events(real_file(name), physlite=PHYSLITEOptions(met_soft_term=None))
    assert not np.allclose(hard.met.to_numpy(), events.met.to_numpy())


def test_identification_and_overlap_removal_only_remove_objects():
    name = "PHYSLITE_example.root"
    loose = _read(name, PHYSLITEOptions.kinematic_only())
    no_or = _read(name, PHYSLITEOptions(overlap_dr=None))
    full = _read(name)
    for kinds in KINDS.values():
        assert np.all(_count(full, kinds) <= _count(no_or, kinds))
        assert np.all(_count(no_or, kinds) <= _count(loose, kinds))
    assert _count(full, KINDS["Electrons"]).sum() < _count(loose, KINDS["Electrons"]).sum()
    assert _count(full, KINDS["Jets"]).sum() < _count(no_or, KINDS["Jets"]).sum()  # jets on electrons


def _nanoevents(name: str, mode: str):
    from coffea.nanoevents import NanoEventsFactory, PHYSLITESchema

    with warnings.catch_warnings():  # coffea's notes about the PHYSLITE schema of these files
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(real_file(name)): "CollectionTree"}, schemaclass=PHYSLITESchema,
                                           mode=mode).events()


@pytest.mark.parametrize(("name", "mode"), [("PHYSLITE_example.root", "virtual"),
                                            ("DAOD_PHYSLITE_21.2.108.0.art.pool.root", "eager")])
def test_from_nanoevents_gives_the_events_of_the_file_reader(name, mode):
    options = PHYSLITEOptions(process="same")
    from_file = read_events(real_file(name), physlite=options)
    from_coffea = from_nanoevents(_nanoevents(name, mode), options)
    assert_same_events(from_file, from_coffea, rtol=0, atol=0)


def test_physlite_without_photons_reads_them_as_empty_with_one_warning(tmp_path, caplog):
    src, _ = _raw("DAOD_PHYSLITE_21.2.108.0.art.pool.root")
    path = tmp_path / "slimmed_physlite.root"
    with uproot.open(real_file("DAOD_PHYSLITE_21.2.108.0.art.pool.root")) as f:
        tree = f["CollectionTree"]
        names = [k for k in tree.keys() if k.startswith(("AnalysisJetsAuxDyn.", "AnalysisElectronsAuxDyn.",
                                                         "AnalysisMuonsAuxDyn.")) and k.rsplit(".", 1)[-1]
                 in ("pt", "eta", "phi", "m", "charge")]
        arrays = tree.arrays([*names, "EventInfoAux./EventInfoAux.eventNumber"])
    data = {k: arrays[k] for k in names}
    data["EventInfoAuxDyn.eventNumber"] = ak.to_numpy(arrays["EventInfoAux./EventInfoAux.eventNumber"])
    with uproot.recreate(path) as out:
        out.mktree("CollectionTree", {k: (v.dtype if isinstance(v, np.ndarray) else v.type) for k, v in data.items()})
        out["CollectionTree"].extend(data)
    caplog.set_level(logging.WARNING, logger="eventlm.io")
    events = read_events(path)
    warned = [r.getMessage() for r in caplog.records if "Photons" in r.getMessage()]
    assert len(warned) == 1 and "no Photons collection" in warned[0]
    np.testing.assert_array_equal(events.event_id.to_numpy(), ak.to_numpy(src["event"]).astype(np.int64))
    assert ak.sum(events.particles.kind == int(Kind.PHOTON)) == 0
    assert ak.sum(events.particles.kind == int(Kind.ELECTRON)) > 0


@pytest.mark.parametrize(("name", "iso"), [
    ("DAOD_PHYSLITE_21.2.108.0.art.pool.root", "AnalysisMuonsAuxDyn.ptvarcone30_TightTTVA_pt1000"),
    ("uproot-physlite-rntuple_v1-0-0-0.root", "AnalysisMuonsAuxDyn:ptvarcone30_Nonprompt_All_MaxWeightTTVA_pt1000"),
])
def test_muon_quality_and_isolation_match_a_selection_written_here(name, iso):
    tree_name, sep = FILES[name][:2]
    with uproot.open(real_file(name)) as f:
        tree = f[tree_name]
        tree_keys(tree)
        m = tree.arrays([f"AnalysisMuonsAuxDyn{sep}{x}" for x in ("pt", "eta", "quality")] + [iso])
    pt, eta, quality = (m[f"AnalysisMuonsAuxDyn{sep}{x}"] for x in ("pt", "eta", "quality"))
    # xAOD::Muon::quality() = the two lowest bits of the stored byte: 0 tight, 1 medium, 2 loose
    keep = (pt > 15e3) & (abs(eta) < 2.5) & ((quality & 3) <= 1) & (m[iso] < 0.15 * pt)
    events = _read(name)
    np.testing.assert_array_equal(_count(events, (Kind.MUON,)), ak.to_numpy(ak.sum(keep, axis=1)))
    assert ak.sum(keep) > 0
    tight = read_events(real_file(name), physlite=PHYSLITEOptions(muon_id="tight"))
    assert _count(tight, (Kind.MUON,)).sum() <= ak.sum(keep)


@pytest.mark.parametrize("name", ["uproot-physlite-rntuple_v1-0-0-0.root", "PHYSLITE_example.root"])
def test_streamed_chunks_equal_one_read(name):
    from eventlm.io import iter_events

    chunks = list(iter_events(real_file(name), step_size=13))
    assert all(len(c) <= 13 for c in chunks) and len(chunks) > 1
    assert_same_events(ak.concatenate(chunks), _read(name), rtol=0, atol=0)
