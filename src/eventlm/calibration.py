"""Background calibration of an event score per object-count class (pure numpy, no torch).

A likelihood score rises or falls with the number of objects, so a threshold chosen in a control
region of few jets selects another fraction of background in a signal region of many. Calibrating the
score on background inside each object-count class removes that dependence::

    calibrated = -log10 S_c(score),     S_c(x) = P(score >= x | background, class c)

``S_c`` is the empirical survival function of the class on held-out background (the model's
validation split), with an exponential tail above its 98th percentile so the calibrated score keeps
ordering events beyond the largest background score seen. In background the calibrated score has the
same distribution in every class (``P(calibrated >= k) = 10^-k``), so a threshold on it selects the
same background efficiency in every region built from object counts.

Classes are object counts, adjacent counts merged until each class holds at least ``min_events``
calibration events; counts below the first class or above the last one use the nearest class.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

#: Survival probabilities at which each class stores its score quantile (dense in the upper tail).
SURVIVAL_GRID = np.concatenate([np.linspace(1.0, 0.2, 17), [0.15, 0.1, 0.07, 0.05, 0.03, 0.02]])
#: Above this survival probability's quantile the tail is exponential.
TAIL_SURVIVAL = 0.02
#: Least calibration events per class.
MIN_CLASS_EVENTS = 300


@dataclass(frozen=True)
class ScoreCalibration:
    """Per-class survival functions of one score column (see the module docstring)."""

    score: str  # the calibrated column, e.g. "anomaly_score"
    lower: tuple[int, ...]  # class i holds object counts lower[i] .. lower[i+1]-1 (the last: and above)
    quantiles: tuple[tuple[float, ...], ...]  # class i: the score at each SURVIVAL_GRID probability
    tail_scale: tuple[float, ...]  # class i: mean excess above its TAIL_SURVIVAL quantile
    n_events: tuple[int, ...]
    grid: tuple[float, ...] = tuple(SURVIVAL_GRID.tolist())  # the survival probabilities of ``quantiles``
    #: the default ``anomaly_score``'s calibration (:class:`DefaultScore`), fitted with this one
    default: DefaultScore | None = None

    @classmethod
    def fit(cls, score: str, values, n_objects, *, min_events: int = MIN_CLASS_EVENTS) -> ScoreCalibration:
        values = np.asarray(values, dtype=np.float64)
        n_objects = np.asarray(n_objects, dtype=np.int64)
        if len(values) != len(n_objects) or len(values) == 0:
            raise ValueError("calibration needs one object count per score and at least one event")
        if not np.isfinite(values).all():
            raise ValueError("calibration scores must be finite")
        first = int(n_objects.min())
        lower, acc = [first], 0
        for offset, c in enumerate(np.bincount(n_objects - first)):
            if acc >= min_events:  # the current class is full: the next one starts at this count
                lower.append(first + offset)
                acc = 0
            acc += int(c)
        if len(lower) > 1 and acc < min_events:  # the last class is too small: merge it downwards
            lower.pop()
        quantiles, scales, sizes = [], [], []
        cls_of = np.searchsorted(np.asarray(lower), n_objects, side="right") - 1
        cls_of = np.clip(cls_of, 0, len(lower) - 1)
        for i in range(len(lower)):
            v = np.sort(values[cls_of == i])
            q = np.quantile(v, 1.0 - SURVIVAL_GRID)
            x0 = q[-1]
            excess = v[v > x0] - x0
            scale = float(excess.mean()) if len(excess) else float(np.std(v) or 1.0)
            quantiles.append(tuple(float(x) for x in q))
            scales.append(max(scale, 1e-6))
            sizes.append(len(v))
        return cls(score, tuple(lower), tuple(quantiles), tuple(scales), tuple(sizes))

    def class_of(self, n_objects) -> np.ndarray:
        n_objects = np.asarray(n_objects, dtype=np.int64)
        return np.clip(np.searchsorted(np.asarray(self.lower), n_objects, side="right") - 1, 0, len(self.lower) - 1)

    def survival(self, values, n_objects) -> np.ndarray:
        """Background survival probability of each score within its object-count class."""
        values = np.asarray(values, dtype=np.float64)
        cls_of = self.class_of(n_objects)
        out = np.empty(len(values))
        for i, q in enumerate(self.quantiles):
            sel = cls_of == i
            if not sel.any():
                continue
            x = values[sel]
            q = np.asarray(q)
            # np.interp needs increasing x: the quantiles increase as the survival falls
            grid = np.asarray(self.grid)
            s = np.interp(x, q, grid, left=1.0, right=grid[-1])
            above = x > q[-1]
            s[above] = grid[-1] * np.exp(-(x[above] - q[-1]) / self.tail_scale[i])
            out[sel] = s
        return out

    def transform(self, values, n_objects) -> np.ndarray:
        """``-log10`` of :meth:`survival` (float32): 0 for the background's bulk, 2 at its top 1 %.

        An event with fewer objects than the calibration's lowest class holds gets NaN: no background
        event of its object count was seen, so no tail fraction is known (it used to be put in the
        lowest class and read as typical). Never ``-0``."""
        out = -np.log10(np.clip(self.survival(values, n_objects), 1e-300, 1.0)) + 0.0  # + 0.0: no -0
        out[np.asarray(n_objects, dtype=np.int64) < self.lower[0]] = np.nan
        return out.astype(np.float32)

    def with_default(self, default: DefaultScore | None) -> ScoreCalibration:
        return dataclasses.replace(self, default=default)

    def to_dict(self) -> dict:
        out = {"score": self.score, "lower": list(self.lower), "quantiles": [list(q) for q in self.quantiles],
               "tail_scale": list(self.tail_scale), "n_events": list(self.n_events),
               "survival_grid": list(self.grid)}
        if self.default is not None:
            out["default"] = self.default.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ScoreCalibration:
        grid = tuple(float(x) for x in data["survival_grid"])
        quantiles = tuple(tuple(float(x) for x in q) for q in data["quantiles"])
        if any(len(q) != len(grid) for q in quantiles):
            raise ValueError("calibration: every class needs one quantile per survival probability")
        numbers = [*grid, *(x for q in quantiles for x in q), *(float(x) for x in data["tail_scale"])]
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError("calibration: a quantile, tail scale or survival probability is not finite")
        default = DefaultScore.from_dict(data["default"]) if data.get("default") is not None else None
        return cls(str(data["score"]), tuple(int(x) for x in data["lower"]), quantiles,
                   tuple(float(x) for x in data["tail_scale"]), tuple(int(x) for x in data["n_events"]), grid,
                   default)



class Multiplicity:
    """The background's object-count distribution: ``-log p(n)``, the count term of a masked score.

    Fitted on the training events' particle counts (after truncation to ``max_particles``), with
    add-one smoothing so an object count never seen in training costs ``log(N + K)``, not infinity.
    """

    def __init__(self, counts):
        self.counts = np.asarray(counts, dtype=np.int64)

    @classmethod
    def fit(cls, n_objects, max_objects: int) -> Multiplicity:
        n = np.clip(np.asarray(n_objects, dtype=np.int64), 0, max_objects)
        return cls(np.bincount(n, minlength=max_objects + 1))

    def nll(self, n_objects) -> np.ndarray:
        """``-log p(n)`` per event (natural log, float64)."""
        k = len(self.counts)
        p = (self.counts + 1.0) / (self.counts.sum() + k)
        n = np.clip(np.asarray(n_objects, dtype=np.int64), 0, k - 1)
        return -np.log(p[n])

    def to_list(self) -> list[int]:
        return self.counts.tolist()


#: The default combination's norm: ``q`` of ``(sum_i (-ln p_i)^q)^(1/q)`` over the terms' background
#: tail probabilities (q = 1: Fisher's product of p-values, q -> inf: the smallest p-value). Chosen on
#: the validation signals, never on the test signals (docs/method.md, docs/results.md).
DEFAULT_Q = 2.0
#: The weight of the likelihood's term in the default combination: ``t = ((w a)^q + b^q)^(1/q)`` with
#: ``a = -ln p_nll``, ``b = -ln p_scale`` (chosen with ``q``, on the validation signals).
DEFAULT_NLL_WEIGHT = 1.5


def _one_class(values) -> np.ndarray:
    return np.zeros(len(values), dtype=np.int64)


@dataclass(frozen=True)
class DefaultScore:
    """``anomaly_score``: the event's likelihood and its energy scale, each as a background tail
    probability, combined, and calibrated once more on background (docs/method.md).

    - ``p_nll = P(anomaly_score_nll' >= anomaly_score_nll | background)``: how improbable the whole event is under the
      model (the object count included);
    - ``p_scale = P(S_T' >= S_T | background, same object count)``: how hard the event is for its object
      count, with ``S_T`` the scalar sum of the decoded pT of the event's tokens plus the decoded MET
      (what the model sees, in GeV);
    - the statistic ``t = ((w (-ln p_nll))^q + (-ln p_scale)^q)^(1/q)``;
    - ``anomaly_score = -log10 P(t' >= t | background)``: 2 means 1 % of background scores higher.

    ``nll`` and ``final`` are fitted on the model's held-out validation rows; ``scale`` (a property of
    the events, not of the weights) on its training and validation rows.
    """

    nll: ScoreCalibration
    scale: ScoreCalibration
    final: ScoreCalibration
    q: float = DEFAULT_Q
    nll_weight: float = DEFAULT_NLL_WEIGHT

    @staticmethod
    def statistic(p_nll, p_scale, q: float, nll_weight: float = DEFAULT_NLL_WEIGHT) -> np.ndarray:
        a = nll_weight * -np.log(np.clip(np.asarray(p_nll, dtype=np.float64), 1e-300, 1.0))
        b = -np.log(np.clip(np.asarray(p_scale, dtype=np.float64), 1e-300, 1.0))
        if math.isinf(q):
            return np.maximum(a, b)
        return (a ** q + b ** q) ** (1.0 / q)

    @classmethod
    def fit(cls, nll, scale, n_objects, *, scale_rows=None, q: float = DEFAULT_Q,
            nll_weight: float = DEFAULT_NLL_WEIGHT) -> DefaultScore:
        """Fit on the held-out rows' ``nll``, ``scale`` (``S_T``) and ``n_objects``. ``scale_rows``:
        ``(scale, n_objects)`` of more background rows to calibrate the scale on (default: the same)."""
        nll = np.asarray(nll, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        n_objects = np.asarray(n_objects, dtype=np.int64)
        s_fit, n_fit = (scale, n_objects) if scale_rows is None else scale_rows
        cal_nll = ScoreCalibration.fit("anomaly_score_nll", nll, _one_class(nll))
        cal_scale = ScoreCalibration.fit("scale", s_fit, n_fit)
        t = cls.statistic(cal_nll.survival(nll, _one_class(nll)), cal_scale.survival(scale, n_objects), q,
                          nll_weight)
        final = ScoreCalibration.fit("combined", t, _one_class(t))
        return cls(cal_nll, cal_scale, final, float(q), float(nll_weight))

    def terms(self, nll, scale, n_objects) -> tuple[np.ndarray, np.ndarray]:
        """``(p_nll, p_scale)`` per event."""
        nll = np.asarray(nll, dtype=np.float64)
        return (self.nll.survival(nll, _one_class(nll)),
                self.scale.survival(np.asarray(scale, dtype=np.float64), np.asarray(n_objects, dtype=np.int64)))

    def transform(self, nll, scale, n_objects) -> np.ndarray:
        """``anomaly_score`` (float32, finite, >= 0) of each event."""
        t = self.statistic(*self.terms(nll, scale, n_objects), self.q, self.nll_weight)
        return self.final.transform(t, _one_class(t))  # one class from 0: never NaN

    def to_dict(self) -> dict:
        return {"rule": "lq_of_tail_probabilities", "q": None if math.isinf(self.q) else self.q,
                "nll_weight": self.nll_weight,
                "nll": self.nll.to_dict(), "scale": self.scale.to_dict(), "final": self.final.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> DefaultScore:
        if data.get("rule") != "lq_of_tail_probabilities":
            raise ValueError(f"default score rule {data.get('rule')!r} is unknown")
        q = math.inf if data["q"] is None else float(data["q"])
        if not q >= 1.0:
            raise ValueError(f"default score: q = {q} (needs q >= 1)")
        weight = float(data["nll_weight"])
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"default score: nll_weight = {weight} (needs a positive number)")
        return cls(ScoreCalibration.from_dict(data["nll"]), ScoreCalibration.from_dict(data["scale"]),
                   ScoreCalibration.from_dict(data["final"]), q, weight)
