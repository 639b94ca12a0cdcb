"""`eventlm finetune`: a classifier head on the pre-trained transformer, read back by `eventlm score`."""

from __future__ import annotations

import json
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import torch

from eventlm.config import RunConfig
from eventlm.classifier import ClassifierScorer, token_inputs
from eventlm.errors import ModelDirError
from eventlm.finetune import FinetuneError, finetune
from eventlm.modeldir import CLASSIFIER, CLASSIFIER_INFO, ModelDir
from eventlm.train import split_indices, train

TINY = RunConfig(seed=4).replace(
    model={"n_layer": 1, "n_embd": 16, "n_head": 2},
    train={"epochs": 1, "batch_size": 64, "warmup_steps": 2},
)
BACKGROUND = ("ttbar", "ttbarHiggs", "single_top", "w_jets")


@pytest.fixture(scope="module")
def samples(fixture_events):
    is_bkg = np.isin(np.asarray(fixture_events.process), BACKGROUND)
    return fixture_events[~is_bkg], fixture_events[is_bkg]


@pytest.fixture(scope="module", params=["causal", "masked"])
def model_dir(request, samples, tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp(request.param)
    train(TINY.replace(train={"objective": request.param}), samples[1], out, progress=False)
    return out


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_frozen_backbone_is_unchanged_and_the_head_learns(model_dir, samples, tmp_path):
    signal, background = samples
    result = finetune(model_dir, signal, background, tmp_path / "clf", freeze=True, epochs=2, seed=1,
                      progress=False)
    pretrained, _, _ = ModelDir(model_dir).load()
    assert _same_weights(result.classifier.backbone, pretrained)
    saved, _, info = ModelDir(tmp_path / "clf").load_classifier()
    assert _same_weights(saved.backbone, pretrained)  # what was written, too
    assert info["freeze"] and info["objective"] == ModelDir(model_dir).load()[2]["objective"]
    scores = result.predict(signal[:30])
    assert scores.shape == (30,) and scores.dtype == np.float32 and ((scores >= 0) & (scores <= 1)).all()


def test_unfrozen_backbone_is_trained(model_dir, samples):
    signal, background = samples
    result = finetune(model_dir, signal, background, freeze=False, epochs=1, seed=1, progress=False)
    pretrained, _, _ = ModelDir(model_dir).load()
    assert not _same_weights(result.classifier.backbone, pretrained)


def test_same_seed_same_classifier(model_dir, samples):
    signal, background = samples
    a = finetune(model_dir, signal, background, epochs=1, seed=2, max_signal=50, progress=False)
    b = finetune(model_dir, signal, background, epochs=1, seed=2, max_signal=50, progress=False)
    assert a.info["n_signal"] == 50
    np.testing.assert_array_equal(a.predict(background[:40]), b.predict(background[:40]))


def test_test_split_background_is_left_out(model_dir, samples):
    signal, background = samples
    # the model was trained on exactly these rows: its test split is the seeded cut of their positions
    split = TINY.split
    in_test = len(split_indices(len(background), (split.train, split.validation, split.test), TINY.seed)["test"])
    result = finetune(model_dir, signal, background, epochs=1, progress=False, freeze=True)
    assert in_test > 0
    assert result.info["n_background_excluded_test"] == in_test
    assert result.info["n_background"] == len(background) - in_test


def test_pooled_features_ignore_padding(model_dir, samples):
    signal, _ = samples
    result = finetune(model_dir, signal, samples[1], epochs=1, progress=False, freeze=True)
    ids, mask = token_inputs(result.tokenizer.encode(signal[:4]), result.tokenizer.special, result.objective)
    padded_ids = np.concatenate([ids, np.zeros((4, 5), dtype=ids.dtype)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((4, 5), dtype=bool)], axis=1)
    clf = result.classifier.eval()
    with torch.no_grad():
        a = clf.features(torch.from_numpy(ids), torch.from_numpy(mask))
        b = clf.features(torch.from_numpy(padded_ids), torch.from_numpy(padded_mask))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_finetune_and_score_from_the_shell(model_dir, fixture_path, fixture_events, samples, tmp_path):
    from eventlm.io import read_events, write_events

    signal, background = samples
    write_events(signal, tmp_path / "sig.parquet")
    write_events(background, tmp_path / "bkg.parquet")
    out = tmp_path / "my_clf"
    proc = subprocess.run([sys.executable, "-m", "eventlm", "finetune", str(model_dir), "--signal",
                           str(tmp_path / "sig.parquet"), "--background", str(tmp_path / "bkg.parquet"),
                           "--out", str(out), "--epochs", "1", "--freeze", "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / CLASSIFIER_INFO).read_text())
    assert info["column"] == "score_my_clf"
    scored_path = tmp_path / "scored.root"
    proc = subprocess.run([sys.executable, "-m", "eventlm", "score", str(fixture_path), "--model", str(out),
                           "-o", str(scored_path), "--step-size", "97", "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scored = read_events(scored_path)
    assert len(scored) == len(fixture_events)
    np.testing.assert_array_equal(ak.to_numpy(scored.event_id), ak.to_numpy(fixture_events.event_id))
    direct = ModelDir(out).open_scorer().score(fixture_events)["score_my_clf"]
    np.testing.assert_allclose(ak.to_numpy(scored.score_my_clf), direct, rtol=1e-6)


def test_scorer_dispatches_classifier_directories_and_pickles(model_dir, samples, tmp_path):
    import pickle

    signal, background = samples
    finetune(model_dir, signal, background, tmp_path / "c", epochs=1, freeze=True, progress=False, name="gl 1")
    assert ModelDir(tmp_path / "c").kind == CLASSIFIER
    scorer = ModelDir(tmp_path / "c").open_scorer()
    assert isinstance(scorer, ClassifierScorer)
    first = scorer.score(signal[:10])
    clone = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(clone.score(signal[:10])["score_gl_1"], first["score_gl_1"])


def test_wrong_inputs_give_eventlm_errors(model_dir, samples, tmp_path):
    signal, background = samples
    finetune(model_dir, signal, background, tmp_path / "c", epochs=1, freeze=True, progress=False)
    with pytest.raises(FinetuneError, match="already a classifier"):
        finetune(tmp_path / "c", signal, background, progress=False)
    with pytest.raises(FinetuneError, match="scratch"):
        finetune(model_dir, signal, background, freeze=True, scratch=True, progress=False)
    from eventlm.sample import ModelKindError, sample_events

    with pytest.raises(ModelKindError, match="classifier"):
        sample_events(tmp_path / "c", 3)


def test_classifier_into_a_language_models_directory_is_refused(model_dir, samples, tmp_path):
    """Regression: finetune --out equal to the language model's directory wrote the classifier into it,
    and `eventlm score` then silently gave classifier output."""
    signal, background = samples
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(FinetuneError, match="holds a language model"):
        finetune(model_dir, signal, background, model_dir, epochs=1, freeze=True, progress=False)
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert ModelDir(model_dir).kind == "language model"
    with pytest.raises(ModelDirError, match="holds a language model"):  # nor through ModelDir itself
        ModelDir(model_dir).write_classifier({}, {}, None)
