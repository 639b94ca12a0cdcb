"""The study core: figures of merit of event scores that multiplicity cannot fool.

Every comparison of scores in eventlm (``eventlm demo``, ``analysis/validation.py``, the tokenizer
comparison) goes through :func:`compare`, which gives, for each method and signal:

- the pooled ROC-AUC, eff_S at eff_B = 1e-2 and 1e-3 and the maximal SIC, with bootstrap errors
  (:func:`eventlm.metrics.evaluate`);
- the **length-matched AUC** (:func:`stratified_auc`): the AUC inside each object-count class, averaged
  with the signal's class populations as weights. A score that only counts objects gets 0.5 here;
- beside the methods, the **one-number references** (:func:`references`): the object count alone and
  HT alone, so a reader sees at once whether a model adds anything to them.

:func:`closure` measures whether a threshold chosen in a control region keeps its background
efficiency in the signal region (the CR -> SR transfer of docs/analysis.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from eventlm.analysis.features import variables_of
from eventlm.metrics import Metrics, auc, effective_count, evaluate

#: The one-number references every table shows: label -> event variable.
REFERENCES = {"object count": "n_particles", "HT": "ht"}
#: Least events of each kind in an object-count class for it to enter the length-matched AUC.
MIN_CLASS_EVENTS = 30
WORKING_POINTS = (1e-2, 1e-3)


def references(events: ak.Array) -> dict[str, np.ndarray]:
    """The reference scores of :data:`REFERENCES` for ``events`` (float64 arrays)."""
    v = variables_of(events)
    return {label: np.asarray(v[name], dtype=np.float64) for label, name in REFERENCES.items()}


def _class_aucs(sb, ss, nb, ns, wb, ws, min_events):
    """The AUC of every object-count class with ``min_events`` *effective* events of each kind and
    positive summed weights (with signed weights a class of a few events can sum to <= 0: no AUC)."""
    values, weights = [], []
    for n in np.unique(ns):
        b, s = nb == n, ns == n
        if (b.sum() >= min_events and s.sum() >= min_events and wb[b].sum() > 0 and ws[s].sum() > 0
                and effective_count(wb[b]) >= min_events and effective_count(ws[s]) >= min_events):
            values.append(auc(sb[b], ss[s], wb[b], ws[s]))
            weights.append(float(ws[s].sum()))
    return values, weights


def stratified_auc(scores_b, scores_s, n_b, n_s, weights_b=None, weights_s=None, *,
                   min_events: int = MIN_CLASS_EVENTS, n_bootstrap: int = 50, seed: int = 0):
    """Length-matched AUC: the AUC within each object-count class, averaged over classes.

    Classes are single object counts with at least ``min_events`` effective background and signal
    events and positive summed weights; the average is weighted by the signal weight in each class.
    Returns ``(value, error, fraction)``: the bootstrap standard deviation and the fraction of the
    signal weight in the classes used; ``value`` is None if no class qualifies or if the negative
    weights put the average outside [0, 1] (:func:`why_no_stratified_auc` says which).
    """
    sb, ss = np.asarray(scores_b, np.float64), np.asarray(scores_s, np.float64)
    nb, ns = np.asarray(n_b), np.asarray(n_s)
    wb = np.ones(len(sb)) if weights_b is None else np.asarray(weights_b, np.float64)
    ws = np.ones(len(ss)) if weights_s is None else np.asarray(weights_s, np.float64)
    values, weights = _class_aucs(sb, ss, nb, ns, wb, ws, min_events)
    if not values:
        return None, None, 0.0
    value = float(np.average(values, weights=weights))
    if not 0.0 <= value <= 1.0:
        return None, None, 0.0
    fraction = float(np.sum(weights) / ws.sum())
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(n_bootstrap):
        ib, is_ = rng.integers(0, len(sb), len(sb)), rng.integers(0, len(ss), len(ss))
        v, w = _class_aucs(sb[ib], ss[is_], nb[ib], ns[is_], wb[ib], ws[is_], min_events)
        if v:
            boot.append(np.average(v, weights=w))
    error = float(np.std(boot, ddof=1)) if len(boot) > 1 else None
    return value, error, fraction


def why_no_stratified_auc(scores_b, scores_s, n_b, n_s, weights_b=None, weights_s=None, *,
                          min_events: int = MIN_CLASS_EVENTS) -> str:
    """The one-line reason :func:`stratified_auc` gave ``None``."""
    sb, ss = np.asarray(scores_b, np.float64), np.asarray(scores_s, np.float64)
    wb = np.ones(len(sb)) if weights_b is None else np.asarray(weights_b, np.float64)
    ws = np.ones(len(ss)) if weights_s is None else np.asarray(weights_s, np.float64)
    values, weights = _class_aucs(sb, ss, np.asarray(n_b), np.asarray(n_s), wb, ws, min_events)
    if not values:
        return (f"no object-count class holds {min_events} effective background and signal events with "
                "positive summed weights")
    return (f"the negative weights put the class average at {np.average(values, weights=weights):.4f}, "
            "outside [0, 1]")


@dataclass
class MethodResult:
    """One method on one signal: the pooled metrics and the length-matched AUC."""

    metrics: Metrics
    stratified: float | None
    stratified_error: float | None
    stratified_fraction: float
    kind: str = "method"  # method | reference | upper bound

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(), "stratified_auc": self.stratified,
                "stratified_auc_error": self.stratified_error, "stratified_fraction": self.stratified_fraction,
                "kind": self.kind}


@dataclass
class SignalComparison:
    signal: str
    methods: dict[str, MethodResult] = field(default_factory=dict)
    mean_objects: tuple[float, float] = (0.0, 0.0)  # background, signal

    def to_dict(self) -> dict:
        return {"signal": self.signal, "mean_objects": list(self.mean_objects),
                "methods": {k: v.to_dict() for k, v in self.methods.items()}}


def compare(signal: str, methods: Mapping[str, tuple], n_b, n_s, weights_b=None, weights_s=None, *,
            kinds: Mapping[str, str] | None = None, n_bootstrap: int = 100, seed: int = 0) -> SignalComparison:
    """Every figure of merit of every ``methods[name] = (scores_b, scores_s)`` on one signal.

    ``n_b``/``n_s``: the object counts of the background and signal events (for the length-matched
    AUC). A method may bring its own events as ``(scores_b, scores_s, n_b, n_s, w_b, w_s)`` (the
    supervised upper bound is evaluated on held-out signal only).
    """
    out = SignalComparison(signal, mean_objects=(float(np.mean(n_b)), float(np.mean(n_s))))
    for name, entry in methods.items():
        sb, ss = entry[0], entry[1]
        nb, ns, wb, ws = (entry[2:6] if len(entry) == 6 else (n_b, n_s, weights_b, weights_s))
        out.methods[name] = measure(sb, ss, nb, ns, wb, ws, n_bootstrap=n_bootstrap, seed=seed,
                                    kind=(kinds or {}).get(name, "method"))
    return out


def measure(scores_b, scores_s, n_b, n_s, weights_b=None, weights_s=None, *, working_points=WORKING_POINTS,
            n_bootstrap: int = 100, seed: int = 0, kind: str = "method") -> MethodResult:
    """One method on one signal: the pooled figures of merit and the length-matched AUC (with half as
    many bootstrap resamplings: it is an average over classes, each resampled)."""
    m = evaluate(scores_b, scores_s, weights_b, weights_s, working_points=working_points,
                 n_bootstrap=n_bootstrap, seed=seed)
    st, st_err, frac = stratified_auc(scores_b, scores_s, n_b, n_s, weights_b, weights_s,
                                      n_bootstrap=max(n_bootstrap // 2, 2), seed=seed)
    if st is None:
        m.undefined["length_matched_auc"] = why_no_stratified_auc(scores_b, scores_s, n_b, n_s, weights_b, weights_s)
    return MethodResult(m, st, st_err, frac, kind)


def _fmt(value, error=None, digits=3) -> str:
    if value is None:
        return "n/a"
    if error is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {error:.{digits}f}"


def comparison_table(comp: SignalComparison, *, title: str | None = None) -> str:
    """One Markdown table: a row per method, references and the upper bound marked."""
    nb, ns = comp.mean_objects
    lines = [f"#### {title or comp.signal}", "",
             f"Mean object count: background {nb:.2f}, signal {ns:.2f}.", "",
             "| method | ROC-AUC | length-matched AUC | ε_S @ ε_B=1e-2 | ε_S @ ε_B=1e-3 | max SIC |",
             "|---|---|---|---|---|---|"]
    for name, r in comp.methods.items():
        label = {"reference": f"*{name} alone*", "upper bound": f"*{name} (upper bound)*"}.get(r.kind, name)
        v, e = r.metrics.values, r.metrics.errors
        lines.append(
            f"| {label} | {_fmt(v['auc'], e.get('auc'))} | {_fmt(r.stratified, r.stratified_error)} | "
            f"{_fmt(v.get('eff_s@0.01'), e.get('eff_s@0.01'))} | {_fmt(v.get('eff_s@0.001'), e.get('eff_s@0.001'))} | "
            f"{_fmt(v.get('sic_max'), e.get('sic_max'), 2)} |"
        )
    return "\n".join(lines) + "\n"


def closure(scores_b, in_cr, in_sr, weights_b=None, *, efficiency: float = 0.01) -> dict[str, float]:
    """Background efficiency in the SR at the threshold that keeps ``efficiency`` of the CR background
    (:func:`eventlm.analysis.transfer.closure_ratio`, which also gives bootstrap errors).

    Returns ``{"cr": ..., "sr": ..., "ratio": sr / cr, "threshold": ...}``; a score whose threshold
    transfers from CR to SR has ratio 1.
    """
    from eventlm.analysis.transfer import closure_ratio, efficiency as efficiency_of, threshold_at

    s = np.asarray(scores_b, np.float64)
    w = np.ones(len(s)) if weights_b is None else np.asarray(weights_b, np.float64)
    cr, sr = np.asarray(in_cr, bool), np.asarray(in_sr, bool)
    thr = threshold_at(s, w, cr, efficiency)
    if not sr.any():
        return {"cr": efficiency_of(s, w, cr, thr), "sr": float("nan"), "ratio": float("nan"), "threshold": thr}
    eff_cr, eff_sr, ratio = closure_ratio(s, w, cr, sr, efficiency)
    return {"cr": eff_cr, "sr": eff_sr, "ratio": ratio, "threshold": thr}
