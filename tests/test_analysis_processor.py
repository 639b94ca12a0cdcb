"""The coffea processor on tiny ntuples: the iterative, futures and dask executors give the same
histograms and skims; it pickles; it reads an existing anomaly_score or computes it with a model; the
skims it writes from the workers hold every event once and read in ROOT, uproot and coffea."""

from __future__ import annotations

import pickle

import awkward as ak
import numpy as np
import pytest

from eventlm.analysis import AnomalyProcessor, EventlmNanoAODSchema, Region
from eventlm.analysis.processor import score_branch
from eventlm.analysis.skims import columns_of, process_names_of, read_skim_columns, skims_of
from eventlm.io.schema import to_event_model
from eventlm.analysis.execution import chunk_error, coffea_runner
from eventlm.errors import EventFormatError, EventlmError
from eventlm.io import read_events, write_events

REGIONS = (Region("CR", "4 <= n_jets <= 5"), Region("SR", "n_jets >= 6 and n_bjets >= 1"))


@pytest.fixture(scope="module")
def ntuples(tmp_path_factory):
    from conftest import scored_study

    return scored_study(tmp_path_factory.mktemp("ntuples"), n_ttbar=700, n_wjets=300, n_signal=400,
                        signal_max_particles=16)


def _run(executor, ntuples, proc, workers=2):
    fileset = {name: [str(p)] for name, p in ntuples["paths"].items()}
    with coffea_runner(executor, workers=workers, chunksize=250, progress=False) as runner:
        return runner(fileset, proc, treename="Events")


def _processor(**kw):
    kw.setdefault("keep_columns", True)
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
        sa, sb = read_skim_columns(skims_of(a, ds)), read_skim_columns(skims_of(b, ds))
        assert sorted(sa) == sorted(sb)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])
        assert [p.rsplit("/", 1)[1] for p in skims_of(a, ds)] == [p.rsplit("/", 1)[1] for p in skims_of(b, ds)]


@pytest.fixture(scope="module")
def iterative_output(ntuples, tmp_path_factory):
    return _run("iterative", ntuples, _processor(skim_dir=tmp_path_factory.mktemp("skims_iterative")))


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
def test_futures_executor_gives_the_same_histograms(ntuples, iterative_output, tmp_path):
    _assert_same(iterative_output, _run("futures", ntuples, _processor(skim_dir=tmp_path)))


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_histograms(ntuples, iterative_output, tmp_path):
    _assert_same(iterative_output, _run("dask", ntuples, _processor(skim_dir=tmp_path)))


def test_processor_pickles_small_and_without_a_model(tmp_path):
    proc = _processor(model=tmp_path / "no-model-loaded-yet")
    blob = pickle.dumps(proc)
    assert len(blob) < 5000
    assert pickle.loads(blob).model == proc.model


@pytest.mark.parametrize("executor", ["iterative", "futures"])
def test_missing_scores_and_model_is_an_error_naming_the_file(tmp_path, executor):
    """coffea wraps a chunk's error in a plain Exception (the futures executor keeps only its text);
    chunk_error recovers the one-line eventlm error that names the file."""
    from conftest import random_events

    path = write_events(random_events(50), tmp_path / "plain.root")
    with pytest.raises(Exception, match="Failed processing file") as info:
        _run(executor, {"paths": {"background": path}}, _processor(), workers=1)
    error = chunk_error(info.value)
    assert isinstance(error, EventFormatError if executor == "iterative" else EventlmError)
    assert str(error) == f"{path}: no anomaly_score branch and no model to compute it"
    assert chunk_error(RuntimeError("an unrelated failure")) is None


@pytest.mark.slow
def test_processor_scores_with_a_model_loaded_once(tmp_path):
    from conftest import random_events

    from eventlm.analysis import ml
    from eventlm.config import RunConfig
    from eventlm.modeldir import ModelDir
    from eventlm.train import train

    events = random_events(600, seed=4)
    config = RunConfig().replace(train={"epochs": 1, "batch_size": 64},
                                 model={"n_layer": 1, "n_embd": 16, "n_head": 2})
    model_dir = tmp_path / "model"
    train(config, events, model_dir, progress=False)
    path = write_events(events[:300], tmp_path / "plain.root")
    ml._LOADED.clear()
    out = _run("iterative", {"paths": {"background": path}}, _processor(model=model_dir))
    assert len(ml._LOADED) == 1  # loaded once for the 2 chunks, in the one per-process cache
    expected = ModelDir(model_dir).open_scorer().score(events[:300])["anomaly_score"]
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
    np.testing.assert_array_equal(ak.to_numpy(ak.num(events.particles)), ak.to_numpy(ak.num(original.particles)))
    np.testing.assert_array_equal(ak.to_numpy(events.weight), ak.to_numpy(original.weight))
    np.testing.assert_allclose(ak.to_numpy(events.met), ak.to_numpy(original.met), rtol=1e-6)
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(events.particles.kind)),
                                  ak.to_numpy(ak.flatten(original.particles.kind)))
    assert events.particles.mass.ndim == 2  # vector behaviour, as from read_events


