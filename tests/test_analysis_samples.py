"""Samples of a study and their normalisation: sigma * k * L * w / sum_w from the experiment's own
bookkeeping (NanoAOD ``Runs``, PHYSLITE ``CutBookkeepers``), data at weight 1, the older
``[inputs]`` configs at ``lumi / weights_lumi``: one luminosity everywhere."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import real_file
from eventlm.analysis.config import AnalysisConfigError, load_analysis_config

REGIONS = """
[regions.CR]
selection = "n_jets <= 1"
[regions.SR]
selection = "n_jets >= 2"
[threshold]
method = "background_efficiency"
[baselines]
names = []
"""


def write_config(folder, samples: str, study: str = 'lumi = 41.5') -> object:
    path = folder / "study.toml"
    path.write_text(f"[study]\nname = \"real\"\n{study}\n\n{samples}\n{REGIONS}")
    return load_analysis_config(path)


def samples_text(dy, ggh, data) -> str:
    return f"""
[samples.dy]
files = ["{dy}"]
process = "Drell-Yan"
cross_section = 6077.22   # pb (NNLO)
[samples.higgs]
files = ["{ggh}"]
role = "signal"
process = "ggH"
cross_section = 48.58
k_factor = 1.1
[samples.egamma]
files = ["{data}"]
role = "data"
"""


def test_mc_weights_are_sigma_k_lumi_w_over_the_bookkeeping_sum_and_data_weighs_one(tmp_path):
    from eventlm.analysis.inputs import DATA, prepare_inputs

    dy, ggh, data = (real_file(n) for n in ("DYJetsToLL--UL17_v6-v2_109_Skim.root", "ggH_M125_amcatnlo_v13.root",
                                            "EGamma_2022E_v13.root"))
    config = write_config(tmp_path, samples_text(dy, ggh, data))
    assert config.signals == ["ggH"] and config.has_data
    prepared = prepare_inputs(config, tmp_path / "out", None, need_train=False)
    assert set(prepared.events) == {"background", "ggH", DATA}
    for dataset, path, sigma_k in (("background", dy, 6077.22), ("ggH", ggh, 48.58 * 1.1)):
        with uproot.open(path) as f:  # the hand computation: sigma * k * L * w / sum_w
            sum_w = float(np.sum(f["Runs"]["genEventSumw"].array(library="np"), dtype=np.float64))
            gen = f["Events"].arrays(["event", "genWeight"], library="np")
        order = np.argsort(gen["event"])
        expected = sigma_k * 41.5 * 1000.0 * gen["genWeight"][order].astype(np.float64) / sum_w
        events = prepared.events[dataset]
        assert np.array_equal(ak.to_numpy(events.event_id), gen["event"][order])
        np.testing.assert_allclose(ak.to_numpy(events.weight), expected, rtol=1e-12)
        assert (expected < 0).any()  # NLO samples: negative weights stay negative
    assert set(ak.to_list(prepared.events["background"].process)) == {"Drell-Yan"}
    assert set(ak.to_list(prepared.events["ggH"].process)) == {"ggH"}  # the signal is labelled as the signal
    assert np.all(ak.to_numpy(prepared.events[DATA].weight) == 1.0)
    norms = {n.sample: n for n in prepared.normalisation}
    assert "Runs" in norms["dy"].sum_weights_source and norms["egamma"].role == "data"
    assert any("σ = 48.58 pb × k = 1.1" in note for note in prepared.notes)


def test_without_a_bookkeeping_record_the_sum_is_over_the_events_read_and_said(tmp_path):
    from eventlm.analysis.inputs import prepare_inputs

    ttbar = real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")  # no Runs tree
    config = write_config(tmp_path, f"""
