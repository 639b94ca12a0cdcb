"""The model directory as the one contract (eventlm.modeldir): which rows it was trained on (row keys,
unique by construction), what it is (language model or classifier, one open_scorer for every scoring
path), and what is derived from its weights (stamped, refused in one line when they differ)."""

from __future__ import annotations

import json
import shutil

import awkward as ak
import numpy as np
import pytest

from conftest import one_error, real_file
from eventlm.config import RunConfig
from eventlm.errors import ModelDirError, StaleFileError
from eventlm.io import read_events, write_events
from eventlm.modeldir import CLASSIFIER, LANGUAGE_MODEL, ModelDir
from eventlm.rows import row_keys
from eventlm.train import split_indices, train

TINY = RunConfig(seed=11).replace(
    model={"n_layer": 1, "n_embd": 16, "n_head": 2},
    train={"epochs": 1, "batch_size": 64, "warmup_steps": 2},
)
BACKGROUND = ("ttbar", "ttbarHiggs", "single_top", "w_jets")


def _positions(n: int, config: RunConfig = TINY) -> dict:
    """The split's input positions, computed apart from the row keys."""
    s = config.split
    return split_indices(n, (s.train, s.validation, s.test), config.seed)


# ---- row keys --------------------------------------------------------------------------------------


def test_row_keys_follow_the_event_not_its_place_and_are_unique(fixture_events):
    keys = row_keys(fixture_events)
    assert keys.dtype == np.uint64 and len(np.unique(keys)) == len(keys)
    order = np.random.default_rng(0).permutation(len(fixture_events))
    np.testing.assert_array_equal(row_keys(fixture_events[order]), keys[order])  # order-free
    relabelled = ak.with_field(fixture_events, np.full(len(fixture_events), 2.5), "weight")
    np.testing.assert_array_equal(row_keys(relabelled), keys)  # weights and labels are not the row
    moved = ak.with_field(fixture_events, ak.to_numpy(fixture_events.met) + np.float32(1.0), "met")
    assert not np.isin(row_keys(moved), keys).any()  # other events, other rows
    twice = ak.concatenate([fixture_events, fixture_events])  # the same file given twice
    doubled = row_keys(twice)
    assert len(np.unique(doubled)) == len(twice)
    np.testing.assert_array_equal(doubled[: len(keys)], keys)  # a prefix keeps its keys


def _nanoaod_without_event_numbers(src, dst):
    """A copy of a real NanoAOD file without its ``event`` branch: the reader then numbers events by
    entry, from 0 in every file, as for files that carry no event numbers."""
    import uproot

    prefixes = ("Jet", "Muon", "Electron", "Photon", "MET")
    with uproot.open(src) as f:
        keys = [k for k in f["Events"].keys() if k.split("_")[0] in prefixes or k == "genWeight"]
        arrays = f["Events"].arrays(keys, library="ak")
    out = {}
    for p in prefixes:
        names = [k for k in keys if k.startswith(p + "_")]
        if jagged := [k for k in names if arrays[k].ndim == 2]:
            out[p] = ak.zip({k[len(p) + 1:]: arrays[k] for k in jagged})  # written as nP and P_x
        out.update({k: arrays[k] for k in names if arrays[k].ndim == 1})
    out["genWeight"] = arrays["genWeight"]
    with uproot.recreate(dst) as g:
        g.mktree("Events", {k: v.type.content for k, v in out.items()})
        g["Events"].extend(out)
    return dst


