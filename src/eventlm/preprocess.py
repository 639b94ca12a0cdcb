"""``preprocess.json``: the preprocessing of a model as data, for a framework that has only the export.

:func:`preprocess_spec` writes every rule that turns an event's objects into the graph's ``token_ids``
(and the graph's output into eventlm's score columns) as values a port can read and switch on, never
as prose: the (kind, charge) -> category table, the particle order and its tie-break, the truncation
above ``max_particles``, the phi reference (which object, ties, the empty event), every bin edge and
the edge convention, the token id of each bin combination, the sequence layout, the object-count term
of a masked score and the calibration. Each rule with more than one possible behaviour names its
behaviour with a string from a closed set (the ``*_RULES`` tuples below); a port refuses a value it
does not know. docs/export.md is the recipe these keys encode; ``tests/preprocess_numpy.py`` is a
port in plain numpy that reads nothing but the JSON.

:func:`edge_case_events` builds the events every export writes as reference vectors: an empty event,
events at and above ``max_particles`` (with a pT tie at the truncation boundary), a pT tie of the
leading object across categories, both signs of every charge, values on bin edges and phi at +-pi.

Pure numpy/awkward (never imports torch).
"""

from __future__ import annotations

import math

import numpy as np

from eventlm._version import __version__
from eventlm.card import as_plain
from eventlm.events import Kind

#: The schema of ``preprocess.json``; raised whenever a key changes meaning or a rule is added.
SCHEMA_VERSION = 2
FORMAT = "eventlm-onnx-preprocess"

#: How a value falls into a bin given its edges: ``count_edges_le`` = 1 + the number of inner edges
#: ``e`` with ``e <= value`` (1-based; a value exactly on an edge goes to the upper bin), compared in
#: float64 on the float32 value; ``uniform`` = 1 + clip(floor((value - low) * (n_bins / (high - low))),
#: 0, n_bins - 1) in float64 (so ``high`` itself falls into the last bin).
BIN_RULES = ("count_edges_le", "uniform")
#: The transform applied to a field before binning.
TRANSFORMS = ("identity", "abs")
#: phi measured from: ``absolute`` (detector phi, reference 0) or ``leading_object``.
PHI_REFERENCE_MODES = ("absolute", "leading_object")
#: How a rotated angle is wrapped: ``mod_2pi_minus_pi`` = mod(phi - reference + pi, 2 pi) - pi in float64.
ROTATIONS = ("mod_2pi_minus_pi",)
#: Ties in a pT comparison (equal float32 pT): the object that comes first in the event's input order.
TIE_BREAKS = ("first_in_input_order",)
#: Which objects survive truncation: the ``max_particles`` highest-pT ones, whatever their category.
TRUNCATION_RULES = ("keep_highest_pt",)
#: The reference of an event without objects.
EMPTY_EVENT_REFERENCES = ("met_phi", "zero")
#: A (kind, charge) outside the category table.
UNKNOWN_CATEGORY_RULES = ("error",)
#: What ``anomaly_score`` is made of, from the graph's outputs.
SCORE_RULES = ("nll_sum", "nll_sum_plus_count_term")


def _bin(field: str, transform: str, rule: str, n_bins: int, *, edges=None, low=None, high=None,
         wrap_outside=None) -> dict:
    out = {"field": field, "transform": transform, "rule": rule, "n_bins": int(n_bins)}
    if edges is not None:
        out["edges"] = [float(e) for e in edges]
    if low is not None:
        out.update(low=float(low), high=float(high))
    if wrap_outside is not None:
        # phi beyond [-pi - tol, pi + tol] is wrapped into [-pi, pi) before binning (float32(pi) > pi
        # by less than the tolerance and is not wrapped: it falls into the last bin)
        out["wrap_outside_tolerance"] = float(wrap_outside)
    return out


