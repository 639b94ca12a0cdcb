"""The coffea processor on tiny ntuples: the iterative, futures and dask executors give the same
histograms; it pickles; it reads an existing anomaly_score or computes it with a model."""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest
from coffea import processor

from eventlm.analysis import AnomalyProcessor, EventlmNanoAODSchema, Region
from eventlm.analysis.processor import columns_of, process_names_of, to_event_model
from eventlm.analysis.runner import coffea_runner
from eventlm.io import write_events

REGIONS = (Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6 and n_bjets >= 1"))


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory):
    from conftest import random_events

    out = tmp_path_factory.mktemp("ntuples")
    rng = np.random.default_rng(0)
    bkg = ak.concatenate([random_events(700, seed=1, process="ttbar"),
                          random_events(300, seed=2, process="w_jets", start_id=5000)])
    sig = random_events(400, seed=3, process="tttt_H500", start_id=9000, max_particles=16)
    paths = {}
    for name, events, mu in (("background", bkg, 3.0), ("tttt_H500", sig, 4.0)):
        score = rng.normal(mu, 1.0, len(events)).astype(np.float32)
        paths[name] = write_events(events, out / f"{name}.root", extra_columns={"anomaly_score": score})
    return {"paths": paths, "events": {"background": bkg, "tttt_H500": sig}}


def _run(executor, ntuples, proc, workers=2):
    fileset = {name: [str(p)] for name, p in ntuples["paths"].items()}
    with coffea_runner(executor, workers=workers, chunksize=250, progress=False) as runner:
        return runner(fileset, proc, treename="Events")


def _processor(**kw):
    return AnomalyProcessor(REGIONS, score_bins=20, score_range=(0, 8), variables=("n_jets", "ht", "met"), **kw)


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for ds in a:
        for name in ("score", "n_jets", "ht", "met"):
            ha, hb = a[ds][name], b[ds][name]
            assert sorted(ha.axes["process"]) == sorted(hb.axes["process"])
            for p in ha.axes["process"]:  # category order depends on which chunk finished first
                np.testing.assert_allclose(ha[{"process": p}].values(flow=True), hb[{"process": p}].values(flow=True))
                np.testing.assert_allclose(ha[{"process": p}].variances(flow=True),
                                           hb[{"process": p}].variances(flow=True))
        ca, cb = columns_of(a, ds), columns_of(b, ds)
        for k in ca:
            np.testing.assert_array_equal(ca[k], cb[k])


@pytest.fixture(scope="module")
def iterative_output(ntuples):
    return _run("iterative", ntuples, _processor())


def test_histograms_hold_every_event_with_its_weight(ntuples, iterative_output):
    bkg = ntuples["events"]["background"]
    h = iterative_output["background"]["score"]
    assert set(h.axes["process"]) == {"ttbar", "w_jets"}
    total = sum(h[{"process": p, "region": "all"}].sum(flow=True).value for p in h.axes["process"])
    assert total == pytest.approx(float(ak.sum(bkg.weight)))
    assert iterative_output["background"]["n_events"].value == len(bkg)
    cols = columns_of(iterative_output, "background")
    np.testing.assert_array_equal(cols["event"], np.sort(ak.to_numpy(bkg.event_id)))
    n_jets = cols["n_jets"]
    np.testing.assert_array_equal(cols["in_CR"], (n_jets >= 4) & (n_jets <= 5))
    sr = h[{"region": "SR"}]
    assert sum(sr[{"process": p}].sum(flow=True).value for p in h.axes["process"]) == pytest.approx(
        cols["weight"][cols["in_SR"]].sum())
    assert set(process_names_of(iterative_output, "tttt_H500").values()) == {"tttt_H500"}


@pytest.mark.slow
def test_futures_executor_gives_the_same_histograms(ntuples, iterative_output):
    _assert_same(iterative_output, _run("futures", ntuples, _processor()))


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_histograms(ntuples, iterative_output):
    _assert_same(iterative_output, _run("dask", ntuples, _processor()))


def test_processor_pickles_small_and_without_a_model(tmp_path):
    proc = _processor(model=tmp_path / "no-model-loaded-yet")
    blob = pickle.dumps(proc)
    assert len(blob) < 5000
    assert pickle.loads(blob).model == proc.model


def test_missing_scores_and_model_is_an_error(tmp_path):
    from conftest import random_events

    path = write_events(random_events(50), tmp_path / "plain.root")
    with pytest.raises(Exception, match="no anomaly_score branch"):
        _run("iterative", {"paths": {"background": path}}, _processor())


@pytest.mark.slow
def test_processor_scores_with_a_model_loaded_once(tmp_path):
    from conftest import random_events

    from eventlm.analysis import processor as processor_module
    from eventlm.config import RunConfig
    from eventlm.score import Scorer
    from eventlm.train import train

    events = random_events(600, seed=4)
    config = RunConfig().replace(train={"epochs": 1, "batch_size": 64},
                                 model={"n_layer": 1, "n_embd": 16, "n_head": 2})
    model_dir = tmp_path / "model"
    train(config, events, model_dir, progress=False)
    path = write_events(events[:300], tmp_path / "plain.root")
    processor_module._SCORERS.clear()
    out = _run("iterative", {"paths": {"background": path}}, _processor(model=model_dir))
    assert len(processor_module._SCORERS) == 1  # loaded once for the 2 chunks
    expected = Scorer.load(model_dir).score(events[:300])["anomaly_score"]
    np.testing.assert_allclose(columns_of(out, "background")["anomaly_score"], expected, rtol=1e-5)


def test_chunk_converts_to_the_event_model(ntuples):
    from coffea.nanoevents import NanoEventsFactory

    path = str(ntuples["paths"]["background"])
    chunk = NanoEventsFactory.from_root({path: "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager").events()
    events = to_event_model(chunk)
    original = ntuples["events"]["background"]
    np.testing.assert_array_equal(ak.to_numpy(events.event_id), ak.to_numpy(original.event_id))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(events.particles.pt)),
                               ak.to_numpy(ak.flatten(original.particles.pt)), rtol=1e-6)
    assert "processor" in processor.__name__