@pytest.fixture(scope="module")
def overlapping_nanoaod(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nano")
    return [_nanoaod_without_event_numbers(real_file(name), folder / name)
            for name in ("DYJetsToLL--UL17_v6-v2_109_Skim.root", "GJet_v11_Skim.root")]


def test_two_nanoaod_files_with_overlapping_event_numbers_split_by_row(overlapping_nanoaod, tmp_path):
    """Regression: split.json held event ids; two files numbered 0..N-1 each put training events into
    the test split and calibrated on more events than the validation split holds."""
    from eventlm.apply import calibrate

    events = read_events(overlapping_nanoaod)
    ids = ak.to_numpy(events.event_id)
    assert len(np.unique(ids)) < len(ids)  # the event numbers do overlap
    md = ModelDir(tmp_path / "m")
    train(TINY, overlapping_nanoaod, md.path, progress=False)
    masks = {s: md.in_split(events, s) for s in ("train", "validation", "test")}
    np.testing.assert_array_equal(sum(m.astype(int) for m in masks.values()), 1)  # each row in one split
    positions = _positions(len(events))
    for split, mask in masks.items():
        np.testing.assert_array_equal(np.flatnonzero(mask), positions[split])
    assert not (masks["test"] & masks["train"]).any()
    cal = calibrate(md, overlapping_nanoaod)
    assert sum(cal.n_events) == len(positions["validation"])  # exactly the validation rows
    with pytest.raises(ModelDirError, match="validation rows"):  # and all of them, or refused
        calibrate(md, overlapping_nanoaod[:1])


def test_an_event_id_split_is_read_where_ids_are_unique_and_refused_where_they_repeat(
        overlapping_nanoaod, fixture_events, tmp_path, caplog):
    md = ModelDir(tmp_path)
    (tmp_path / "split.json").write_text(json.dumps(  # as eventlm wrote it before row keys
        {"seed": 1, "n_events": 3, "train": [0, 1], "validation": [], "test": [2]}))
    nano = read_events(overlapping_nanoaod)
    with pytest.raises(ModelDirError, match="event ids .* repeat in these events.*retrain"):
        md.select(nano, "test")
    ids = ak.to_numpy(fixture_events.event_id)
    (tmp_path / "split.json").write_text(json.dumps(
        {"seed": 1, "train": ids[:5].tolist(), "validation": [], "test": ids[5:7].tolist()}))
    test = ModelDir(tmp_path).select(fixture_events, "test")
    np.testing.assert_array_equal(ak.to_numpy(test.event_id), ids[5:7])
    assert "records event ids" in caplog.text


# ---- what a directory is, and one scorer for every path -------------------------------------------


@pytest.fixture(scope="module")
def language_model(fixture_events, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("lm") / "model"
    background = fixture_events[np.isin(np.asarray(fixture_events.process), BACKGROUND)]
    train(TINY, background, out, progress=False)
    return out


@pytest.fixture(scope="module")
def classifier(language_model, fixture_events, tmp_path_factory):
    from eventlm.finetune import finetune

    is_bkg = np.isin(np.asarray(fixture_events.process), BACKGROUND)
    out = tmp_path_factory.mktemp("clf") / "clf"
    finetune(language_model, fixture_events[~is_bkg], fixture_events[is_bkg], out, epochs=1, freeze=True,
             progress=False)
    return out


def test_kind_of_a_directory(language_model, classifier, tmp_path):
    assert ModelDir(language_model).kind == LANGUAGE_MODEL
    assert ModelDir(classifier).kind == CLASSIFIER
    both = tmp_path / "both"
    shutil.copytree(classifier, both)
    shutil.copy(language_model / "best.pt", both / "best.pt")
    with pytest.raises(ModelDirError, match="both a language model .* and a classifier"):
        ModelDir(both).open_scorer()


def test_classifier_scores_the_same_through_every_path(classifier, fixture_path, fixture_events, tmp_path):
    """Regression: `eventlm score --model CLF --workers 2` crashed (workers looked for best.pt) and
    EventlmScorer(CLF) raised AttributeError; the coffea processor and both give one worker's output."""
    from coffea.nanoevents import NanoEventsFactory

    from eventlm.analysis.execution import coffea_runner
    from eventlm.analysis.ml import EventlmScorer
    from eventlm.analysis.processor import AnomalyProcessor
    from eventlm.analysis.skims import columns_of
    from eventlm.cli import main
    from eventlm.io.schema import EventlmNanoAODSchema

    column = "score_clf"
    for workers in (1, 2):
        assert main(["score", "--model", str(classifier), str(fixture_path), "-o", str(tmp_path / f"w{workers}.root"),
                     "--workers", str(workers), "--step-size", "150", "--no-progress"]) == 0
    one = ak.to_numpy(read_events(tmp_path / "w1.root")[column])
    assert len(one) == len(fixture_events) and ((one > 0) & (one < 1)).all()
    np.testing.assert_allclose(ak.to_numpy(read_events(tmp_path / "w2.root")[column]), one, rtol=1e-6, atol=1e-7)

    ntuple = write_events(fixture_events, tmp_path / "plain.root")
    chunk = NanoEventsFactory.from_root({str(ntuple): "Events"}, schemaclass=EventlmNanoAODSchema,
                                        mode="eager").events()
    np.testing.assert_allclose(ak.to_numpy(EventlmScorer(classifier, reader="eventlm")(chunk)[column]), one,
                               rtol=1e-6, atol=1e-7)

    proc = AnomalyProcessor([], model=classifier, score_column=column, score_range=(0.0, 1.0), keep_columns=True,
                            variables=("ht",))
    with coffea_runner("iterative", workers=1, chunksize=200, progress=False) as runner:
        out = runner({"mixed": [str(ntuple)]}, proc, treename="Events")
    cols = columns_of(out, "mixed")  # sorted by event id
    order = np.argsort(ak.to_numpy(fixture_events.event_id), kind="stable")
    np.testing.assert_allclose(cols[column], one[order], rtol=1e-6, atol=1e-7)


# ---- what is derived from the weights ----------------------------------------------------------------


def test_calibration_and_sampling_table_from_other_weights_are_refused_in_one_line(
        language_model, fixture_events, fixture_path, tmp_path, capsys):
    """Regression: after train() into an existing directory the old calibration.json was applied
    (17 % of background above 1 instead of 10 %), and which="last" used best.pt's calibration."""
    from eventlm.apply import calibrate
    from eventlm.sample import load_sampling_table, prepare_sampling

    background = fixture_events[np.isin(np.asarray(fixture_events.process), BACKGROUND)]
    md = ModelDir(tmp_path / "m")
    shutil.copytree(language_model, md.path)
    calibrate(md, background)
    prepare_sampling(md.path, background)
    assert "anomaly_score_calibrated" in md.open_scorer().score(background[:5])
    # which="last" has no calibration of its own yet: none is applied, and best.pt's is not borrowed
    assert "anomaly_score_calibrated" not in md.open_scorer(which="last").score(background[:5])
    shutil.copy(md.calibration_path("best"), md.calibration_path("last"))
    with pytest.raises(StaleFileError, match="calibration_last.json: made from other weights"):
        md.open_scorer(which="last")
    calibrate(md, background, which="last")
    assert "anomaly_score_calibrated" in md.open_scorer(which="last").score(background[:5])

    import torch

    ckpt = md.checkpoint()  # other weights, the same tokenizer
    md.write_checkpoint({**ckpt, "model": {k: v + 0.01 for k, v in ckpt["model"].items()}}, which="best")
    with pytest.raises(StaleFileError, match="sampling.npz: made from other weights"):
        load_sampling_table(md.path, md.load_tokenizer())
    with pytest.raises(StaleFileError, match="calibration.json: made from other weights"):
        md.open_scorer()
    assert torch.equal(ModelDir(md.path).checkpoint()["model"]["wte.weight"], ckpt["model"]["wte.weight"] + 0.01)

    train(TINY.replace(seed=12), background, md.path, progress=False)  # new weights, old derived files
    line = one_error(capsys, ["score", "--model", str(md.path), str(fixture_path), "-o", str(tmp_path / "s.root")],
                     "calibration.json", "made from other weights")
    assert "best.pt" in line


def test_a_calibration_holding_nan_is_refused_in_one_line(language_model, fixture_events, fixture_path, tmp_path,
                                                          capsys):
    from eventlm.apply import calibrate

    md = ModelDir(tmp_path / "m")
    shutil.copytree(language_model, md.path)
    calibrate(md, fixture_events[np.isin(np.asarray(fixture_events.process), BACKGROUND)])
    path = md.calibration_path()
    data = json.loads(path.read_text())
    data["tail_scale"][0] = float("nan")
    path.write_text(json.dumps(data))  # python writes NaN
    one_error(capsys, ["score", "--model", str(md.path), str(fixture_path), "-o", str(tmp_path / "s.root")],
              "calibration.json", "not a calibration file", "NaN")
    data["tail_scale"][0] = 1e999  # inf, spelt as a number
    path.write_text(json.dumps(data).replace("Infinity", "1e999"))
    with pytest.raises(ModelDirError, match="not finite"):
        md.open_scorer()