[samples.ttbar]
files = ["{ttbar}"]
cross_section = 831.76
[samples.sig]
files = ["{real_file('GJet_v11_Skim.root')}"]
role = "signal"
cross_section = 1.0
sum_weights = 1000.0
""")
    prepared = prepare_inputs(config, tmp_path / "out", None, need_train=False)
    w = ak.to_numpy(prepared.events["background"].weight)
    assert w.sum() == pytest.approx(831.76 * 41.5 * 1000.0, rel=1e-9)  # sum over every event read
    norms = {n.sample: n for n in prepared.normalisation}
    assert "events read" in norms["ttbar"].sum_weights_source
    assert norms["sig"].sum_weights == 1000.0 and "config" in norms["sig"].sum_weights_source
    np.testing.assert_allclose(ak.to_numpy(prepared.events["sig"].weight), 1.0 * 41.5 * 1000.0 / 1000.0)


def test_older_inputs_configs_keep_stored_weights_at_lumi_over_weights_lumi(tmp_path):
    from conftest import scored_study, study_toml

    from eventlm.analysis.inputs import prepare_inputs

    toy = scored_study(tmp_path, n_ttbar=50, n_wjets=20, n_signal=30)
    path = tmp_path / "toy.toml"
    path.write_text(study_toml(background="background.root", signal="tttt_H500.root", signal_name="tttt_H500",
                               study="lumi = 139.0\nweights_lumi = 10.0"))
    config = load_analysis_config(path)
    prepared = prepare_inputs(config, tmp_path / "out", None, need_train=False)
    bkg = prepared.events["background"]
    stored = toy["events"]["background"]
    order = np.argsort(ak.to_numpy(stored.event_id))
    np.testing.assert_allclose(ak.to_numpy(bkg.weight), ak.to_numpy(stored.weight)[order] * 13.9, rtol=1e-6)
    assert set(ak.to_list(bkg.process)) == {"ttbar", "w_jets"}  # the stored labels are kept


@pytest.mark.parametrize("samples, needle", [
    ('[samples.a]\nfiles = ["x.root"]\nrole = "sideband"', "role = 'sideband'"),
    ('[samples.a]\nfiles = ["x.root"]\ncross_section = -1', "cross_section = -1"),
    ('[samples.a]\nfiles = ["x.root"]\nxsec = 1', "unknown keys ['xsec']"),
    ('[samples.a]\nrole = "data"', "files is missing"),
    ('[samples.a]\nfiles = ["x.root"]\nrole = "data"\ncross_section = 1', "data sample has no cross_section"),
    ('[samples.a]\nfiles = ["x.root"]\nprocess = "p"\n[samples.b]\nfiles = ["y.root"]\nrole = "signal"\nprocess = "p"',
     "process 'p' is both background and signal"),
    ('[samples.a]\nfiles = ["x.root"]\n[inputs]\nbackground = ["y.root"]', "not both"),
])
def test_bad_sample_tables_are_one_line_errors_naming_the_key(tmp_path, samples, needle):
    with pytest.raises(AnalysisConfigError, match="study.toml") as err:
        write_config(tmp_path, samples)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_lumi_mask_and_filter_bits_select_data_and_events(tmp_path):
    """A golden JSON (written here) keeps the certified luminosity blocks of the data; HLT_*/Flag_*
    bits work in the preselection and in the regions."""
    import json

    from eventlm.analysis.inputs import DATA, prepare_inputs

    golden = tmp_path / "golden.json"
    golden.write_text(json.dumps({"315267": [[1, 204]], "359571": [[100, 200]]}))  # 315267/205 is out
    dy, ggh = real_file("DYJetsToLL--UL17_v6-v2_109_Skim.root"), real_file("ggH_M125_amcatnlo_v13.root")
    config = write_config(tmp_path, f"""
[samples.dy]
files = ["{dy}"]
cross_section = 6077.22
[samples.higgs]
files = ["{ggh}"]
role = "signal"
cross_section = 0.11856
[samples.data]
files = ["{real_file('EGamma_2022E_v13.root')}", "{real_file('nano_dimuon.root')}"]
role = "data"
[inputs]
preselection = "Flag_goodVertices and not HLT_IsoMu24"
""", study=f'lumi = 41.5\nlumi_mask = "{golden}"')
    config = config.with_overrides(regions=(config.regions[0], replace_selection(config.regions[1], "HLT_Ele32_WPTight_Gsf")))
    assert set(config.flags) == {"Flag_goodVertices", "HLT_IsoMu24", "HLT_Ele32_WPTight_Gsf"}
    prepared = prepare_inputs(config, tmp_path / "out", None, need_train=False)
    data = prepared.events[DATA]
    assert len(data) == 100 and set(ak.to_numpy(data.run)) == {359571}  # run 315267, lumi 205: not certified
    assert any("keeps 100 of 140 events" in n for n in prepared.notes)
    with uproot.open(dy) as f:
        bits = f["Events"].arrays(["Flag_goodVertices", "HLT_IsoMu24"], library="np")
    expected = int(np.count_nonzero(bits["Flag_goodVertices"] & ~bits["HLT_IsoMu24"]))
    assert len(prepared.events["background"]) == expected < 100  # the preselection, by hand


def replace_selection(region, flag):
    from dataclasses import replace

    return replace(region, selection=f"{region.selection} and {flag}")


def test_a_broken_golden_json_is_a_one_line_error(tmp_path):
    from eventlm.analysis.lumimask import load_lumi_mask
    from eventlm.errors import EventFormatError

    bad = tmp_path / "golden.json"
    bad.write_text('{"315267": [[1, "x"]]}')
    with pytest.raises(EventFormatError, match="golden.json.*expected") as err:
        load_lumi_mask(bad)
    assert "\n" not in str(err.value)


def test_several_samples_of_one_process_each_with_its_own_sum_of_weights(tmp_path):
    """Two slices of one process (here two DY productions standing for two slices): one label, one
    stack entry, each slice normalised with its own sigma and its own Runs record (genEventSumw_ in v6)."""
    from eventlm.analysis.inputs import prepare_inputs

    a, b = real_file("DYJetsToLL--UL17_v6-v2_109_Skim.root"), real_file("nano_dy.root")
    config = write_config(tmp_path, f"""
[samples.dy_a]
files = ["{a}"]
process = "Drell-Yan"
cross_section = 100.0
[samples.dy_b]
files = ["{b}"]
process = "Drell-Yan"
cross_section = 200.0
[samples.sig]
files = ["{real_file('ggH_M125_amcatnlo_v13.root')}"]
role = "signal"
cross_section = 1.0
""")
    prepared = prepare_inputs(config, tmp_path / "out", None, need_train=False)
    bkg = prepared.events["background"]
    assert set(ak.to_list(bkg.process)) == {"Drell-Yan"} and len(bkg) == 140
    total = 0.0
    for path, sigma, branch in ((a, 100.0, "genEventSumw"), (b, 200.0, "genEventSumw_")):
        with uproot.open(path) as f:
            total += sigma * 41.5e3 * float(f["Events"]["genWeight"].array(library="np").astype(np.float64).sum()) \
                / float(f["Runs"][branch].array(library="np").sum())
    assert float(np.sum(ak.to_numpy(bkg.weight))) == pytest.approx(total, rel=1e-12)