def test_skims_hold_every_event_once_with_unique_names(ntuples, iterative_output):
    for ds, original in ntuples["events"].items():
        skims = skims_of(iterative_output, ds)
        assert len(skims) == -(-len(original) // 250)  # one file per chunk of 250
        names = [p.rsplit("/", 1)[1] for p in skims]
        assert len(set(names)) == len(names) and all(n.startswith(f"{ds}_") for n in names)
        assert sum(skims.values()) == len(original) == iterative_output[ds]["n_events"].value
        from_skims, in_memory = read_skim_columns(skims, step_size=97), columns_of(iterative_output, ds)
        for k in ("event", "weight", "process_code", "anomaly_score", "in_CR", "in_SR"):
            np.testing.assert_array_equal(from_skims[k], in_memory[k], err_msg=k)
        # the skims are scored ntuples: eventlm reads the events back, with the scores and region flags
        back = read_events(sorted(skims))
        np.testing.assert_array_equal(np.sort(ak.to_numpy(back.event_id)), np.sort(ak.to_numpy(original.event_id)))
        assert {"anomaly_score", "region_CR", "region_SR"} <= set(back.fields)
        assert set(ak.to_list(back.process)) == set(ak.to_list(original.process))


def test_skims_read_in_root_and_coffea(ntuples, iterative_output):
    ROOT = pytest.importorskip("ROOT")
    from coffea.nanoevents import NanoEventsFactory

    skims = skims_of(iterative_output, "background")
    cols = columns_of(iterative_output, "background")
    frame = ROOT.RDataFrame("Events", list(skims))
    assert frame.Count().GetValue() == len(cols["event"])
    assert frame.Sum("anomaly_score").GetValue() == pytest.approx(float(cols["anomaly_score"].sum(dtype=np.float64)))
    assert frame.Filter("region_SR").Count().GetValue() == int(cols["in_SR"].sum())
    first = sorted(skims)[0]
    events = NanoEventsFactory.from_root({first: "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager").events()
    assert len(events) == skims[first]
    # NanoAODSchema splits the branch names at the first "_": the documented access paths
    np.testing.assert_array_equal(ak.to_numpy(events.anomaly.score), ak.to_numpy(score_branch(events, "anomaly_score")))
    assert events.region.SR.type.content.primitive == "bool"
    assert events.Particle.pt.ndim == 2


def test_score_names_survive_the_schema(tmp_path):
    """Every score column of eventlm.score is reachable as events.anomaly.<name> and by its branch name."""
    from coffea.nanoevents import NanoEventsFactory
    from conftest import random_events

    from eventlm.score import SCORE_COLUMNS

    events = random_events(40, seed=8)
    flat = [c for c in SCORE_COLUMNS if c != "token_nll"] + ["anomaly_score_mean", "anomaly_score_calibrated"]
    values = {c: np.full(len(events), i + 0.5, np.float32) for i, c in enumerate(dict.fromkeys(flat))}
    new = write_events(events, tmp_path / "new.root", extra_columns=values)
    old = write_events(events, tmp_path / "old.root", extra_columns={"anomaly_score": values["anomaly_score"]})
    for path, names in ((new, values), (old, {"anomaly_score": None})):
        nano = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=EventlmNanoAODSchema,
                                           mode="eager").events()
        for name in names:
            expected = values[name]
            np.testing.assert_array_equal(ak.to_numpy(score_branch(nano, name)), expected)
            if name.startswith("anomaly_score"):
                dotted = "anomaly." + name[len("anomaly_"):]
                np.testing.assert_array_equal(ak.to_numpy(score_branch(nano, dotted)), expected)
                np.testing.assert_array_equal(ak.to_numpy(nano.anomaly[name[len("anomaly_"):]]), expected)


def test_regression_a_request_for_the_mean_is_never_answered_with_the_sum(tmp_path):
    """SCORE_ALIASES answered anomaly_score_mean with anomaly_score (the summed NLL) on a file that only
    had anomaly_score: the mean is absent there, and a processor asked for it refuses in one line."""
    from coffea.nanoevents import NanoEventsFactory
    from conftest import random_events


    events = random_events(40, seed=8)
    total = np.linspace(20.0, 60.0, len(events)).astype(np.float32)
    old = write_events(events, tmp_path / "old.root", extra_columns={"anomaly_score": total})
    nano = NanoEventsFactory.from_root({str(old): "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager",
                                       metadata={"dataset": "old", "filename": str(old)}).events()
    np.testing.assert_array_equal(ak.to_numpy(score_branch(nano, "anomaly_score")), total)
    for name in ("anomaly_score_mean", "anomaly.score_mean", "anomaly_score_sum"):
        assert score_branch(nano, name) is None, name
    with pytest.raises(EventFormatError, match="no anomaly_score_mean branch"):
        _processor(score_column="anomaly_score_mean").process(nano)
    assert read_skim_columns([old]).keys() >= {"anomaly_score"}
    assert "anomaly_score_mean" not in read_skim_columns([old])


def test_processor_histograms_a_score_named_the_nanoevents_way(ntuples, tmp_path):
    proc = _processor(score_column="anomaly.score", keep_columns=False)
    assert proc.score_column == "anomaly_score"
    out = _run("iterative", {"paths": {"tttt_H500": ntuples["paths"]["tttt_H500"]}}, proc)
    assert "columns" not in out["tttt_H500"] and "skims" not in out["tttt_H500"]  # histograms only
    h = out["tttt_H500"]["score"][{"region": "all"}]
    assert sum(h[{"process": p}].sum(flow=True).value for p in h.axes["process"]) == pytest.approx(
        float(ak.sum(ntuples["events"]["tttt_H500"].weight)))
