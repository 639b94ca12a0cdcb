"""CMS NanoAOD input on real files (Run 2 and Run 3, TTree and RNTuple; tests/data/README.md).

Every count eventlm gives is checked against a selection written here directly on the file's own
branches with uproot: the loose kinematic selection bounds it from above, and the full selection
(identification, isolation) reproduces it where no overlap removal is involved.
"""

from __future__ import annotations

import logging
from dataclasses import replace
import warnings
from functools import lru_cache

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import assert_same_events, real_file

from eventlm.errors import EventFormatError
from eventlm.events import Kind
from eventlm.io import read_events
from eventlm.io.nanoaod import NanoAODOptions, from_nanoevents
from eventlm.io.uproot_patch import tree_keys
from eventlm.io.selection import Cut

NANOAOD_FILES = [
    "nanoAOD_2015_CMS_Open_Data_ttbar.root",          # Run 2 MC, TTree
    "cmsopendata2015_ttbar_19980_NANOAOD_RNTupleImporter_rntuple_v1-0-0-1.root",  # RNTuple
    "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root",  # muons only, RNTuple
    "nano_dy.root", "nano_dy_rntuple.root",           # v6 2018 MC, TTree and RNTuple
    "nano_dimuon.root", "nano_dimuon_rntuple.root",   # v6 2018 data
    "DYJetsToLL--UL17_v6-v2_109_Skim.root",           # UL17 (Run 2 ultra-legacy) MC
    "GJet_v11_Skim.root",                             # Run 3 v11 MC (no ParticleNet)
    "ggH_M125_amcatnlo_v13.root",                     # Run 3 v13 MC (2022 postEE)
    "EGamma_2022E_v13.root",                          # Run 3 v13 data (2022E)
]
#: the default kinematic cuts (NanoAODOptions): pt [GeV], |eta|
LOOSE = {"Jet": (20.0, 2.8), "Electron": (15.0, 2.7), "Muon": (15.0, 2.7), "Photon": (20.0, 2.37)}
KINDS = {"Jet": (Kind.JET, Kind.BJET), "Electron": (Kind.ELECTRON,), "Muon": (Kind.MUON,), "Photon": (Kind.PHOTON,)}


@lru_cache(maxsize=None)
def _read(name: str, options: NanoAODOptions | None = None):
    return read_events(real_file(name), nanoaod=options)


#: every branch the independent selections below use, read once per file
RAW_BRANCHES = ("event", "genWeight", "MET_pt", "MET_phi", "PuppiMET_pt", "PuppiMET_phi",
                *(f"{c}_{f}" for c in LOOSE for f in ("pt", "eta", "phi")),
                "Jet_jetId", "Jet_btagPNetB", "Jet_btagDeepFlavB", "Muon_mediumId", "Muon_pfRelIso04_all",
                "Electron_cutBased")


@lru_cache(maxsize=None)
def _file(name: str):
    with uproot.open(real_file(name)) as f:
        tree = f["Events"]
        keys = set(tree_keys(tree))  # (for an RNTuple, also builds its field index: seconds faster)
        return tree.arrays([b for b in RAW_BRANCHES if b in keys]), tree.num_entries, keys


def _raw(name: str, branches: tuple[str, ...]):
    arrays, n, keys = _file(name)
    assert all(b in RAW_BRANCHES for b in branches)
    present = [b for b in branches if b in keys]
    return (arrays[present] if present else None), n, keys


def _count(events, kinds) -> np.ndarray:
    kind = events.particles.kind
    return ak.to_numpy(sum(ak.sum(kind == int(k), axis=1) for k in kinds))


def _loose(name: str, coll: str) -> np.ndarray | None:
    arrays, n, keys = _raw(name, (f"{coll}_pt", f"{coll}_eta"))
    if arrays is None or f"{coll}_pt" not in arrays.fields:
        return None
    pt_cut, eta_cut = LOOSE[coll]
    return ak.to_numpy(ak.sum((arrays[f"{coll}_pt"] > pt_cut) & (abs(arrays[f"{coll}_eta"]) < eta_cut), axis=1))


