"""ONNX export: ONNX Runtime's scores equal torch's (within 1e-5) for both objectives, on the bundled
fixture events, at any batch size and padding width; preprocess.json rebuilds the tokenizer."""
# tiny models (1 layer x 16) trained for one epoch on the fixture; each export takes about 10 s

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from eventlm.cli import main  # noqa: E402
from eventlm.export import export_onnx, onnx_scores, pad_tokens  # noqa: E402
from eventlm.modeldir import ModelDir  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory, fixture_events, fixture_path, one_torch_thread):
    from eventlm.config import RunConfig
    from eventlm.train import train

    out = {}
    for objective in ("masked", "causal"):
        d = tmp_path_factory.mktemp(objective)
        config = RunConfig().replace(train={"epochs": 1, "batch_size": 64, "objective": objective},
                                     model={"n_layer": 1, "n_embd": 16, "n_head": 2})
        train(config, fixture_events, d / "model", progress=False)
        out[objective] = d
    # one through the command line, one through the API
    assert main(["export", str(out["masked"] / "model"), "--onnx", str(out["masked"] / "model.onnx"),
                 "--reference", str(fixture_path)]) == 0
    export_onnx(out["causal"] / "model", out["causal"] / "model.onnx", reference_events=fixture_events)
    return out


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_onnx_runtime_scores_equal_torch(exported, fixture_events, objective):
    model_dir = exported[objective] / "model"
    scorer = ModelDir(model_dir).open_scorer(threads=1)
    torch_scores = scorer.score(fixture_events)
    ids = pad_tokens(scorer.tokenizer.encode(fixture_events))
    ort = onnx_scores(exported[objective] / "model.onnx", ids)
    np.testing.assert_allclose(ort["nll_sum"], torch_scores["anomaly_score_sum"], rtol=1e-5, atol=1e-5)
    lengths = (ids != 0).sum(axis=1)
    expected_terms = lengths + 1 if objective == "causal" else lengths - scorer.tokenizer.n_met_tokens
    np.testing.assert_array_equal(ort["n_terms"], np.maximum(expected_terms, 0))
    np.testing.assert_allclose(ort["nll_mean"], ort["nll_sum"] / np.maximum(ort["n_terms"], 1), rtol=1e-6)
    # the per-token terms, in the event's token order (the scorer leaves the causal stop term out)
    n_scored = ak.to_numpy(ak.num(torch_scores["token_nll"]))
    position = np.arange(ids.shape[1] + (objective == "causal"))[None, :]
    ort_tokens = ort["token_nll"][position < n_scored[:, None]]
    np.testing.assert_allclose(ort_tokens, ak.to_numpy(ak.flatten(torch_scores["token_nll"])), atol=1e-5)
    assert np.all(ort["token_nll"][position >= ort["n_terms"][:, None]] == 0)


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_batch_and_token_axes_are_dynamic(exported, fixture_events, objective):
    import onnx

    path = exported[objective] / "model.onnx"
    graph = onnx.load(str(path)).graph
    (token_ids,) = graph.input
    dims = token_ids.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True]  # symbolic, not the export sample's 3 x 5
    assert [o.name for o in graph.output] == ["nll_sum", "nll_mean", "n_terms", "token_nll"]
    # float32 in and out: CMSSW's cms::Ort::ONNXRuntime passes FloatArrays only
    assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT}
    tokenizer = ModelDir(exported[objective] / "model").open_scorer().tokenizer
    ids = pad_tokens(tokenizer.encode(fixture_events[:50]))
    full = onnx_scores(path, ids)
    one = onnx_scores(path, ids[7:8, : (ids[7] != 0).sum()])  # a single event, no padding
    np.testing.assert_allclose(one["nll_sum"], full["nll_sum"][7:8], rtol=1e-6)
    wider = onnx_scores(path, np.pad(ids, ((0, 0), (0, 9))))  # extra padding changes nothing
    np.testing.assert_allclose(wider["nll_sum"], full["nll_sum"], rtol=1e-5, atol=1e-5)


def test_events_without_tokens_get_finite_scores(exported, make_events):
    """A batch with an event of no particles: masked gives 0 (nothing to mask), never NaN."""
    events = make_events(20, seed=3)
    events = events[ak.num(events.particles) == 0][:1]
    assert len(events) == 1
    scorer = ModelDir(exported["masked"] / "model").open_scorer()
    ids = pad_tokens(scorer.tokenizer.encode(events))
    out = onnx_scores(exported["masked"] / "model.onnx", ids)
    assert out["n_terms"].tolist() == [0] and out["nll_sum"].tolist() == [0.0]
    assert scorer.score(events)["anomaly_score_sum"].tolist() == [0.0]


def test_preprocess_json_rebuilds_the_tokenizer(exported, fixture_events):
    from eventlm.tokenize.base import REGISTRY

    info = json.loads((exported["masked"] / "preprocess.json").read_text())
    tokenizer = ModelDir(exported["masked"] / "model").open_scorer().tokenizer
    assert info["objective"] == "masked" and info["vocab_size"] == tokenizer.vocab_size
    special = tokenizer.special
    assert info["special_ids"] == {"pad": 0, "mask": special.mask, "bos": special.bos, "eos": special.eos}
    rebuilt = REGISTRY[info["tokenizer"]["kind"]].from_params(info["tokenizer"]["params"])
    assert rebuilt.fingerprint() == info["tokenizer"]["fingerprint"] == tokenizer.fingerprint()
    assert ak.to_list(rebuilt.encode(fixture_events)) == ak.to_list(tokenizer.encode(fixture_events))
    # the reference events: their token ids and the graph's scores, a test vector for a C++ port
    # (after the edge cases every export writes, tests/test_export_spec.py): the --reference events
    ref = info["reference"]
    given = [i for i, name in enumerate(ref["names"]) if name.startswith("input_")]
    assert [ref["events"][i]["event_id"] for i in given] == ak.to_list(fixture_events.event_id[:8])
    ids = np.array(ref["token_ids"])[given]
    expected = pad_tokens(tokenizer.encode(fixture_events[:8]))
    np.testing.assert_array_equal(ids[:, : expected.shape[1]], expected)
    assert not ids[:, expected.shape[1]:].any()  # the rest of the batch's width is padding
    ort = onnx_scores(exported["masked"] / "model.onnx", np.array(ref["token_ids"]))
    np.testing.assert_allclose(ort["nll_sum"], ref["nll_sum"], rtol=1e-6)


def test_export_of_a_missing_model_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no-model"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eventlm export: error:") and "no-model" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()
