"""An integrator's port of eventlm's preprocessing that reads NOTHING but ``preprocess.json``.

It imports numpy, json and onnxruntime only (``tests/test_export_spec.py`` checks that it imports no
eventlm module): what a CMSSW or Athena port would do, in numpy. Every rule comes from the JSON; a
rule value this port does not know is refused rather than guessed.

    spec = load("preprocess.json")
    ids = [tokenize(spec, ev) for ev in events]     # ev: {"kind", "charge", "pt", "eta", "phi", "met", "met_phi"}
    out = run_graph("model.onnx", pad(ids))         # nll_sum, nll_mean, n_terms, token_nll
    cols = score_columns(spec, out, ids)            # anomaly_score_nll, anomaly_score (+ _calibrated)
"""

from __future__ import annotations

import json
import math

import numpy as np

KNOWN = {
    "bin_rule": {"count_edges_le", "uniform", "table"},
    "transform": {"identity", "abs"},
    "phi_mode": {"absolute", "leading_object"},
    "rotation": {"mod_2pi_minus_pi"},
    "tie_break": {"first_in_input_order"},
    "truncation": {"keep_highest_pt"},
    "empty_event": {"met_phi", "zero"},
    "unknown_category": {"error"},
    "score": {"nll_sum", "nll_sum_plus_count_term"},
    "default": {"anomaly_score_nll", "lq_of_tail_probabilities"},
    "scale": {"sum_of_representatives"},
}


def _known(kind: str, value) -> None:
    if value not in KNOWN[kind]:
        raise ValueError(f"preprocess.json: {kind} rule {value!r} is unknown to this port")


def load(path) -> dict:
    """The JSON, checked: the format, the schema version this port implements, every rule known."""
    with open(path) as f:
        spec = json.load(f)
    if spec.get("format") != "eventlm-onnx-preprocess" or spec.get("schema_version") != 2:
        raise ValueError(f"{path}: not a schema-2 eventlm preprocess.json")
    t = spec["tokenization"]
    if not t["complete"]:
        raise ValueError(f"{path}: {t['reason']}")
    for b in t["bins"].values():
        _known("bin_rule", b["rule"])
        if "transform" in b:
            _known("transform", b["transform"])
    ref = t["phi_reference"]
    _known("phi_mode", ref["mode"])
    _known("rotation", ref["rotation"])
    _known("tie_break", ref["tie_break"])
    _known("empty_event", ref["empty_event"])
    _known("truncation", t["truncation"]["rule"])
    _known("tie_break", t["truncation"]["tie_break"])
    _known("tie_break", t["particle_order"]["tie_break"])
    _known("unknown_category", t["unknown_category"])
    _known("score", spec["score"]["anomaly_score_nll"]["rule"])
    _known("default", spec["score"]["anomaly_score"]["rule"])
    if spec["score"]["anomaly_score"]["rule"] != "anomaly_score_nll":
        _known("scale", spec["score"]["anomaly_score"]["scale"]["rule"])
    keys = [(k["key"], k["order"]) for k in t["particle_order"]["keys"]]
    if keys != [("cat_id", "ascending"), ("pt", "descending")]:
        raise ValueError(f"preprocess.json: particle order {keys} is unknown to this port")
    return spec


def _bin(spec_bin: dict, value: float) -> int:
    """The 1-based bin of one value (float64 of its float32)."""
    x = float(value)
    if spec_bin.get("transform") == "abs":
        x = abs(x)
    if spec_bin["rule"] == "count_edges_le":
        return 1 + sum(1 for e in spec_bin["edges"] if e <= x)
    low, high, n = spec_bin["low"], spec_bin["high"], spec_bin["n_bins"]
    tol = spec_bin.get("wrap_outside_tolerance")
    if tol is not None and abs(x) > math.pi + tol:
        x = float(np.mod(x + math.pi, 2 * math.pi) - math.pi)
    b = math.floor((x - low) * (n / (high - low)))
    return 1 + min(max(b, 0), n - 1)


def _rotate(phi: float, reference: float) -> float:
    return float(np.mod(phi - reference + math.pi, 2 * math.pi) - math.pi)


def tokenize(spec: dict, event: dict) -> list[int]:
    """Token ids of one event (its objects in input order, float32 kinematics)."""
    t = spec["tokenization"]
    table = {(c["kind"], c["charge"]): c["cat_id"] for c in t["categories"]}
    kind = [int(k) for k in event["kind"]]
    charge = [int(q) for q in event["charge"]]
    pt = [float(np.float32(v)) for v in event["pt"]]
    eta = [float(np.float32(v)) for v in event["eta"]]
    phi = [float(np.float32(v)) for v in event["phi"]]
    met, met_phi = float(np.float32(event["met"])), float(np.float32(event["met_phi"]))
    n = len(pt)
    cat = []
    for k, q in zip(kind, charge):
        if (k, q) not in table:
            raise ValueError(f"(kind, charge) = ({k}, {q}) has no category")
        cat.append(table[(k, q)])
    # pT descending, ties by input order (a stable sort)
    by_pt = sorted(range(n), key=lambda i: -pt[i])
    limit = t["truncation"]["max_particles"]
    kept = sorted(by_pt[:limit] if limit is not None else by_pt)
    # the phi reference, chosen before truncation
    ref = t["phi_reference"]
    reference = 0.0
    if ref["mode"] == "leading_object":
        if n:
            reference = phi[by_pt[0] if ref["before_truncation"] else sorted(kept, key=lambda i: -pt[i])[0]]
        elif ref["empty_event"] == "met_phi":
            reference = met_phi
    rotated = {"phi": [_rotate(p, reference) if "phi" in ref["rotates"] else p for p in phi],
               "met_phi": _rotate(met_phi, reference) if "met_phi" in ref["rotates"] else met_phi}
    order = sorted(kept, key=lambda i: (cat[i], -pt[i]))  # stable: ties keep input order
    bins = t["bins"]
    ids: list[int] = []
    for token in t["tokens"]:
        if token["per"] == "particle":
            for i in order:
                values = {"cat_id": cat[i], "pt": pt[i], "eta": eta[i], "phi": rotated["phi"][i]}
                ids.append(_token_id(token, bins, values))
        else:
            values = {"met": met, "met_phi": rotated["met_phi"]}
            ids.append(_token_id(token, bins, values))
    return ids