@pytest.mark.parametrize("name", NANOAOD_FILES)
def test_every_nanoaod_file_converts_in_order_within_the_loose_selection(name):
    events = _read(name)
    arrays, n, keys = _raw(name, ("event", "genWeight"))
    assert len(events) == n
    if "event" in keys:
        np.testing.assert_array_equal(events.event_id.to_numpy(), arrays.event.to_numpy().astype(np.int64))
    else:
        np.testing.assert_array_equal(events.event_id.to_numpy(), np.arange(n))
    if "genWeight" in keys:
        np.testing.assert_allclose(events.weight.to_numpy(), arrays.genWeight.to_numpy())
    else:
        assert np.all(events.weight.to_numpy() == 1.0)
    met = events.met.to_numpy()
    assert np.all(np.isfinite(met)) and np.all(met >= 0)
    assert np.all(np.abs(events.met_phi.to_numpy()) <= np.pi + 1e-6)
    for coll, kinds in KINDS.items():
        loose = _loose(name, coll)
        ours = _count(events, kinds)
        if loose is None:
            assert ours.sum() == 0  # a collection the file lacks is empty
        else:
            assert np.all(ours <= loose), coll
    p = events.particles
    assert ak.all(p.pt[:, :-1] >= p.pt[:, 1:])  # by decreasing pT
    lepton = (p.kind == int(Kind.ELECTRON)) | (p.kind == int(Kind.MUON))
    assert ak.all(abs(p.charge[lepton]) == 1) and ak.all(p.charge[~lepton] == 0)
    assert ak.all(p.E >= p.pt * 0.999)


@pytest.mark.parametrize("name", ["nanoAOD_2015_CMS_Open_Data_ttbar.root", "ggH_M125_amcatnlo_v13.root",
                                  "nano_dimuon_rntuple.root"])
def test_kinematic_only_reproduces_the_loose_selection_exactly(name):
    events = _read(name, NanoAODOptions.kinematic_only())
    for coll, kinds in KINDS.items():
        np.testing.assert_array_equal(_count(events, kinds), _loose(name, coll), err_msg=coll)


def test_lepton_identification_and_isolation_match_a_selection_written_here():
    name = "DYJetsToLL--UL17_v6-v2_109_Skim.root"
    events = _read(name)
    m, _, _ = _raw(name, ("Muon_pt", "Muon_eta", "Muon_mediumId", "Muon_pfRelIso04_all"))
    mu = (m.Muon_pt > 15) & (abs(m.Muon_eta) < 2.7) & m.Muon_mediumId & (m.Muon_pfRelIso04_all < 0.25)
    e, _, _ = _raw(name, ("Electron_pt", "Electron_eta", "Electron_cutBased"))
    el = (e.Electron_pt > 15) & (abs(e.Electron_eta) < 2.7) & (e.Electron_cutBased >= 3)
    np.testing.assert_array_equal(_count(events, (Kind.MUON,)), ak.to_numpy(ak.sum(mu, axis=1)))
    np.testing.assert_array_equal(_count(events, (Kind.ELECTRON,)), ak.to_numpy(ak.sum(el, axis=1)))
    loose = _read(name, NanoAODOptions.kinematic_only())
    assert _count(events, (Kind.MUON,)).sum() < _count(loose, (Kind.MUON,)).sum()  # the cuts bite
    tight = _read(name, NanoAODOptions(muon_id="tight", muon_iso=0.15, electron_id="tight"))
    assert _count(tight, (Kind.MUON,)).sum() <= _count(events, (Kind.MUON,)).sum()
    assert _count(tight, (Kind.ELECTRON,)).sum() < _count(events, (Kind.ELECTRON,)).sum()


def test_jet_id_is_applied_from_the_jetid_bits():
    name = "ggH_M125_amcatnlo_v13.root"
    j, _, _ = _raw(name, ("Jet_pt", "Jet_eta", "Jet_jetId"))
    no_or = _read(name, NanoAODOptions(overlap_dr=None, electron_id=None, muon_id=None, muon_iso=None,
                                       photon_id=None))
    tight = (j.Jet_pt > 20) & (abs(j.Jet_eta) < 2.8) & ((j.Jet_jetId & 2) != 0)
    np.testing.assert_array_equal(_count(no_or, KINDS["Jet"]), ak.to_numpy(ak.sum(tight, axis=1)))


def _delta_r(a, b):
    dphi = (a.phi - b.phi + np.pi) % (2 * np.pi) - np.pi
    return np.sqrt((a.eta - b.eta) ** 2 + dphi**2)


