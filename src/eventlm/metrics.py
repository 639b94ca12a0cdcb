"""Figures of merit of an anomaly score: ROC curve, AUC, signal efficiency at fixed background
efficiency, significance improvement (SIC), with seeded bootstrap uncertainties.

Conventions (the Dark Machines ones): an event is *selected* when ``score >= threshold``; higher scores
are more anomalous; efficiencies are weighted (``sum w`` above threshold over ``sum w``).
``SIC = eff_S / sqrt(eff_B)``.

Signed weights (NLO generators: 10-30 % of the events weigh < 0). Every figure is the weighted one,
with the negative weights entering as they are (no clipping): the ROC curve's cumulative sums, the AUC
(the trapezoid over them is exactly the weighted Mann-Whitney statistic
``sum_ij w_i w_j [s_i > b_j] (+ ties / 2) / (W_S W_B)``), the efficiencies, the bootstrap. Such a
curve need not be monotone, so a working point is found at the *first* threshold (from the top) whose
background efficiency reaches it. A figure that the weights leave undefined is ``None`` with a
one-line reason in :attr:`Metrics.undefined`, never a clipped number: a total weight <= 0, fewer than
``1 / eff_B`` *effective* background events (Kish: ``(sum w)^2 / sum w^2``), an efficiency or an
AUC outside [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Background efficiencies at which the signal efficiency and the SIC are quoted.
WORKING_POINTS: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
#: The largest SIC is quoted only where at least this many (unweighted) background events pass.
SIC_MIN_BACKGROUND_EVENTS = 10


@dataclass(frozen=True)
class RocCurve:
    """Weighted efficiencies for every distinct threshold, thresholds descending.

    ``eff_b[i]`` and ``eff_s[i]`` are the fractions (by weight) with ``score >= thresholds[i]``;
    ``n_b[i]`` counts the background events (unweighted) that pass. The curve starts at (0, 0).
    """

    eff_b: np.ndarray
    eff_s: np.ndarray
    thresholds: np.ndarray
    n_b: np.ndarray
    #: effective (Kish) number of background events passing, ``(sum w)^2 / sum w^2`` (``n_b`` for unit
    #: weights); with signed weights a few events can cancel to a tiny efficiency: this tells
    n_eff_b: np.ndarray | None = None

    @property
    def auc(self) -> float:
        return float(np.trapezoid(self.eff_s, self.eff_b))


def effective_count(weights) -> float:
    """Kish's effective number of events ``(sum w)^2 / sum w^2`` (the event count for unit weights)."""
    w = np.asarray(weights, dtype=np.float64)
    sum_w2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / sum_w2 if sum_w2 > 0 else 0.0