def tokenization_spec(tokenizer) -> dict:
    """The look-up table's tokenization as data (see the module docstring and docs/export.md)."""
    from eventlm.tokenize.particles import CATEGORIES

    if tokenizer.kind != "lut":
        return {"complete": False,
                "reason": f"the {tokenizer.kind} tokenizer is a network of its own; its weights are not in "
                          "this file, so the token ids cannot be rebuilt from it"}
    t = tokenizer
    first_met = t.n_particle_tokens + 1
    phi_range = dict(low=-math.pi, high=math.pi)
    bins = {
        "cat_id": {"field": "category", "rule": "table", "n_bins": len(CATEGORIES)},
        "pt": _bin("pt", "identity", "count_edges_le", t.n_pt, edges=t.pt_edges),
        "eta": _bin("eta", "abs", "count_edges_le", t.n_eta, edges=t.eta_edges),
        "phi": _bin("phi", "identity", "uniform", t.n_phi, **phi_range, wrap_outside=1e-6),
    }
    tokens = [{"name": "particle", "per": "particle", "offset": 0,
               "digits": [{"bin": "cat_id", "stride": t.n_pt * t.n_eta * t.n_phi},
                          {"bin": "pt", "stride": t.n_eta * t.n_phi},
                          {"bin": "eta", "stride": t.n_phi},
                          {"bin": "phi", "stride": 1}]}]
    if t.met_tokens:
        bins["met"] = _bin("met", "identity", "count_edges_le", t.n_met, edges=t.met.edges)
        bins["met_phi"] = _bin("met_phi", "identity", "uniform", t.n_met_phi, **phi_range, wrap_outside=1e-6)
        tokens += [{"name": "met", "per": "event", "offset": first_met - 1,
                    "digits": [{"bin": "met", "stride": 1}]},
                   {"name": "met_phi", "per": "event", "offset": first_met - 1 + t.n_met,
                    "digits": [{"bin": "met_phi", "stride": 1}]}]
    leading = t.phi_reference == "leading"
    return {
        "complete": True,
        "input": {
            "objects": "the event's objects after the selection below, in the order the reader writes "
                       "them (Particle_* of eventlm's ntuples: pT descending, ties in input order)",
            "dtype": "float32",
            "fields": {"kind": "int", "charge": "int", "pt": "GeV", "eta": "1", "phi": "rad",
                       "met": "GeV", "met_phi": "rad"},
        },
        "kinds": {k.name: int(k) for k in Kind},
        "categories": [{"cat_id": c, "kind": int(k), "kind_name": k.name, "charge": q, "label": label}
                       for c, (k, q, label) in CATEGORIES.items()],
        "unknown_category": "error",
        "truncation": {"max_particles": t.max_particles, "rule": "keep_highest_pt",
                       "tie_break": "first_in_input_order", "met_tokens_truncated": False},
        "particle_order": {"keys": [{"key": "cat_id", "order": "ascending"},
                                    {"key": "pt", "order": "descending", "compare_as": "float32"}],
                           "tie_break": "first_in_input_order",
                           "applied": "after truncation"},
        "phi_reference": {
            "mode": "leading_object" if leading else "absolute",
            # the leading object is chosen among ALL objects of the event, before truncation
            "object": "highest_pt_object" if leading else None,
            "before_truncation": True,
            "tie_break": "first_in_input_order",
            "empty_event": ("met_phi" if t.met_tokens else "zero") if leading else "zero",
            "rotates": ["phi", "met_phi"] if leading else [],
            "rotation": "mod_2pi_minus_pi",
        },
        "bins": bins,
        "tokens": tokens,
        "token_id": "offset + 1 + sum((bin - 1) * stride) over digits; bins 1-based",
        "sequence": [tok["name"] for tok in tokens],
        "max_tokens": (t.max_particles or 0) + t.n_met_tokens,
    }