@pytest.mark.parametrize("name", ["nano_dy.root", "DYJetsToLL--UL17_v6-v2_109_Skim.root"])
def test_overlap_removal_drops_the_jets_near_kept_leptons_and_photons(name):
    without = _read(name, NanoAODOptions(overlap_dr=None))
    with_or = _read(name)
    p = without.particles
    is_jet = (p.kind == int(Kind.JET)) | (p.kind == int(Kind.BJET))
    is_lep = (p.kind == int(Kind.ELECTRON)) | (p.kind == int(Kind.MUON))
    is_pho = p.kind == int(Kind.PHOTON)
    jets, leps, phos = p[is_jet], p[is_lep], p[is_pho]
    # photons within 0.4 of a lepton go first, then jets within 0.4 of a lepton or a remaining photon
    pho_near = ak.any(_delta_r(*ak.unzip(ak.cartesian([phos, leps], nested=True))) < 0.4, axis=2)
    phos = phos[~pho_near]
    veto = ak.concatenate([leps, phos], axis=1)
    jet_near = ak.any(_delta_r(*ak.unzip(ak.cartesian([jets, veto], nested=True))) < 0.4, axis=2)
    assert ak.sum(jet_near) > 0  # the real events do have jets on top of leptons
    expected_jets = ak.to_numpy(ak.sum(~jet_near, axis=1))
    np.testing.assert_array_equal(_count(with_or, KINDS["Jet"]), expected_jets)
    np.testing.assert_array_equal(_count(with_or, (Kind.PHOTON,)), ak.to_numpy(ak.num(phos)))
    np.testing.assert_array_equal(_count(with_or, (Kind.MUON, Kind.ELECTRON)), ak.to_numpy(ak.num(leps)))
    # and no kept jet lies within 0.4 of a kept lepton
    q = with_or.particles
    qj = q[(q.kind == int(Kind.JET)) | (q.kind == int(Kind.BJET))]
    ql = q[(q.kind == int(Kind.ELECTRON)) | (q.kind == int(Kind.MUON))]
    pairs = ak.cartesian([qj, ql], nested=True)
    assert not ak.any(_delta_r(*ak.unzip(pairs)) < 0.4)


def test_rntuple_and_ttree_of_the_same_nanoaod_give_the_same_events():
    for ttree, rntuple in (("nano_dy.root", "nano_dy_rntuple.root"),
                           ("nano_dimuon.root", "nano_dimuon_rntuple.root")):
        a = read_events(real_file(ttree), process="same")
        b = read_events(real_file(rntuple), process="same")
        assert_same_events(a, b, rtol=0, atol=0)


def test_met_collection_follows_the_run_and_the_option(caplog):
    caplog.set_level(logging.INFO, logger="eventlm.io")
    run2 = _read("nano_dy.root")
    raw, _, _ = _raw("nano_dy.root", ("MET_pt", "PuppiMET_pt"))
    np.testing.assert_array_equal(run2.met.to_numpy(), raw.MET_pt.to_numpy())
    puppi = read_events(real_file("nano_dy.root"), nanoaod=NanoAODOptions(met="PuppiMET"))
    np.testing.assert_array_equal(puppi.met.to_numpy(), raw.PuppiMET_pt.to_numpy())
    run3 = read_events(real_file("ggH_M125_amcatnlo_v13.root"))  # not cached: its log is checked
    raw3, _, _ = _raw("ggH_M125_amcatnlo_v13.root", ("PuppiMET_pt", "MET_pt"))
    np.testing.assert_array_equal(run3.met.to_numpy(), raw3.PuppiMET_pt.to_numpy())
    assert any("met from PuppiMET_pt" in r.getMessage() and "Run 3" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="met must be"):
        NanoAODOptions(met="CaloMET")


