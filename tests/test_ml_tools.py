"""Scoring inside the physicist's own processor (eventlm.analysis.ml): on a real NanoAOD file the
scores equal `eventlm score`'s under the iterative, futures and dask executors; the scorer pickles
without its model, loads it once per process, and handles empty chunks; docs/examples runs."""

from __future__ import annotations

import pickle
import sys

import awkward as ak
import numpy as np
import pytest
from coffea import processor
from coffea.nanoevents import NanoEventsFactory, PHYSLITESchema

from eventlm.analysis import ml
from eventlm.analysis.ml import EventlmScorer
from eventlm.analysis.execution import coffea_runner
from eventlm.cli import main
from eventlm.io import read_events
from eventlm.io.schema import EventlmNanoAODSchema

from conftest import ROOT_DIR, real_file

# The committed Open Data file is a slimmed NanoAOD: NanoAODSchema warns that it replaces its
# Photon_mass and Photon_charge (branches it also synthesizes) and about cross-references of dropped collections
# (EventlmNanoAODSchema is NanoAODSchema with those switched off). Photon masses do not enter the
# tokens (and photons have charge 0 in the event model), so the scores are not affected.
pytestmark = [pytest.mark.filterwarnings("ignore:Branch Photon_.* already exists:RuntimeWarning"),
              pytest.mark.slow]

sys.path.insert(0, str(ROOT_DIR / "docs" / "examples"))  # the documented processor; also the workers' path
from score_in_processor import REGIONS, ScoreProcessor  # noqa: E402

SCORES = ("anomaly_score", "anomaly_score_sum")


class ScoreProcessorWithColumns(ScoreProcessor):
    """The documented processor, also returning each event's id and scores (to compare them)."""

    def process(self, events):
        out = super().process(events)
        scores = self.scorer(events)
        columns = {"event": ak.to_numpy(events.event).astype(np.int64),
                   **{name: ak.to_numpy(scores[name]) for name in SCORES}}
        out[events.metadata["dataset"]]["columns"] = {k: processor.column_accumulator(v) for k, v in columns.items()}
        return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, fixture_events, one_torch_thread):
    from eventlm.config import RunConfig
    from eventlm.train import train

    out = tmp_path_factory.mktemp("ml") / "model"
    config = RunConfig().replace(train={"epochs": 1, "batch_size": 64, "objective": "masked"},
                                 model={"n_layer": 1, "n_embd": 16, "n_head": 2})
    train(config, fixture_events, out, progress=False)
    return out


@pytest.fixture(scope="module")
def reference(model_dir, nanoaod_path, tmp_path_factory):
    """`eventlm score` on the NanoAOD file: the scores the processor must reproduce."""
    out = tmp_path_factory.mktemp("scored") / "nano.parquet"
    assert main(["score", "--model", str(model_dir), str(nanoaod_path), "--output", str(out), "--no-progress"]) == 0
    return read_events(out)


def _nanoevents(path, schema=EventlmNanoAODSchema, tree="Events", mode="eager"):
    return NanoEventsFactory.from_root({str(path): tree}, schemaclass=schema, mode=mode).events()


@pytest.mark.parametrize("executor", ["iterative", "futures", "dask"])
def test_processor_scores_equal_eventlm_score(model_dir, reference, nanoaod_path, executor):
    fileset = {"ttbar": [str(nanoaod_path)]}
    with coffea_runner(executor, workers=2, chunksize=100, progress=False) as runner:
        runner.schema = EventlmNanoAODSchema
        out = runner(fileset, ScoreProcessorWithColumns(model_dir), treename="Events")["ttbar"]
    n = len(reference)
    assert out["n_events"] == n == 200
    cols = {k: np.asarray(v.value) for k, v in out["columns"].items()}
    order = np.argsort(cols["event"], kind="stable")  # chunks may come back in any order
    ref_order = np.argsort(ak.to_numpy(reference.event_id), kind="stable")
    np.testing.assert_array_equal(cols["event"][order], ak.to_numpy(reference.event_id)[ref_order])
    for name in SCORES:
        np.testing.assert_allclose(cols[name][order], ak.to_numpy(reference[name])[ref_order], rtol=1e-5, atol=1e-6)
    # the documented histogram holds each region's events with their weights
    nano = _nanoevents(nanoaod_path)
    jets = nano.Jet[(nano.Jet.pt > 20) & (abs(nano.Jet.eta) < 2.8)]
    n_jets = ak.to_numpy(ak.num(jets))
    weight = ak.to_numpy(nano.genWeight)
    for region, (lo, hi) in REGIONS.items():
        mask = (n_jets >= lo) & (n_jets <= (hi if hi is not None else 99))
        assert mask.any()
        assert out["score"][{"region": region}].sum(flow=True).value == pytest.approx(weight[mask].sum())