def selection_spec(ckpt: dict) -> dict:
    """The object selection and MET flavour behind the training events, and the readers' defaults."""
    from eventlm.io import nanoaod, physlite

    return {
        "training": as_plain(ckpt.get("reader") or ckpt.get("inputs")) or None,
        "nanoaod": {"options": as_plain(nanoaod.NanoAODOptions()),
                    "met_preference_by_run": {str(r): list(m) for r, m in nanoaod.MET_PREFERENCE.items()},
                    "btag_branch_by_run": {str(r): list(b) for r, b in nanoaod.DEFAULT_BTAG_BRANCH.items()},
                    "btag_era_by_run": {str(r): e for r, e in nanoaod.DEFAULT_BTAG_ERA.items()},
                    "btag_eta_default": "options.btag_eta, else 2.4 for the eras starting with 2016, else 2.5: "
                                        "a jet is b-tagged only below it (the tracker)",
                    "btag_working_points": as_plain(nanoaod.BTAG_WORKING_POINTS)},
        "physlite": {"options": as_plain(physlite.PHYSLITEOptions()),
                     "btag_working_points": as_plain(physlite.BTAG_WORKING_POINTS)},
        "overlap_removal": {"precedence": ["lepton", "photon", "jet"], "metric": "delta_r",
                            "removes": "a photon within overlap_dr of a kept lepton; a jet within overlap_dr "
                                       "of a kept lepton or photon"},
    }


def score_spec(ckpt: dict, tokenizer, calibration=None) -> dict:
    """How eventlm's score columns follow from the graph's outputs (object-count term, calibration)."""
    from eventlm.calibration import Multiplicity

    masked = ckpt["objective"] == "masked"
    out = {
        "n_objects": "particle tokens of the event (after truncation)",
        "anomaly_score_nll": {"rule": "nll_sum_plus_count_term" if masked and ckpt.get("multiplicity") else "nll_sum"},
        "anomaly_score": {"rule": "anomaly_score_nll"},
        "anomaly_score_sum": "nll_sum",
        "anomaly_score_mean": "nll_mean",
        "log_likelihood": "-nll_sum" if not masked else None,
        "count_term": None,
        "calibration": None,
    }
    if masked and ckpt.get("multiplicity"):
        m = Multiplicity(ckpt["multiplicity"])
        out["count_term"] = {
            "counts": m.to_list(),
            # -log p(n), add-one smoothing: p(n) = (counts[n] + 1) / (sum(counts) + len(counts))
            "nll": m.nll(np.arange(len(m.counts))).tolist(),
            "index": "min(n_objects, len(nll) - 1)",
        }
    if calibration is not None:
        cal = calibration.to_dict()
        cal.update({
            "n_objects": "particle tokens of the event (after truncation)",
            "class_rule": "class = clip((number of lower <= n_objects) - 1, 0, len(lower) - 1)",
            "survival": "linear interpolation of survival_grid against quantiles[class] (1 below the "
                        "first quantile); above the last quantile survival_grid[-1] * exp(-(x - "
                        "quantiles[class][-1]) / tail_scale[class])",
            "output": "anomaly_score_calibrated = -log10(max(survival, 1e-300)) + 0.0 (never -0), float32; "
                      "NaN where n_objects < lower[0] (no background of that object count was calibrated)",
        })
        out["calibration"] = cal
        default = cal.pop("default", None)
        if default is not None and tokenizer.kind == "lut":
            out["anomaly_score"] = default_spec(default, tokenizer)
    return out