def _copy_without(src: str, dst, drop: tuple[str, ...], drop_branches: tuple[str, ...] = ()) -> None:
    """A slimmed copy of a real NanoAOD: the collections the reader uses, minus ``drop`` (and the
    branches ``drop_branches``)."""
    keep = ("Jet", "Electron", "Muon", "Photon", "MET", "PuppiMET")
    with uproot.open(real_file(src)) as f:
        tree = f["Events"]
        names = [k for k in tree.keys() if k.split("_", 1)[0] in keep and k.split("_", 1)[0] not in drop
                 and not k.startswith("n") and k not in drop_branches]
        top = [b for b in ("event", "run", "luminosityBlock", "genWeight") if b in tree.keys()]
        arrays = tree.arrays([*names, *top])
    data = {b: ak.to_numpy(arrays[b]) for b in top}
    for coll in keep:
        fields = [k for k in names if k.split("_", 1)[0] == coll]
        if not fields:
            continue
        if coll in ("MET", "PuppiMET"):
            data.update({k: ak.to_numpy(arrays[k]) for k in fields})
        else:
            data[coll] = ak.zip({k.split("_", 1)[1]: arrays[k] for k in fields})
    with uproot.recreate(dst) as out:
        out.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in data.items()})
        out["Events"].extend(data)


def test_slimmed_file_without_photons_reads_them_as_empty_with_one_warning(tmp_path, caplog):
    path = tmp_path / "slimmed_v12_like.root"
    _copy_without("ggH_M125_amcatnlo_v13.root", path, drop=("Photon",))
    caplog.set_level(logging.WARNING, logger="eventlm.io")
    events = read_events(path)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "Photon" in r.getMessage()]
    assert len(warned) == 1 and "no Photon collection" in warned[0].getMessage()
    full = _read("ggH_M125_amcatnlo_v13.root", NanoAODOptions(overlap_dr=None, process="x"))
    slim = read_events(path, nanoaod=NanoAODOptions(overlap_dr=None, process="x"))
    np.testing.assert_array_equal(events.event_id.to_numpy(), full.event_id.to_numpy())
    assert ak.sum(events.particles.kind == int(Kind.PHOTON)) == 0
    assert ak.sum(full.particles.kind == int(Kind.PHOTON)) > 0  # the original does have photons
    for kinds in (KINDS["Jet"], KINDS["Muon"], KINDS["Electron"]):
        np.testing.assert_array_equal(_count(slim, kinds), _count(full, kinds))


def test_puppimet_only_file_takes_puppimet_and_refuses_met(tmp_path, caplog):
    path = tmp_path / "v15_like.root"
    _copy_without("nano_dy.root", path, drop=("MET",))
    caplog.set_level(logging.INFO, logger="eventlm.io")
    events = read_events(path)
    raw, _, _ = _raw("nano_dy.root", ("PuppiMET_pt", "PuppiMET_phi"))
    np.testing.assert_array_equal(events.met.to_numpy(), raw.PuppiMET_pt.to_numpy())
    np.testing.assert_array_equal(events.met_phi.to_numpy(), raw.PuppiMET_phi.to_numpy())
    assert any("met from PuppiMET_pt" in r.getMessage() for r in caplog.records)
    with pytest.raises(EventFormatError, match="met='MET' but there is no MET_pt"):
        read_events(path, met="MET")


def test_missing_met_and_event_number_fall_back_to_objects_and_entries(caplog):
    name = "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"
    caplog.set_level(logging.WARNING, logger="eventlm.io")
    events = read_events(real_file(name))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("no Jet, Electron, Photon collection" in m for m in messages) == 1
    assert sum("met is computed from the selected objects" in m for m in messages) == 1
    np.testing.assert_array_equal(events.event_id.to_numpy(), np.arange(1000))
    m, _, _ = _raw(name, ("Muon_pt", "Muon_eta", "Muon_phi"))
    keep = (m.Muon_pt > 15) & (abs(m.Muon_eta) < 2.7)
    px = ak.sum((m.Muon_pt * np.cos(m.Muon_phi))[keep], axis=1)
    py = ak.sum((m.Muon_pt * np.sin(m.Muon_phi))[keep], axis=1)
    np.testing.assert_allclose(events.met.to_numpy(), np.hypot(px, py).to_numpy(), rtol=1e-5, atol=1e-4)