def _as_weights(scores: np.ndarray, weights) -> np.ndarray:
    if weights is None:
        return np.ones(len(scores), dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != scores.shape:
        raise ValueError(f"weights of shape {weights.shape} for scores of shape {scores.shape}")
    return weights


def roc_curve(scores_b, scores_s, weights_b=None, weights_s=None) -> RocCurve:
    """ROC curve of background ``scores_b`` against signal ``scores_s`` (ties handled as one threshold)."""
    scores_b = np.asarray(scores_b, dtype=np.float64).ravel()
    scores_s = np.asarray(scores_s, dtype=np.float64).ravel()
    if len(scores_b) == 0 or len(scores_s) == 0:
        raise ValueError("a ROC curve needs at least one background and one signal event")
    if not (np.isfinite(scores_b).all() and np.isfinite(scores_s).all()):
        raise ValueError("scores contain NaN or inf")
    w_b = _as_weights(scores_b, weights_b)
    w_s = _as_weights(scores_s, weights_s)
    scores = np.concatenate([scores_b, scores_s])
    is_sig = np.concatenate([np.zeros(len(scores_b), bool), np.ones(len(scores_s), bool)])
    w = np.concatenate([w_b, w_s])
    order = np.argsort(-scores, kind="stable")
    scores, is_sig, w = scores[order], is_sig[order], w[order]
    cum_s = np.cumsum(np.where(is_sig, w, 0.0))
    cum_b = np.cumsum(np.where(is_sig, 0.0, w))
    cum_nb = np.cumsum(~is_sig)
    cum_b2 = np.cumsum(np.where(is_sig, 0.0, w * w))
    # the last index of every run of equal scores: a threshold selects all of them or none
    last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    total_b, total_s = cum_b[-1], cum_s[-1]
    if total_b <= 0 or total_s <= 0:
        raise ValueError("the total background and signal weights must be positive")
    return RocCurve(
        eff_b=np.r_[0.0, cum_b[last] / total_b],
        eff_s=np.r_[0.0, cum_s[last] / total_s],
        thresholds=np.r_[np.inf, scores[last]],
        n_b=np.r_[0, cum_nb[last]],
        n_eff_b=np.r_[0.0, np.divide(cum_b[last] ** 2, cum_b2[last], out=np.zeros(len(last)), where=cum_b2[last] > 0)],
    )


def auc(scores_b, scores_s, weights_b=None, weights_s=None) -> float:
    """Area under the ROC curve (0.5 = no separation, 1 = perfect; < 0.5 = signal less anomalous)."""
    return roc_curve(scores_b, scores_s, weights_b, weights_s).auc


def efficiency_at(roc: RocCurve, eff_b_target: float, *, n_background: float) -> float | None:
    """Signal efficiency at background efficiency ``eff_b_target``: linear interpolation between the
    last threshold below it and the first (from the top) that reaches it.

    ``None`` ("n/a") when the background sample is too small to reach the target (fewer than one
    background event would pass: ``eff_b_target * n_background < 1``, ``n_background`` the effective
    count with weights), when the curve never reaches it, or when the signal efficiency there lies
    outside [0, 1] (negative weights).
    """
    if eff_b_target * n_background < 1:
        return None
    reached = np.nonzero(roc.eff_b >= eff_b_target)[0]
    if len(reached) == 0:
        return None
    i = int(reached[0])
    if i == 0:
        value = float(roc.eff_s[0])
    else:
        x0, x1, y0, y1 = roc.eff_b[i - 1], roc.eff_b[i], roc.eff_s[i - 1], roc.eff_s[i]
        value = float(y1 if x1 == x0 else y0 + (y1 - y0) * (eff_b_target - x0) / (x1 - x0))
    return value if 0.0 <= value <= 1.0 else None


def sic_curve(roc: RocCurve, min_background_events: int = SIC_MIN_BACKGROUND_EVENTS):
    """``(eff_s, eff_s / sqrt(eff_b))`` at the thresholds that keep at least ``min_background_events``
    effective background events (below that the significance improvement is noise)."""
    n_b = roc.n_eff_b if roc.n_eff_b is not None else roc.n_b
    keep = ((n_b >= min_background_events - 1e-9) & (roc.eff_b > 0) & (roc.eff_b <= 1)
            & (roc.eff_s >= 0) & (roc.eff_s <= 1))  # signed weights can leave [0, 1]: not a point
    return roc.eff_s[keep], roc.eff_s[keep] / np.sqrt(roc.eff_b[keep])


def max_sic(roc: RocCurve, min_background_events: int = SIC_MIN_BACKGROUND_EVENTS) -> float | None:
    """The largest SIC among thresholds that keep at least ``min_background_events`` background events."""
    _, sic = sic_curve(roc, min_background_events)
    return float(sic.max()) if len(sic) else None


def _point_metrics(scores_b, scores_s, w_b, w_s, working_points, reasons: dict | None = None) -> dict[str, float | None]:
    """Every figure of merit at the full sample; ``reasons[key]`` says why a ``None`` is undefined."""
    reasons = {} if reasons is None else reasons
    keys = ["auc", *(f"{k}@{wp:g}" for wp in working_points for k in ("eff_s", "sic")), "sic_max"]
    for name, total in (("background", w_b.sum()), ("signal", w_s.sum())):
        if not total > 0:
            for k in keys:
                reasons[k] = f"the summed {name} weight is {total:.4g} (not positive)"
            return dict.fromkeys(keys)
    roc = roc_curve(scores_b, scores_s, w_b, w_s)
    out: dict[str, float | None] = {"auc": roc.auc}
    if not 0.0 <= roc.auc <= 1.0:
        reasons["auc"] = f"the negative weights put the weighted AUC at {roc.auc:.4f}, outside [0, 1]"
        out["auc"] = None
    n_eff = effective_count(w_b)
    for wp in working_points:
        eff = efficiency_at(roc, wp, n_background=n_eff)
        out[f"eff_s@{wp:g}"] = eff
        out[f"sic@{wp:g}"] = None if eff is None else eff / math.sqrt(wp)
        if eff is None:
            why = (f"fewer than 1/eff_B = {1 / wp:g} effective background events ({n_eff:.0f})" if wp * n_eff < 1
                   else "the weighted signal efficiency there lies outside [0, 1] (negative weights)")
            reasons[f"eff_s@{wp:g}"] = reasons[f"sic@{wp:g}"] = why
    out["sic_max"] = max_sic(roc)
    if out["sic_max"] is None:
        reasons["sic_max"] = (f"no threshold keeps {SIC_MIN_BACKGROUND_EVENTS} effective background events with both "
                              "efficiencies in (0, 1]")
    return out


@dataclass
class Metrics:
    """Values and bootstrap standard deviations of the figures of merit of one score on one signal."""

    values: dict[str, float | None]
    errors: dict[str, float | None] = field(default_factory=dict)
    n_background: int = 0
    n_signal: int = 0
    #: why a value is None (``"eff_s@0.0001": "fewer than 1/eff_B = 10000 effective background events"``)
    undefined: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"values": self.values, "errors": self.errors, "undefined": self.undefined,
                "n_background": self.n_background, "n_signal": self.n_signal}

    def format(self, key: str, digits: int = 3) -> str:
        """``"0.612 ± 0.004"`` or ``"n/a"``."""
        value = self.values.get(key)
        if value is None:
            return "n/a"
        err = self.errors.get(key)
        return f"{value:.{digits}f}" if err is None else f"{value:.{digits}f} ± {err:.{digits}f}"