def default_spec(default: dict, tokenizer) -> dict:
    """The default ``anomaly_score`` (:class:`eventlm.calibration.DefaultScore`) as data."""
    survival = ("linear interpolation of survival_grid against quantiles[class] (1 below the first "
                "quantile); above the last quantile survival_grid[-1] * exp(-(x - quantiles[class][-1]) / "
                "tail_scale[class])")
    return {
        "rule": "lq_of_tail_probabilities",
        "scale": {
            "rule": "sum_of_representatives",
            "what": "S_T = sum over particle tokens of pt_representatives[pt bin - 1] + met_representatives[met "
                    "bin - 1] of the MET token (0 without one), float64; the bins are the token's pt/met digits",
            "pt_representatives": [float(x) for x in tokenizer.pt_centers],
            "met_representatives": [float(x) for x in tokenizer.met.centers] if tokenizer.met_tokens else None,
        },
        "p_nll": {"calibration": default["nll"], "of": "anomaly_score_nll (float64, before the float32 column)",
                  "class_rule": "one class (class 0)", "survival": survival},
        "p_scale": {"calibration": default["scale"], "of": "S_T",
                    "class_rule": "class = clip((number of lower <= n_objects) - 1, 0, len(lower) - 1)",
                    "survival": survival},
        "q": default["q"],
        "nll_weight": default["nll_weight"],
        "statistic": "a = nll_weight * -ln max(p_nll, 1e-300), b = -ln max(p_scale, 1e-300); t = (a^q + b^q)^(1/q); "
                     "q null: the larger of a and b",
        "final": {"calibration": default["final"], "of": "t", "class_rule": "one class (class 0)",
                  "survival": survival},
        "output": "anomaly_score = -log10(max(final survival of t, 1e-300)) + 0.0, float32",
    }