def test_scorer_pickles_without_its_model_and_loads_once(model_dir, nanoaod_path, reference):
    ml._LOADED.clear()
    scorer = EventlmScorer(model_dir, reader="nanoaod")
    blob = pickle.dumps(scorer)
    assert len(blob) < 2000 and not ml._LOADED  # nothing loaded to pickle it
    events = _nanoevents(nanoaod_path, mode="virtual")
    first = pickle.loads(blob)(events[:120])
    second = pickle.loads(blob)(events[120:])  # another copy, as a worker unpickles per chunk
    assert len(ml._LOADED) == 1
    assert pickle.loads(pickle.dumps(first and scorer))._scorer is None  # still pickles after use
    scores = np.concatenate([ak.to_numpy(first["anomaly_score"]), ak.to_numpy(second["anomaly_score"])])
    np.testing.assert_allclose(scores, ak.to_numpy(reference.anomaly_score), rtol=1e-5, atol=1e-6)


def test_empty_chunk_gives_empty_columns(model_dir, nanoaod_path):
    scorer = EventlmScorer(model_dir)
    out = scorer(_nanoevents(nanoaod_path)[:0])
    assert set(SCORES) <= set(out) and all(len(v) == 0 for v in out.values())
    assert "token_nll" not in out  # event-level columns only


@pytest.mark.filterwarnings("ignore:Skipping .* as it:UserWarning")  # PHYSLITE aux branches uproot cannot read
def test_physlite_scores_equal_eventlm_score(model_dir, tmp_path):
    path = real_file("PHYSLITE_example.root")
    out = tmp_path / "physlite.parquet"
    assert main(["score", "--model", str(model_dir), str(path), "--output", str(out), "--no-progress"]) == 0
    expected = read_events(out)
    events = _nanoevents(path, schema=PHYSLITESchema, tree="CollectionTree")
    scores = EventlmScorer(model_dir, reader="physlite")(events)
    assert len(scores["anomaly_score"]) == len(expected) == len(events)
    np.testing.assert_allclose(ak.to_numpy(scores["anomaly_score_sum"]), ak.to_numpy(expected.anomaly_score_sum),
                               rtol=1e-5, atol=1e-6)


def test_reader_options_and_bad_arguments(model_dir, nanoaod_path):
    from eventlm.io.nanoaod import NanoAODOptions

    loose = EventlmScorer(model_dir, options={"muon_id": None, "muon_iso": None})
    assert loose.options == NanoAODOptions(muon_id=None, muon_iso=None)
    default = EventlmScorer(model_dir, options=NanoAODOptions())
    events = _nanoevents(nanoaod_path)
    n_muons = [int(ak.sum(s.to_event_model(events).particles.kind == 3)) for s in (loose, default)]
    assert n_muons[0] > n_muons[1]  # the options reach the mapping: no muon ID, more muons
    with pytest.raises(ValueError, match="unknown reader 'miniaod'"):
        EventlmScorer(model_dir, reader="miniaod")
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        EventlmScorer(nanoaod_path.parent)


def test_the_documented_processor_is_the_tested_file():
    """docs/analysis.md shows docs/examples/score_in_processor.py verbatim (the code this module runs)."""
    doc = (ROOT_DIR / "docs" / "analysis.md").read_text()
    section = doc[doc.index("## Scoring inside your own processor"):]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = (ROOT_DIR / "docs" / "examples" / "score_in_processor.py").read_text()
    assert "class ScoreProcessor(processor.ProcessorABC):" in block
    assert block in example

