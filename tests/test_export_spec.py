"""preprocess.json is the whole preprocessing: a port that reads nothing but the JSON and runs the graph in
ONNX Runtime (tests/preprocess_numpy.py, numpy only) reproduces `eventlm score` within 1e-5 on the
bundled background, a signal, and the real NanoAOD and PHYSLITE files, for both objectives, and the
reference vectors every export writes (empty event, at and above max_particles, pT ties, both charges)."""
# tiny models (1 layer x 16, one epoch on 3000 background events); about 30 s for the module

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import preprocess_numpy as port  # noqa: E402  (tests/ is on sys.path: pytest's rootdir-relative import)
from conftest import real_file  # noqa: E402

from eventlm.cli import main  # noqa: E402

pytestmark = pytest.mark.slow

INPUTS = {  # name -> (file, events scored)
    "background": ("background", 400),
    "signal": ("gluino_1000", 200),
    "nanoaod": ("nanoAOD_2015_CMS_Open_Data_ttbar.root", None),
    "physlite": ("PHYSLITE_example.root", None),
}


def _input(name, background_path, signal_paths) -> Path:
    source = INPUTS[name][0]
    if source == "background":
        return background_path
    if source in signal_paths:
        return signal_paths[source]
    return real_file(source)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, background_events, one_torch_thread):
    from eventlm.config import RunConfig
    from eventlm.apply import calibrate
    from eventlm.train import train

    out = {}
    events = background_events[:3000]
    for objective in ("causal", "masked"):
        d = tmp_path_factory.mktemp(f"spec-{objective}")
        config = RunConfig(seed=3).replace(train={"epochs": 1, "batch_size": 64, "objective": objective},
                                           model={"n_layer": 1, "n_embd": 16, "n_head": 2})
        train(config, events, d / "model", progress=False)
        calibrate(d / "model", events)
        out[objective] = d
    return out


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_json_alone_reproduces_eventlm_score(exports, objective, background_path, signal_paths, caplog):
    import uproot

    d = exports[objective]
    with caplog.at_level(logging.INFO):
        assert main(["export", str(d / "model"), "--onnx", str(d / "model.onnx")]) == 0
    # quiet: the one line that says what was written (the exporter's passes log ~100 lines otherwise)
    assert [r.name for r in caplog.records] == ["eventlm.export"], [r.getMessage() for r in caplog.records]
    spec = port.load(d / "preprocess.json")
    assert spec["schema_version"] == 2 and spec["tokenization"]["complete"]
    assert (spec["score"]["count_term"] is not None) == (objective == "masked")
    assert spec["score"]["calibration"] is not None
    assert spec["score"]["anomaly_score"]["rule"] == "lq_of_tail_probabilities"  # the default combination
    for name in INPUTS:
        scored = d / f"{name}.root"
        argv = ["score", str(d / "model"), str(_input(name, background_path, signal_paths)), "-o", str(scored),
                "--no-progress"]
        if INPUTS[name][1]:
            argv += ["--max-events", str(INPUTS[name][1])]
        assert main(argv) == 0
        with uproot.open(scored) as f:
            t = f["Events"].arrays(["Particle_kind", "Particle_charge", "Particle_pt", "Particle_eta",
                                    "Particle_phi", "MET_pt", "MET_phi", "anomaly_score", "anomaly_score_nll",
                                    "anomaly_score_calibrated"], library="np")
        n = len(t["MET_pt"])
        assert n == (INPUTS[name][1] or n) and n > 0
        events = [{"kind": t["Particle_kind"][i], "charge": t["Particle_charge"][i], "pt": t["Particle_pt"][i],
                   "eta": t["Particle_eta"][i], "phi": t["Particle_phi"][i], "met": t["MET_pt"][i],
                   "met_phi": t["MET_phi"][i]} for i in range(n)]
        ids = [port.tokenize(spec, ev) for ev in events]
        cols = port.score_columns(spec, port.run_graph(d / "model.onnx", port.pad(ids)), ids)
        for column in ("anomaly_score", "anomaly_score_nll", "anomaly_score_calibrated"):
            np.testing.assert_allclose(cols[column], t[column], rtol=1e-5, atol=1e-5, err_msg=f"{name} {column}")


@pytest.mark.parametrize("objective", ["causal", "masked"])
def test_reference_vectors_cover_the_edge_cases(exports, objective):
    d = exports[objective]
    if not (d / "preprocess.json").exists():
        assert main(["export", str(d / "model"), "--onnx", str(d / "model.onnx")]) == 0
    spec = port.load(d / "preprocess.json")
    ref = spec["reference"]
    assert {"empty", "at_max_particles", "above_max_particles", "leading_pt_tie_across_categories",
            "ties_in_leading_pt_bin", "every_category_both_charges", "values_on_bin_edges"} <= set(ref["names"])
    limit = spec["tokenization"]["truncation"]["max_particles"]
    n_particles = {name: len(ev["particles"]) for name, ev in zip(ref["names"], ref["events"])}
    assert n_particles["empty"] == 0 and n_particles["at_max_particles"] == limit
    assert n_particles["above_max_particles"] > limit
    pairs = {(p["kind"], p["charge"]) for ev in ref["events"] for p in ev["particles"]}
    assert {(c["kind"], c["charge"]) for c in spec["tokenization"]["categories"]} <= pairs
    ids = [port.tokenize(spec, {f: [p[f] for p in ev["particles"]] for f in ("kind", "charge", "pt", "eta", "phi")}
                         | {"met": ev["met"], "met_phi": ev["met_phi"]}) for ev in ref["events"]]
    width = len(ref["token_ids"][0])
    assert port.pad(ids, width).astype(np.int64).tolist() == ref["token_ids"]
    n_met = spec["n_met_tokens"]
    assert len(ids[ref["names"].index("above_max_particles")]) == limit + n_met
    assert len(ids[ref["names"].index("empty")]) == n_met
    out = port.run_graph(d / "model.onnx", port.pad(ids, width))
    np.testing.assert_allclose(out["nll_sum"], ref["nll_sum"], rtol=1e-6)
    cols = port.score_columns(spec, out, ids)
    np.testing.assert_allclose(cols["anomaly_score"], ref["anomaly_score"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cols["anomaly_score_calibrated"], ref["anomaly_score_calibrated"], rtol=1e-5, atol=1e-5)


def test_the_port_imports_nothing_but_numpy_json_and_onnxruntime():
    source = Path(port.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "json", "math", "numpy", "onnxruntime"}, imported


def test_a_rule_the_port_does_not_know_is_refused(exports, tmp_path):
    d = exports["causal"]
    if not (d / "preprocess.json").exists():
        assert main(["export", str(d / "model"), "--onnx", str(d / "model.onnx")]) == 0
    spec = json.loads((d / "preprocess.json").read_text())
    spec["tokenization"]["phi_reference"]["tie_break"] = "last_in_input_order"
    (tmp_path / "p.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="tie_break"):
        port.load(tmp_path / "p.json")


def test_preprocess_equal_to_onnx_is_refused(exports, capsys, tmp_path):
    from conftest import one_error

    target = tmp_path / "model.onnx"
    one_error(capsys, ["export", "--model", str(exports["causal"] / "model"), "--onnx", str(target),
                       "--preprocess", str(target)], "--preprocess", "ONNX file itself")
    assert not target.exists()
    one_error(capsys, ["export", str(exports["causal"] / "model"), "--onnx", str(tmp_path / "no" / "m.onnx")],
              "does not exist", "--mkdir")
    assert not (tmp_path / "no").exists()