def evaluate(
    scores_b,
    scores_s,
    weights_b=None,
    weights_s=None,
    *,
    working_points=WORKING_POINTS,
    n_bootstrap: int = 100,
    seed: int = 0,
) -> Metrics:
    """All figures of merit, with uncertainties from ``n_bootstrap`` resamplings (seeded).

    Background and signal are resampled independently with replacement; the error of a quantity is
    the standard deviation over the resamplings where it is defined (``None`` if it never is).
    """
    scores_b = np.asarray(scores_b, dtype=np.float64)
    scores_s = np.asarray(scores_s, dtype=np.float64)
    w_b = _as_weights(scores_b, weights_b)
    w_s = _as_weights(scores_s, weights_s)
    undefined: dict[str, str] = {}
    values = _point_metrics(scores_b, scores_s, w_b, w_s, working_points, undefined)
    errors: dict[str, float | None] = dict.fromkeys(values)
    if n_bootstrap > 1:
        rng = np.random.default_rng(seed)
        samples: dict[str, list[float]] = {k: [] for k in values}
        for _ in range(n_bootstrap):
            ib = rng.integers(0, len(scores_b), len(scores_b))
            is_ = rng.integers(0, len(scores_s), len(scores_s))
            point = _point_metrics(scores_b[ib], scores_s[is_], w_b[ib], w_s[is_], working_points)
            for k, v in point.items():
                if v is not None:
                    samples[k].append(v)
        for k, vs in samples.items():
            if values[k] is not None and len(vs) > 1:
                errors[k] = float(np.std(vs, ddof=1))
    return Metrics(values=values, errors=errors, n_background=len(scores_b), n_signal=len(scores_s),
                   undefined={k: v for k, v in undefined.items() if values.get(k) is None})