def test_btag_branch_era_and_working_point_are_options(nanoaod_path):
    # DeepFlavB is not filled (-3000) in this 2015 file; CSVv2 is
    default = read_events(nanoaod_path)
    assert ak.sum(default.particles.kind == int(Kind.BJET)) == 0
    csv = read_events(nanoaod_path, btag_branch="Jet_btagCSVV2", btag_wp=0.8484, process="ttbar")
    assert ak.sum(csv.particles.kind == int(Kind.BJET)) > 0
    assert set(csv.process.tolist()) == {"ttbar"}
    name = "EGamma_2022E_v13.root"
    j, _, _ = _raw(name, ("Jet_pt", "Jet_eta", "Jet_btagPNetB", "Jet_btagDeepFlavB"))
    kin = (j.Jet_pt > 20) & (abs(j.Jet_eta) < 2.8)
    tracker = abs(j.Jet_eta) < 2.5  # b-tagged only where there are tracks
    counts = {}
    for era, wp, branch, cut in (("2022", "medium", "Jet_btagPNetB", 0.2450), ("2022", "loose", "Jet_btagPNetB", 0.0470),
                                 ("2023", "tight", "Jet_btagPNetB", 0.6172),
                                 ("2022", "medium", "Jet_btagDeepFlavB", 0.3086)):
        opts = NanoAODOptions.kinematic_only(btag_era=era, btag_wp=wp, btag_branch=branch)
        events = read_events(real_file(name), nanoaod=opts)
        expected = ak.to_numpy(ak.sum(kin & tracker & (j[branch] > cut), axis=1))
        np.testing.assert_array_equal(_count(events, (Kind.BJET,)), expected, err_msg=f"{era} {wp} {branch}")
        counts[era, wp, branch] = expected.sum()
    assert counts["2022", "loose", "Jet_btagPNetB"] > counts["2022", "medium", "Jet_btagPNetB"] > 0
    with pytest.raises(ValueError, match="btag_era"):
        NanoAODOptions(btag_era="2031")
    with pytest.raises(ValueError, match="pass btag_wp=<number>"):
        read_events(nanoaod_path, btag_branch="Jet_btagCSVV2")


@lru_cache(maxsize=None)
def _nanoevents(name: str, mode: str):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with warnings.catch_warnings():  # coffea's own notes about cross-references of real files
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(real_file(name)): "Events"}, schemaclass=NanoAODSchema,
                                           mode=mode).events()


@pytest.mark.parametrize(("name", "mode"), [("nano_dimuon.root", "eager"), ("ggH_M125_amcatnlo_v13.root", "virtual")])
def test_from_nanoevents_gives_the_events_of_the_file_reader(name, mode):
    options = NanoAODOptions(process="same")
    from_file = read_events(real_file(name), nanoaod=options)
    from_coffea = from_nanoevents(_nanoevents(name, mode), options)
    assert_same_events(from_file, from_coffea, rtol=0, atol=0)
    assert ak.sum(from_file.particles.kind == int(Kind.JET)) > 0