def edge_case_events(tokenizer):
    """The reference events every export writes (see the module docstring); None for a learned tokenizer.

    Returns ``(events, names)``: an event array (the event model) and one name per event.
    """
    from eventlm.events import energy_from_pt_eta, make_events, make_particles

    if tokenizer.kind != "lut" or not tokenizer.is_fitted:
        return None
    J, B, E, M, G = (int(k) for k in (Kind.JET, Kind.BJET, Kind.ELECTRON, Kind.MUON, Kind.PHOTON))
    edges = np.asarray(tokenizer.pt_edges, dtype=np.float64)
    top = float(edges[-1]) if len(edges) else 100.0
    f32 = np.float32

    def up(x):  # the smallest float32 >= x: on the edge as far as float32 can be
        v = f32(x)
        return float(v if float(v) >= x else np.nextafter(v, f32(np.inf)))

    def down(x):  # the largest float32 < x
        v = f32(x)
        return float(np.nextafter(v, f32(-np.inf)) if float(v) >= x else v)

    n_max = tokenizer.max_particles or 18
    events = []  # (name, met, met_phi, [(kind, charge, pt, eta, phi)])
    events.append(("empty", 35.0, 2.0, []))
    events.append(("every_category_both_charges", 60.0, -1.0, [
        (J, 0, 80.0, 0.3, 0.5), (B, 0, 70.0, -1.1, -2.5), (E, -1, 60.0, 1.9, 1.5), (E, +1, 50.0, -0.2, -0.7),
        (M, -1, 45.0, 2.2, 3.0), (M, +1, 40.0, -2.0, -3.0), (G, 0, 35.0, 0.9, 2.2)]))
    # the leading pT is shared by a photon (first in input order) and a jet: the photon is the reference
    events.append(("leading_pt_tie_across_categories", 25.0, 0.0, [
        (G, 0, 120.0, 0.1, 2.0), (J, 0, 120.0, -0.5, -1.0), (J, 0, 119.5, 1.4, 0.4), (M, +1, 30.0, 0.3, 2.9)]))
    # several objects in the leading pT bin, two jets with equal pT (token order by input order)
    events.append(("ties_in_leading_pt_bin", 80.0, 1.2, [
        (J, 0, up(top) + 10.0, 0.2, -0.3), (J, 0, up(top) + 5.0, 0.8, 1.1), (J, 0, up(top) + 5.0, -0.8, 2.1),
        (B, 0, up(top) + 1.0, 1.0, -2.2)]))
    pts = [200.0 - 7.0 * i for i in range(n_max)]
    kinds = [(J, 0), (B, 0), (E, -1), (M, +1), (G, 0), (E, +1), (M, -1)]
    at = [(*kinds[i % len(kinds)], pts[i], -2.4 + 0.27 * i, -3.1 + 0.34 * i) for i in range(n_max)]
    events.append(("at_max_particles", 45.0, 0.7, at))
    # above max_particles: the softest four go whatever their category; the object at the boundary
    # ties in pT with the first one dropped (input order decides); input not in pT order
    above = list(at) + [(M, -1, 5.0, 0.1, 0.1), (G, 0, 4.0, 0.2, 0.2), (E, +1, pts[-1], 1.0, 1.0),
                        (J, 0, 3.0, 0.3, 0.3)]
    above = above[::-1]
    events.append(("above_max_particles", 120.0, -2.9, above))
    on_edges = [(J, 0, up(e), 0.0, 0.0) for e in edges[:4]] + [(J, 0, down(e), 0.0, 0.0) for e in edges[:4]]
    eta_edges = np.asarray(tokenizer.eta_edges, dtype=np.float64)
    on_edges += [(B, 0, 50.0, up(e), 1.0) for e in eta_edges[:2]] + [(B, 0, 50.0, -up(e), -1.0) for e in eta_edges[:2]]
    met = up(float(tokenizer.met.edges[0])) if tokenizer.met_tokens else 30.0
    events.append(("values_on_bin_edges", met, 0.0, on_edges))
    pi32 = float(f32(math.pi))  # float32(pi) is a little above pi
    events.append(("phi_at_plus_minus_pi", 70.0, -pi32, [
        (J, 0, 90.0, 0.5, pi32), (J, 0, 60.0, -0.5, -pi32), (E, -1, 30.0, 0.0, 0.0), (M, +1, 25.0, 0.0, -pi32)]))
    # the leading object at phi = -3 and another at +3: their difference wraps across pi
    events.append(("phi_wraps_around", 500.0, 3.1, [
        (J, 0, 300.0, 1.0, -3.0), (J, 0, 200.0, -1.0, 3.0), (G, 0, 50.0, 0.4, -0.1)]))

    names = [e[0] for e in events]
    counts = np.array([len(e[3]) for e in events], dtype=np.int64)
    flat = [p for e in events for p in e[3]]
    cols = np.array(flat, dtype=np.float64).reshape(-1, 5)
    pt = cols[:, 2].astype(np.float32)
    eta = cols[:, 3].astype(np.float32)
    particles = make_particles(cols[:, 0], cols[:, 1], pt, eta, cols[:, 4].astype(np.float32),
                               energy_from_pt_eta(pt.astype(np.float64), eta.astype(np.float64)), counts)
    arr = make_events(event_id=np.arange(len(events)), process="reference", weight=np.ones(len(events)),
                      met=np.array([e[1] for e in events], dtype=np.float32),
                      met_phi=np.array([e[2] for e in events], dtype=np.float32), particles=particles)
    return arr, names


def preprocess_spec(tokenizer, ckpt: dict, model_dir, *, calibration=None, inputs=None, outputs=None,
                    special=None) -> dict:
    """The whole ``preprocess.json`` except the reference vectors (added by the export)."""
    special = special or tokenizer.special
    mask_met = bool(ckpt["run_config"]["masking"]["mask_met"])
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "eventlm_version": __version__,
        "model_dir": str(model_dir),
        "objective": ckpt["objective"],
        "inputs": inputs,
        "outputs": outputs,
        "special_ids": {"pad": special.pad, "mask": special.mask, "bos": special.bos, "eos": special.eos},
        "vocab_size": tokenizer.vocab_size,
        "n_met_tokens": tokenizer.n_met_tokens,
        "mask_met": mask_met,
        "units": "GeV, rad",
        "tokenizer": {"kind": tokenizer.kind, "params": tokenizer.get_params(),
                      "fingerprint": tokenizer.fingerprint()},
        "tokenization": tokenization_spec(tokenizer),
        "selection": selection_spec(ckpt),
        "score": score_spec(ckpt, tokenizer, calibration),
    }