def _token_id(token: dict, bins: dict, values: dict) -> int:
    total = token["offset"] + 1
    for digit in token["digits"]:
        name = digit["bin"]
        b = values[name] if bins[name]["rule"] == "table" else _bin(bins[name], values[name])
        total += (b - 1) * digit["stride"]
    return total


def pad(ids: list[list[int]], width: int | None = None) -> np.ndarray:
    """(B, T) float32, 0 (PAD) after each event's ids."""
    width = width or max([len(x) for x in ids] + [1])
    out = np.zeros((len(ids), width), dtype=np.float32)
    for row, x in enumerate(ids):
        out[row, : len(x)] = x
    return out


def run_graph(onnx_path, token_ids: np.ndarray) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"token_ids": token_ids.astype(np.float32)})))


def _survival(cal: dict, x: np.ndarray, klass: np.ndarray) -> np.ndarray:
    """A calibration's background survival probability of each value (its class given)."""
    grid = np.asarray(cal["survival_grid"])
    survival = np.empty(len(x))
    for i in range(len(x)):
        q = np.asarray(cal["quantiles"][klass[i]])
        if x[i] > q[-1]:
            survival[i] = grid[-1] * math.exp(-(x[i] - q[-1]) / cal["tail_scale"][klass[i]])
        else:
            survival[i] = np.interp(x[i], q, grid, left=1.0, right=grid[-1])
    return survival


def _class(cal: dict, n_objects: np.ndarray) -> np.ndarray:
    lower = np.asarray(cal["lower"])
    return np.clip(np.searchsorted(lower, n_objects, side="right") - 1, 0, len(lower) - 1)


def _scale(spec: dict, ids: list[list[int]]) -> np.ndarray:
    """S_T of each event from its token ids: the pt digit of every particle token, the MET token's bin."""
    rule = spec["score"]["anomaly_score"]["scale"]
    tokens = {tok["name"]: tok for tok in spec["tokenization"]["tokens"]}
    bins = spec["tokenization"]["bins"]
    particle = tokens["particle"]
    pt_stride = next(d["stride"] for d in particle["digits"] if d["bin"] == "pt")
    n_pt = bins["pt"]["n_bins"]
    met = tokens.get("met")
    out = np.zeros(len(ids))
    for row, event in enumerate(ids):
        total = 0.0
        for token in event:
            if met is not None and met["offset"] < token <= met["offset"] + bins["met"]["n_bins"]:
                total += rule["met_representatives"][token - met["offset"] - 1]
            elif token <= (met["offset"] if met is not None else float("inf")):
                total += rule["pt_representatives"][((token - 1) // pt_stride) % n_pt]
        out[row] = total
    return out


def score_columns(spec: dict, out: dict, ids: list[list[int]]) -> dict:
    """eventlm's ``anomaly_score`` (and ``anomaly_score_calibrated`` where the JSON has a calibration)."""
    score = spec["score"]
    n_objects = np.array([max(len(x) - spec["n_met_tokens"], 0) for x in ids], dtype=np.int64)
    nll_sum = out["nll_sum"].astype(np.float64)
    if score["anomaly_score_nll"]["rule"] == "nll_sum_plus_count_term":
        nll = np.asarray(score["count_term"]["nll"])
        anomaly_score_nll = nll_sum + nll[np.minimum(n_objects, len(nll) - 1)]
    else:
        anomaly_score_nll = nll_sum
    cols = {"anomaly_score_nll": anomaly_score_nll.astype(np.float32), "anomaly_score": anomaly_score_nll.astype(np.float32)}
    cal = score["calibration"]
    if cal is not None:
        name = "anomaly_score_nll" if cal["score"] == "anomaly_score" else cal["score"]  # the old name of the NLL
        x = cols[name].astype(np.float64)
        calibrated = -np.log10(np.clip(_survival(cal, x, _class(cal, n_objects)), 1e-300, 1.0)) + 0.0
        calibrated[np.asarray(n_objects) < cal["lower"][0]] = np.nan  # below the calibrated object counts
        cols["anomaly_score_calibrated"] = calibrated.astype(np.float32)
    default = score["anomaly_score"]
    if default["rule"] == "lq_of_tail_probabilities":
        one = np.zeros(len(ids), dtype=np.int64)
        p_nll = _survival(default["p_nll"]["calibration"], anomaly_score_nll, one)
        cal_scale = default["p_scale"]["calibration"]
        p_scale = _survival(cal_scale, _scale(spec, ids), _class(cal_scale, n_objects))
        a = default["nll_weight"] * -np.log(np.clip(p_nll, 1e-300, 1.0))
        b = -np.log(np.clip(p_scale, 1e-300, 1.0))
        q = default["q"]
        t = np.maximum(a, b) if q is None else (a ** q + b ** q) ** (1.0 / q)
        final = _survival(default["final"]["calibration"], t, one)
        cols["anomaly_score"] = (-np.log10(np.clip(final, 1e-300, 1.0)) + 0.0).astype(np.float32)
    return cols