def test_small_nanoaod_with_known_content(tmp_path):
    path = tmp_path / "mini_nano.root"
    jets = ak.zip({
        "pt": ak.Array([[100.0, 30.0, 15.0], [50.0], []], with_name=None),
        "eta": [[0.5, 2.9, 0.0], [-1.0], []],
        "phi": [[0.1, 0.2, 0.3], [1.0], []],
        "mass": [[10.0, 5.0, 1.0], [0.0], []],
        "btagDeepFlavB": [[0.9, 0.9, 0.9], [0.1], []],
    })
    electrons = ak.zip({"pt": [[], [20.0], [10.0]], "eta": [[], [2.6], [0.0]], "phi": [[], [0.0], [0.0]],
                        "mass": [[], [0.0], [0.0]], "charge": [[], [-1], [1]]})
    muons = ak.zip({"pt": [[40.0], [], []], "eta": [[0.0], [], []], "phi": [[0.0], [], []],
                    "mass": [[0.1], [], []], "charge": [[1], [], []]})
    photons = ak.zip({"pt": [[], [], [25.0, 30.0]], "eta": [[], [], [2.4, 1.0]], "phi": [[], [], [0.0, 0.5]]})
    to32 = lambda rec: ak.zip({f: ak.values_astype(rec[f], np.int32 if f == "charge" else np.float32) for f in rec.fields})  # noqa: E731
    with uproot.recreate(path) as f:
        data = {
            "run": np.ones(3, np.uint32), "luminosityBlock": np.ones(3, np.uint32),
            "event": np.array([11, 12, 13], np.uint64),
            "MET_pt": np.array([5.0, 6.0, 7.0], np.float32), "MET_phi": np.zeros(3, np.float32),
            "Jet": to32(jets), "Electron": to32(electrons), "Muon": to32(muons), "Photon": to32(photons),
        }
        f.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in data.items()})
        f["Events"].extend(data)
    no_id = NanoAODOptions(jet_id=None)  # a hand-made file without Jet_jetId
    events = read_events(path, nanoaod=replace(no_id, process="mini"))
    assert events.event_id.tolist() == [11, 12, 13]
    assert events.weight.tolist() == [1.0, 1.0, 1.0]  # no genWeight
    assert events.process.tolist() == ["mini"] * 3
    p = events.particles
    # jet 2 fails |eta| < 2.8, jet 3 pt > 20, the 10 GeV electron pt > 15
    assert p.kind.tolist() == [[Kind.BJET, Kind.MUON], [Kind.JET, Kind.ELECTRON], [Kind.PHOTON]]
    assert p.charge.tolist() == [[0, 1], [0, -1], [0]]
    np.testing.assert_allclose(p.pt[0].to_numpy(), [100.0, 40.0])
    np.testing.assert_allclose(p.E[0, 0], np.sqrt((100 * np.cosh(0.5)) ** 2 + 100), rtol=1e-6)
    assert p.pt[2].tolist() == [30.0]  # the photon at |eta| 2.4 fails |eta| < 2.37
    assert read_events(path, nanoaod=no_id).process[0] == "mini_nano"  # default: the file name
    # a muon on top of the leading jet removes it (overlap removal), unless switched off
    muons_on_jet = ak.zip({"pt": [[40.0], [], []], "eta": [[0.5], [], []], "phi": [[0.15], [], []],
                           "mass": [[0.1], [], []], "charge": [[1], [], []]})
    data["Muon"] = to32(muons_on_jet)
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in data.items()})
        f["Events"].extend(data)
    assert read_events(path, nanoaod=no_id).particles.kind[0].tolist() == [Kind.MUON]
    kept = read_events(path, nanoaod=replace(no_id, overlap_dr=None)).particles.kind[0].tolist()
    assert kept == [Kind.BJET, Kind.MUON]
    assert read_events(path, nanoaod=replace(no_id, overlap_dr=0.02)).particles.kind[0].tolist() == kept


def test_options_are_checked():
    with pytest.raises(ValueError, match="jet_id"):
        NanoAODOptions(jet_id="medium")
    with pytest.raises(ValueError, match="muon_id"):
        NanoAODOptions(muon_id="ultra")
    opts = NanoAODOptions(jet=Cut(30.0, 2.4))
    events = read_events(real_file("nano_dy.root"), nanoaod=opts)
    jets = events.particles[(events.particles.kind == int(Kind.JET)) | (events.particles.kind == int(Kind.BJET))]
    assert ak.all(jets.pt > 30) and ak.all(abs(jets.eta) < 2.4)


def test_unfilled_id_and_btag_branches_are_reported_once(nanoaod_path, caplog):
    # in the 2015 Open Data NanoAOD the muon IDs are all False and DeepJet is -3000
    caplog.set_level(logging.WARNING, logger="eventlm.io")
    events = read_events(nanoaod_path, step_size=50)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("muon_id rejects all" in m for m in messages) == 1
    assert sum("Jet_btagDeepFlavB is below 0 for all" in m for m in messages) == 1
    assert ak.sum(events.particles.kind == int(Kind.MUON)) == 0
    without = read_events(nanoaod_path, nanoaod=NanoAODOptions(muon_id=None))
    assert ak.sum(without.particles.kind == int(Kind.MUON)) > 0


