"""From an anomaly score to a physics result (issue 21): the transferable score and its closure, the ABCD
prediction, the pyhf workspace (validated, reproduced from the file by pyhf alone), Poisson injection
toys, the Combine datacard and shapes read back, and ``eventlm analyze`` with a [statistics] table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eventlm.analysis.abcd import Count, Counts, predict
from eventlm.analysis.regions import Region
from eventlm.analysis.transfer import TRANSFERABLE, closures, refit_transferable, region_variables



def toy_background(n=12000, seed=1):
    """Events whose score rises with the jet count (as -log p does) and with HT; a few negative weights."""
    rng = np.random.default_rng(seed)
    n_jets = rng.integers(4, 10, n)
    n_bjets = rng.integers(0, 4, n)
    ht = 300 + 120 * n_jets + rng.exponential(150, n)
    score = 2.0 * n_jets + 0.004 * ht + rng.gumbel(0, 1.5, n)
    weights = rng.uniform(0.5, 2.0, n) * np.where(rng.random(n) < 0.05, -0.3, 1.0)
    return {"n_jets": n_jets, "n_bjets": n_bjets, "ht": ht}, score, weights


@pytest.mark.parametrize("regions", [
    (Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6 and n_bjets >= 2")),
    (Region("CR", "ht < 1100"), Region("SR", "ht >= 1100")),
])
def test_transferable_score_closes_where_the_plain_score_does_not(regions):
    values, score, w = toy_background()
    in_cr, in_sr = regions[0].mask(values), regions[1].mask(values)
    fns = {"anomaly_score": score, TRANSFERABLE: refit_transferable(regions, values, score, w, seed=0, min_events=100)}
    by = {(c.score, c.target): c for c in closures(fns, w, in_cr, in_sr, n_bootstrap=20, seed=0)}
    for target in (0.1, 0.01):
        plain, transfer = by[("anomaly_score", target)], by[(TRANSFERABLE, target)]
        assert plain.ratio > 2.0 and abs(plain.pull) > 5  # the plain score's tail grows with the region variable
        assert abs(transfer.ratio - 1.0) < 3 * transfer.error, transfer  # closes within its statistics
        assert transfer.error < 0.6
    assert region_variables(regions) in (("n_jets", "n_bjets"), ("ht",))


def test_abcd_prediction_and_its_errors():
    sr = Counts("SR", Count(1000.0, 10.0, 100), Count(20.0, 2.0, 10))
    cr = Counts("CR", Count(4000.0, 40.0, 400), Count(100.0, 5.0, 50))
    p = predict(sr, cr, nonclosure=0.1)
    assert p.abcd == pytest.approx(1000 * 100 / 4000)
    assert p.abcd_stat == pytest.approx(25 * np.sqrt(0.01 ** 2 + 0.05 ** 2 + 0.01 ** 2))
    assert p.transfer == pytest.approx(100 * 20 / 100) and p.mc == 20.0
    assert p.closure == pytest.approx(25 / 20 - 1)
    assert p.abcd_error == pytest.approx(np.hypot(p.abcd_stat, 2.5))
    with pytest.raises(ValueError, match="positive yields"):
        predict(sr, Counts("CR", Count(0.0, 0.0, 0), Count(1.0, 1.0, 1)))


def _spec():
    from eventlm.analysis.stats import workspace_spec

    def c(region, below, above, rel_b, rel_a):
        return Counts(region, Count(below, below * rel_b, 100), Count(above, above * rel_a, 10))

    bkg = {"CR": c("CR", 2.0e5, 2.0e3, 0.02, 0.1), "SR": c("SR", 1.5e5, 1.5e3, 0.02, 0.1)}
    sig = {"sig": {"CR": c("CR", 5.0, 3.0, 0.1, 0.1), "SR": c("SR", 40.0, 200.0, 0.1, 0.05)}}
    observed = {r: [x.below.value, x.above.value] for r, x in bkg.items()}
    return workspace_spec(bkg, sig, observed, control_region="CR", signal_region="SR", nonclosure=0.05)


def assert_pyhf_reproduces(path, measurement: str, lim: dict) -> None:
    """pyhf alone, from the file: the workspace validates; pyhf's CLs on the scan of the file's POI range
    (16 points up to its bound) cross 0.05 where the reported limits are (log CLs interpolated between
    the two points around each crossing), and the q0 p-values are the reported ones."""
    import math

    import pyhf

    spec = json.loads(Path(path).read_text())
    pyhf.schema.validate(spec, "workspace.json")
    ws = pyhf.Workspace(spec)
    model = ws.model(measurement_name=measurement)
    data = ws.data(model)
    pyhf.set_backend("numpy", "scipy")
    bound = model.config.suggested_bounds()[model.config.poi_index][1]
    grid = np.linspace(bound / 16, bound, 16)
    curves = np.array([[float(obs)] + [float(e) for e in exp] for obs, exp in
                       (pyhf.infer.hypotest(float(mu), data, model, return_expected_set=True) for mu in grid)]).T
    reported = [lim["mu_limit_observed"]] + lim["mu_limit_band"]
    for cls, limit in zip(curves, reported):
        i = int(np.nonzero(np.nan_to_num(cls, nan=1.0) < 0.05)[0][0])
        y0, y1 = math.log(cls[i - 1]), math.log(cls[i])
        assert grid[i - 1] + (math.log(0.05) - y0) * (grid[i] - grid[i - 1]) / (y1 - y0) == pytest.approx(limit, rel=1e-6)
    p0_obs, p0_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected=True)
    assert float(p0_exp) == pytest.approx(lim["p0_expected"], rel=1e-3)
    assert float(p0_obs) == pytest.approx(lim["p0_observed"], rel=1e-3)


def test_workspace_validates_and_pyhf_alone_reproduces_its_limits(tmp_path):
    from eventlm.analysis.stats import infer_all, validate

    spec = _spec()
    validate(spec)
    results = infer_all(spec)["sig"]
    assert 0 < results["mu_limit_band"][0] < results["mu_limit_expected"] < results["mu_limit_band"][4]
    assert results["z_expected"] > 0.3 and abs(results["z_observed"]) < 1e-6  # pseudo-data = background
    path = tmp_path / "workspace.json"
    path.write_text(json.dumps(spec))
    assert_pyhf_reproduces(path, "sig", results)
    channels = {c["name"]: c for c in spec["channels"]}
    assert set(channels) == {"CR", "SR"}
    types = {m["type"] for s in channels["SR"]["samples"] for m in s["modifiers"]}
    assert types == {"shapefactor", "normfactor", "normsys"}


@pytest.mark.slow
def test_injected_signal_comes_back_unbiased_with_unit_pulls():
    """A lean version of analysis/injection.py (a few dozen toys; the full numbers: docs/statistics.md)."""
    from eventlm.analysis.stats import injection

    spec = _spec()
    for mu in (0.0, 1.0):
        r = injection(spec, "sig", mu, n_toys=30, seed=3)
        assert r["failed"] <= 2
        assert abs(r["mu_hat_mean"] - mu) < 3 * r["mu_hat_mean_error"] + 0.05, r
        assert abs(r["pull_mean"]) < 0.45 and 0.6 < r["pull_width"] < 1.4, r
        if mu == 0:
            assert r["ks_p_uniform"] > 0.01, r


def test_datacard_and_shapes_are_written_and_read_back(tmp_path):
    from eventlm.analysis.export_fit import read_datacard, read_shapes, write_datacards

    bkg = {"CR": Counts("CR", Count(2.0e5, 4e3, 100), Count(2.0e3, 200.0, 10)),
           "SR": Counts("SR", Count(1.5e5, 3e3, 100), Count(1.5e3, 150.0, 10))}
    sig = {"sig": {"CR": Counts("CR", Count(5.0, 0.5, 5), Count(3.0, 0.3, 3)),
                   "SR": Counts("SR", Count(40.0, 4.0, 40), Count(200.0, 10.0, 200))}}
    observed = {r: [x.below.value, x.above.value] for r, x in bkg.items()}
    files = write_datacards(tmp_path, bkg, sig, observed, control_region="CR", signal_region="SR", nonclosure=0.08)
    card = read_datacard(files["datacard_sig"])
    assert card["bins"] == ["CR", "SR"]
    assert card["observation"] == pytest.approx([sum(observed["CR"]), sum(observed["SR"])])
    rates = {(b, p): r for b, p, _, r in card["processes"]}
    assert rates[("SR", "background_above")] == pytest.approx(1.5e3)
    assert rates[("CR", "sig")] == pytest.approx(8.0)
    assert {i for _, p, i, _ in card["processes"] if p == "sig"} == {0}
    assert card["systematics"]["abcd_nonclosure"][0] == "shape"
    assert {(n, b) for n, b, _, _ in card["rate_params"]} >= {("f_below", "*"), ("tau_SR", "SR")}
    shapes = read_shapes(files["shapes"])
    values, variances = shapes["SR"]["background_above"]
    assert values.tolist() == pytest.approx([0.0, 1.5e3]) and variances[1] == pytest.approx(150.0 ** 2)
    up = shapes["SR"]["background_above_abcd_nonclosureUp"][0]
    assert up[1] == pytest.approx(1.5e3 * 1.08)
    assert shapes["CR"]["data_obs"][0].tolist() == pytest.approx(observed["CR"])
    bad = tmp_path / "bad.txt"
    bad.write_text("bin CR\nobservation 1\nbin CR CR\nprocess s b\nprocess 0 1\nrate 1\n")
    with pytest.raises(ValueError, match="different lengths"):
        read_datacard(bad)


@pytest.mark.slow
def test_analyze_with_statistics_writes_a_workspace_that_pyhf_reproduces(tmp_path, capsys):
    """``eventlm analyze`` with [statistics]: the transferable column, the closure table, the prediction
    against MC, the limit table; workspace.json reproduces metrics.json's limits with pyhf alone; the
    datacard of the same run is read back."""
    from conftest import scored_study, study_toml
    from eventlm.analysis.export_fit import read_datacard
    from eventlm.cli import main

    scored_study(tmp_path, n_ttbar=1500, n_wjets=500, n_signal=400)
    more = ('\n[regions.VR]\nselection = "n_jets == 4"\n\n[statistics]\nvalidation_region = "VR"\n'
            "background_efficiency = 0.1\nmin_cell_events = 50\n")
    (tmp_path / "toy.toml").write_text(study_toml(
        background="background.root", signal="tttt_H500.root", signal_name="tttt_H500",
        sr='selection = "n_jets >= 5"', study="lumi = 139.0\nweights_lumi = 10.0", more=more))
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "toy.toml"), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for text in ("Background estimate and limits", "ABCD prediction", "μ limit exp.", "Non-closure in the validation"):
        assert text in printed, text
    metrics = json.loads((out / "metrics.json").read_text())
    st = metrics["statistics"]
    assert "eventlm, transferable" in metrics["metrics"]["tttt_H500"]  # its detection cost beside the others
    lim = st["limits"]["tttt_H500"]
    assert_pyhf_reproduces(out / "workspace.json", "tttt_H500", lim)
    assert lim["xs_limit_expected"] == pytest.approx(lim["mu_limit_expected"] * lim["cross_section_fb"])
    card = read_datacard(out / "datacard_tttt_H500.txt")
    rates = {(b, p): r for b, p, _, r in card["processes"]}
    assert rates[("SR", "background_above")] == pytest.approx(st["counts"]["SR"]["above"]["value"], rel=1e-8)
    assert (out / "limits.png").stat().st_size > 5000 and (out / "shapes.root").exists()
