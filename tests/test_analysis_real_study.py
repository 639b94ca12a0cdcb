"""The real study of the repository (analysis/cms_nanoaod.toml: CMS NanoAOD MC with cross sections and
negative weights, plus collision data) through ``eventlm analyze``: every yield equals the hand
computation sigma * L * sum(w selected) / sum(w generated), the written histograms carry the same
yields at the study luminosity, every efficiency is in [0, 1] and every AUC in [0, 1] or says why not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import uproot

from conftest import ROOT_DIR
from eventlm.cli import main
from eventlm.config import RunConfig
from eventlm.progress import quiet

STUDY = ROOT_DIR / "analysis" / "cms_nanoaod.toml"
TINY = RunConfig(seed=3).replace(
    tokenizer={"kind": "lut", "params": {}},
    model={"n_embd": 16, "n_head": 2, "n_layer": 1},
    train={"objective": "causal", "epochs": 1, "batch_size": 64, "warmup_steps": 2, "max_events": 1500},
)
#: The samples of the study, written out here (not read from the config): file, sigma [pb], role.
MC = {"Drell-Yan": ("DYJetsToLL--UL17_v6-v2_109_Skim.root", 6077.22),
      "ttbar": ("nanoAOD_2015_CMS_Open_Data_ttbar.root", 831.76),
      "ggH_gg": ("ggH_M125_amcatnlo_v13.root", 0.11856)}
LUMI = 59.8  # fb^-1


@pytest.fixture(scope="module")
def study(tmp_path_factory, background_events):
    from conftest import trained_model

    model = trained_model(tmp_path_factory, TINY, background_events[:1500], "real_study_model")
    out = tmp_path_factory.mktemp("cms_nanoaod")
    with quiet("eventlm"):  # the readers' notes on the slimmed files; restored for the tests after it
        assert main(["analyze", str(STUDY), "--model", str(model), "--out", str(out), "--no-progress"]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def hand_yield(process: str, region: str) -> float:
    """sigma * L * sum(w in region) / sum_w, with sum_w from the Runs tree (or, without one, the events
    of the file), by uproot; the region is the study's n_jets cut on eventlm's selected jets."""
    from eventlm.analysis.features import variables_of
    from eventlm.io import read_events

    name, sigma = MC[process]
    path = ROOT_DIR / "tests" / "data" / name
    with uproot.open(path) as f:
        w = f["Events"]["genWeight"].array(library="np").astype(np.float64)
        good = f["Events"]["Flag_goodVertices"].array(library="np")  # the preselection
        sum_w = float(f["Runs"]["genEventSumw"].array(library="np").sum()) if "Runs" in f else float(w.sum())
    n_jets = variables_of(read_events(path))["n_jets"]
    selected = good & {"all": np.ones(len(w), bool), "CR": n_jets <= 1, "SR": n_jets >= 2}[region]
    return sigma * 1000.0 * LUMI * float(w[selected].sum()) / sum_w


@pytest.mark.slow
def test_yields_equal_the_hand_computation_and_the_written_histograms(study):
    out, metrics = study
    assert metrics["lumi_fb"] == LUMI
    for region in ("CR", "SR"):
        y = metrics["yields"]["ggH_gg"][region]
        b = hand_yield("Drell-Yan", region) + hand_yield("ttbar", region)
        assert y["b_total"] == pytest.approx(b, rel=1e-6)
        assert y["s_total"] == pytest.approx(hand_yield("ggH_gg", region), rel=1e-6)
        assert y["data_total"] is not None and y["data_total"] > 0  # the data, counted, weight 1
        # hists.root: the same yields, at the study luminosity, per process
        with uproot.open(out / "hists.root") as f:
            for process in ("Drell-Yan", "ttbar"):
                h = f[f"background/n_jets/{process}/{region}"]
                assert h.values(flow=True).sum() == pytest.approx(hand_yield(process, region), rel=1e-6)
            signal = f[f"ggH_gg/n_jets/ggH_gg/{region}"]  # the signal under its config name
            assert signal.values(flow=True).sum() == pytest.approx(y["s_total"], rel=1e-6)
            data = sum(f[f"data/n_jets/data/{region}"].values(flow=True).sum() for _ in [0])
            assert data == y["data_total"]
    sources = {s["sample"]: s["sum_weights_source"] for s in metrics["samples"]}
    assert "Runs" in sources["dy"] and "events read" in sources["ttbar"] and sources["data"] == "data"


@pytest.mark.slow
def test_every_efficiency_in_range_and_every_auc_in_range_or_explained(study):
    out, metrics = study
    for per_method in metrics["metrics"].values():
        for method, m in per_method.items():
            for key, value in m["values"].items():
                if value is None:
                    assert m["undefined"].get(key), (method, key)
                elif key == "auc" or key == "length_matched_auc" or key.startswith("eff_s"):
                    assert 0.0 <= value <= 1.0, (method, key, value)
            assert "auc" in m["values"] and "length_matched_auc" in m["values"]
    for per_region in metrics["yields"].values():
        for region, y in per_region.items():
            for key in ("eff_s", "eff_b"):
                assert y[key] is None and y["undefined"][key] or 0.0 <= y[key] <= 1.0
    results = (out / "results.md").read_text()
    assert "n/a length_matched_auc" in results  # 100 events per sample: too few per object count, said
    assert "Σw = " in results and "from the 200 events read" in results
    assert "score histograms:" in results and "fitted to the scores" in results
    assert "preselection (Flag_goodVertices): data keeps 139 of 140 events" in results
    for name in ("score_CR_ggH_gg.png", "score_SR_ggH_gg.png", "n_jets_SR.png", "roc_ggH_gg.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert not math.isnan(metrics["thresholds"]["ggH_gg"]["value"])