@pytest.mark.parametrize("name", ["nano_dy_rntuple.root", "DAOD_PHYSLITE_21.2.108.0.art.pool.root"])
def test_cli_convert_and_info_on_real_files(name, tmp_path, capsys):
    from eventlm.cli import main

    out = tmp_path / "out.parquet"
    assert main(["convert", str(real_file(name)), str(out)]) == 0
    direct = read_events(real_file(name))  # every reader on every file: the tests above
    assert_same_events(direct, read_events(out), rtol=0, atol=0)
    capsys.readouterr()
    assert main(["info", str(real_file(name))]) == 0
    text = capsys.readouterr().out
    assert f"{len(direct)} events" in text.splitlines()[0]
    for kind in Kind:
        total = int(ak.sum(direct.particles.kind == int(kind)))
        row = next(line for line in text.splitlines() if line.startswith(kind.name.lower() + " "))
        assert int(row.split()[1]) == total
    # a reader option through the command line: no overlap removal keeps at least as many jets
    assert main(["info", str(real_file(name)), "--overlap-dr", "0"]) == 0
    loose = capsys.readouterr().out
    jets = lambda t: int(next(r for r in t.splitlines() if r.startswith("jet ")).split()[1])  # noqa: E731
    assert jets(loose) >= jets(text)
    with pytest.raises(SystemExit) as exit_:  # one line on stderr and status 2, as argparse does
        main(["info", str(real_file(name)), "--btag-era", "1999"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().startswith("eventlm info: error: btag_era must be one of")


def test_v15_like_file_without_jet_id_is_an_error_unless_the_jet_id_is_switched_off(tmp_path, capsys):
    # NanoAOD v15 dropped Jet_jetId (the jet ID is recomputed from its JSON there): jets without an ID
    # would silently take in noise and fakes
    from eventlm.cli import main

    path = tmp_path / "no_jetid.root"
    _copy_without("ggH_M125_amcatnlo_v13.root", path, drop=(), drop_branches=("Jet_jetId",))
    with pytest.raises(EventFormatError, match="no Jet_jetId branch.*jet_id=None"):
        read_events(path, process="x")
    events = read_events(path, nanoaod=NanoAODOptions(jet_id=None, process="x"), step_size=30)
    without_id = _read("ggH_M125_amcatnlo_v13.root", NanoAODOptions(jet_id=None, process="x"))
    assert_same_events(events, without_id, rtol=0, atol=0)
    assert main(["convert", str(path), str(tmp_path / "out.parquet")]) == 2
    assert "no Jet_jetId branch" in capsys.readouterr().err
    assert main(["convert", str(path), str(tmp_path / "out.parquet"), "--jet-id", "none", "--process", "x"]) == 0
    assert_same_events(read_events(tmp_path / "out.parquet"), without_id, rtol=0, atol=0)


def test_from_nanoevents_warns_once_over_chunks(caplog):
    events = _nanoevents("nano_dimuon.root", "eager")
    options = NanoAODOptions(btag_branch="Jet_btagNotInThisFile", btag_wp=0.5)
    caplog.set_level(logging.INFO, logger="eventlm.io")
    first = from_nanoevents(events[:20], options)
    second = from_nanoevents(events[20:], options)
    warned = [r for r in caplog.records if "Jet_btagNotInThisFile" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert sum("met from MET_pt" in r.getMessage() for r in caplog.records) == 1
    assert len(first) + len(second) == len(events)
    assert ak.sum(first.particles.kind == int(Kind.BJET)) + ak.sum(second.particles.kind == int(Kind.BJET)) == 0


@pytest.mark.parametrize("name", ["nano_dy_rntuple.root", "ggH_M125_amcatnlo_v13.root"])
def test_streamed_chunks_equal_one_read(name):
    from eventlm.io import iter_events

    chunks = list(iter_events(real_file(name), step_size=7))
    assert all(len(c) <= 7 for c in chunks) and len(chunks) > 1
    assert_same_events(ak.concatenate(chunks), _read(name), rtol=0, atol=0)


def test_btag_only_inside_the_tracker_regression_forward_jets_were_b_tagged():
    """Jets of 2.5 < |eta| < 2.8 (no tracks) were b-tagged by their DeepJet score; 2016 tracking
    reaches 2.4."""
    name = "nano_dy.root"
    j, _, _ = _raw(name, ("Jet_pt", "Jet_eta", "Jet_btagDeepFlavB"))
    forward_tagged = (abs(j.Jet_eta) >= 2.5) & (abs(j.Jet_eta) < 2.8) & (j.Jet_pt > 20) & (j.Jet_btagDeepFlavB > 0.3040)
    assert ak.sum(forward_tagged) > 0  # the file has the case
    for era, limit in (("2017", 2.5), ("2018", 2.5), ("2016postVFP", 2.4)):
        events = read_events(real_file(name), nanoaod=NanoAODOptions.kinematic_only(btag_era=era))
        b = events.particles[events.particles.kind == int(Kind.BJET)]
        assert ak.sum(ak.num(b.eta)) > 0 and ak.all(abs(b.eta) < limit), era
