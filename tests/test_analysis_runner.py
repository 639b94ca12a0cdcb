"""``eventlm analyze`` end to end on tiny scored ntuples: every output is written and consistent."""

from __future__ import annotations

import json
import pickle

import awkward as ak
import numpy as np
import pytest
import uproot

from eventlm.cli import main
from eventlm.errors import EventFormatError
from eventlm.io import read_events, write_events

def config_text(method: str) -> str:
    from conftest import study_toml

    return study_toml(background="background.root", signal="tttt_H500.root", signal_name="tttt_H500",
                      sr="min = { n_jets = 4 }", method=method, threshold="signal_injection = 0.02",
                      baselines='"isolation_forest", "deep_svdd", "combined"',
                      study="lumi = 139.0\nweights_lumi = 10.0",
                      more='epochs = 1\n\n[histograms]\nvariables = ["n_jets", "met"]\n')


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from conftest import scored_study

    d = tmp_path_factory.mktemp("study")
    scored_study(d, n_ttbar=600, n_wjets=200, n_signal=300)
    return d


@pytest.mark.slow
def test_analyze_writes_every_output(study, capsys):
    config = study / "toy.toml"
    config.write_text(config_text("youden"))
    out = study / "out"
    assert main(["analyze", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "ROC-AUC" in printed and "Z_A" in printed
    for name in ("hists.pkl", "hists.root", "metrics.json", "results.md", "scored/background",
                 "scored/tttt_H500", "score_CR_tttt_H500.png", "score_SR_tttt_H500.png",
                 "roc_tttt_H500.png", "sic_tttt_H500.png", "n_jets_SR.png", "met_CR.png"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["metrics"]["tttt_H500"]
    assert set(m) == {"eventlm", "isolation_forest", "deep_svdd", "combined", "object count alone", "HT alone"}
    assert 0.6 < m["eventlm"]["values"]["auc"] < 0.9  # the toy scores are shifted by one sigma
    # beside every score its length-matched AUC (n/a here: too few toy events per object count,
    # see test_references_and_length_matched_auc_beside_every_score), the object count and HT alone
    assert all("length_matched_auc" in v["values"] for v in m.values())
    results = (out / "results.md").read_text()
    assert "length-matched AUC" in results and "*object count alone*" in results and "*HT alone*" in results
    sr = metrics["yields"]["tttt_H500"]["SR"]
    assert sr["b"] <= sr["b_total"] and sr["z_asimov"] is not None
    with open(out / "hists.pkl", "rb") as f:
        hists = pickle.load(f)
    assert set(hists) == {"background", "tttt_H500"} and "score" in hists["background"]
    with uproot.open(out / "hists.root") as f:
        h = f["background/score/ttbar/SR"]
        assert h.values().sum() > 0
    # the skims the workers wrote: every analysed event once, with its score and region flags
    scored = read_events(sorted((out / "scored" / "background").glob("*.root")))
    assert len(scored) == 800 and {"anomaly_score", "region_CR", "region_SR"} <= set(scored.fields)
    assert len(np.unique(ak.to_numpy(scored.event_id))) == 800
    # a second run into the same directory replaces the skims, it does not add to them
    assert main(["analyze", str(config), "--out", str(out), "--no-progress", "--no-baselines"]) == 0
    assert len(read_events(sorted((out / "scored" / "background").glob("*.root")))) == 800


def test_references_and_length_matched_auc_beside_every_score(tmp_path):
    """A score that only counts objects gets a length-matched AUC of 0.5 however well it separates
    pooled; one that sees something else keeps its AUC inside the classes."""
    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.runner import analyse_columns

    path = tmp_path / "toy.toml"
    path.write_text(config_text("background_efficiency"))
    config = load_analysis_config(path).with_overrides(baselines={"names": ()})
    rng = np.random.default_rng(4)
    n_b, n_s = rng.integers(4, 9, 20_000), rng.integers(6, 11, 5_000)  # the signal has more objects
    ht_b, ht_s = rng.normal(500, 100, len(n_b)), rng.normal(600, 100, len(n_s))
    columns, references = {}, {}
    for name, n, ht, shift in (("background", n_b, ht_b, 0.0), ("tttt_H500", n_s, ht_s, 1.0)):
        counting = n + rng.normal(0, 0.1, len(n))  # sees the object count only
        columns[name] = {"event": np.arange(len(n)), "weight": np.ones(len(n)), "anomaly_score": counting,
                         "anomaly_score_calibrated": rng.normal(shift, 1.0, len(n)),  # sees something else
                         "in_CR": n <= 5, "in_SR": n >= 6}
        references[name] = {"object count": n.astype(float), "HT": ht}
    _, _, metrics, _ = analyse_columns(config, columns, None, references)
    m = metrics["tttt_H500"]
    assert {"eventlm", "eventlm, calibrated", "object count alone", "HT alone"} <= set(m)
    assert m["eventlm"].values["auc"] > 0.75 and abs(m["eventlm"].values["length_matched_auc"] - 0.5) < 0.03
    assert m["object count alone"].values["length_matched_auc"] == pytest.approx(0.5)
    calibrated = m["eventlm, calibrated"].values
    assert calibrated["length_matched_auc"] == pytest.approx(calibrated["auc"], abs=0.03) and calibrated["auc"] > 0.7
    assert m["HT alone"].values["auc"] == pytest.approx(0.76, abs=0.02)  # two unit-width normals 1 sigma apart
    assert m["eventlm"].errors["length_matched_auc"] > 0


def test_luminosity_scales_yields_and_threshold_methods(study, tmp_path):
    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.execution import run_processor
    from eventlm.analysis.inputs import prepare_inputs, skim_columns
    from eventlm.analysis.runner import analyse_columns

    config_path = study / "bkgeff.toml"
    config_path.write_text(config_text("background_efficiency"))
    config = load_analysis_config(config_path).with_overrides(baselines={"names": ()})
    prepared = prepare_inputs(config, tmp_path, None)
    output = run_processor(config, prepared.ntuples, None, progress=False, skim_dir=tmp_path / "skims")
    columns = {ds: skim_columns(prepared, output, ds) for ds in prepared.ntuples}
    thr, yields, metrics, _ = analyse_columns(config, columns)
    assert thr["tttt_H500"].eff_b <= 0.05
    # the luminosity enters once, when the samples are normalised: the histograms carry it too
    assert output["background"]["n_jets"][{"region": "SR"}].sum(flow=True).value == pytest.approx(
        yields["tttt_H500"]["SR"].b_total)
    bigger = config.with_overrides(study={"lumi": 4 * 139.0})
    prepared4 = prepare_inputs(bigger, tmp_path / "4", None)
    output4 = run_processor(bigger, prepared4.ntuples, None, progress=False, skim_dir=tmp_path / "4" / "skims")
    _, yields4, _, _ = analyse_columns(bigger, {ds: skim_columns(prepared4, output4, ds) for ds in prepared4.ntuples})
    sr, sr4 = yields["tttt_H500"]["SR"], yields4["tttt_H500"]["SR"]
    assert sr4.b == pytest.approx(4 * sr.b) and sr4.s_over_sqrt_b == pytest.approx(2 * sr.s_over_sqrt_b)
    # the CR signal is injected at 2 % of the CR background yield
    cr = yields["tttt_H500"]["CR"]
    assert cr.s_total == pytest.approx(0.02 * cr.b_total)


def test_threshold_and_score_histograms_follow_the_configured_score(tmp_path):
    """[threshold] score picks the column the CR threshold cuts on and the score histograms show."""
    from conftest import random_events

    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.execution import run_processor
    from eventlm.analysis.inputs import prepare_inputs, skim_columns
    from eventlm.analysis.runner import analyse_columns

    rng = np.random.default_rng(4)
    bkg = random_events(400, seed=5, process="ttbar")
    sig = random_events(200, seed=6, process="tttt_H500", start_id=9000)
    # the mean does not separate; the summed score (offset by 100 to tell them apart) does
    for events, path, shift in ((bkg, "background.root", 0.0), (sig, "tttt_H500.root", 3.0)):
        mean = rng.normal(3, 1, len(events)).astype(np.float32)
        total = (100 + rng.normal(10 + shift, 1, len(events))).astype(np.float32)
        write_events(events, tmp_path / path, extra_columns={"anomaly_score": mean, "anomaly_score_sum": total})
    config_path = tmp_path / "sum.toml"
    config_path.write_text(config_text("youden").replace(
        "[threshold]\n", '[threshold]\nscore = "anomaly_score_sum"\n'))
    config = load_analysis_config(config_path).with_overrides(
        baselines={"names": ()}, histograms={"score_range": [100.0, 120.0]})
    prepared = prepare_inputs(config, tmp_path / "work", None)
    output = run_processor(config, prepared.ntuples, None, progress=False, skim_dir=tmp_path / "skims")
    columns = {ds: skim_columns(prepared, output, ds) for ds in prepared.ntuples}
    thr, _, _, _ = analyse_columns(config, columns)
    assert 105.0 < thr["tttt_H500"].value < 115.0  # chosen on the summed column
    h = output["background"]["score"]
    assert h.values(flow=False).sum() == pytest.approx(h.values(flow=True).sum())  # all inside [100, 120]

    path = write_events(bkg, tmp_path / "background.root",
                        extra_columns={"anomaly_score": np.zeros(len(bkg), np.float32)})
    with pytest.raises(EventFormatError) as info:
        run_processor(config, {"background": path}, None, progress=False)
    assert str(info.value) == (f"{path}: no anomaly_score_sum branch (has ['anomaly_score']); rescore the file "
                               "or choose another [threshold] score")


def test_thresholds_and_rocs_from_skims_equal_those_from_memory(study, tmp_path):
    """The skims the workers write give exactly the analysis the per-event columns gave."""
    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.skims import columns_of
    from eventlm.analysis.execution import run_processor
    from eventlm.analysis.inputs import prepare_inputs, skim_columns
    from eventlm.analysis.runner import analyse_columns

    config_path = study / "skims.toml"
    config_path.write_text(config_text("youden"))
    config = load_analysis_config(config_path).with_overrides(baselines={"names": ()}, run={"chunksize": 150})
    prepared = prepare_inputs(config, tmp_path, None)
    output = run_processor(config, prepared.ntuples, None, progress=False, skim_dir=tmp_path / "skims",
                           keep_columns=True)
    in_memory = analyse_columns(config, {ds: columns_of(output, ds) for ds in prepared.ntuples})
    from_skims = analyse_columns(config, {ds: skim_columns(prepared, output, ds) for ds in prepared.ntuples})
    (thr_a, yields_a, metrics_a, rocs_a), (thr_b, yields_b, metrics_b, rocs_b) = in_memory, from_skims
    assert thr_a == thr_b
    def text(tables):  # JSON text: NaN ("n/a" figures) compares equal to itself there
        return json.dumps({s: {k: v.to_dict() for k, v in t.items()} for s, t in tables.items()}, sort_keys=True)

    assert text(yields_a) == text(yields_b) and text(metrics_a) == text(metrics_b)
    for signal, curves in rocs_a.items():
        for method, roc in curves.items():
            other = rocs_b[signal][method]
            for a, b in zip(roc if isinstance(roc, tuple) else vars(roc).values(),
                            other if isinstance(other, tuple) else vars(other).values()):
                np.testing.assert_array_equal(a, b)
    skims = output["background"]["skims"]
    assert len(skims) == 5 and sum(skims.values()) == 800  # coffea splits 800 events into 5 chunks of 160


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_no_progress_silences_coffea_bars(tmp_path, capfd, executor):
    """coffea draws its rich bars even with status=False; progress=False must leave the output clean."""
    from coffea import processor
    from conftest import random_events

    from eventlm.analysis.execution import coffea_runner

    class CountEvents(processor.ProcessorABC):
        def process(self, events):
            return {"n": len(events)}

        def postprocess(self, accumulator):
            return accumulator

    path = write_events(random_events(300, seed=2), tmp_path / "small.root")
    fileset = {"small": {"files": {str(path): "Events"}}}
    for progress in (True, False):
        with coffea_runner(executor, workers=1, chunksize=100, progress=progress) as runner:
            assert runner(fileset, processor_instance=CountEvents(), treename="Events")["n"] == 300
        out = capfd.readouterr()
        drawn = "Processing" in out.out + out.err
        assert drawn == progress, (progress, out)


def test_combined_baseline_is_calibrated_on_the_held_out_background_the_inputs_provide(study, tmp_path):
    """With a model split, `eventlm analyze` hands the baselines the model's validation rows: "combined"
    calibrates its tails there, on events none of its parts was fitted on."""
    from dataclasses import replace

    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.features import fixed_features
    from eventlm.analysis.inputs import prepare_inputs
    from eventlm.analysis.runner import baseline_scores_for

    config_path = study / "combined.toml"
    config_path.write_text(config_text("background_efficiency"))
    config = load_analysis_config(config_path).with_overrides(baselines={"names": ("combined",)})
    prepared = prepare_inputs(config, tmp_path, None)  # no model: a seeded half as the training rows
    background = prepared.events["background"]
    train = prepared.train_background[:300]
    held_out = background[~np.isin(ak.to_numpy(background.event_id), ak.to_numpy(train.event_id))][:150]
    prepared = replace(prepared, train_background=train, calibration_background=held_out)
    columns = {ds: {"event": ak.to_numpy(ev.event_id)} for ds, ev in prepared.events.items()}
    scores, fitted = baseline_scores_for(config, prepared, columns)
    combined = fitted["combined"]
    assert set(scores) == {"combined"} and combined.n_calibration == 150
    for name, part in combined.parts.items():
        np.testing.assert_array_equal(combined.tails[name].sorted, np.sort(part.score(fixed_features(held_out))))
    assert np.all(np.isfinite(scores["combined"]["tttt_H500"]))
