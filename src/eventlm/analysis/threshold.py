"""The anomaly threshold: chosen in the control region (CR), applied in the signal region (SR).

Criteria (``method``), both computed on the weighted CR score distributions of background and of the
injected signal, an event being flagged when ``score >= threshold``:

- ``"youden"``: maximise Youden's J = eff_S - eff_B, the point of the ROC curve farthest above the
  diagonal. For two densities this is where they cross (the likelihood ratio equals the ratio of the
  totals), so it is the score that best separates CR background from CR signal. Because it uses
  efficiencies, it does not depend on how much signal is injected into the CR, only on its shape.
- ``"background_efficiency"``: the lowest threshold whose CR background efficiency does not exceed
  ``background_efficiency`` (a fixed false-positive rate, e.g. 1e-2); this needs no signal at all.

In the SR the threshold gives signal and background yields ``s`` and ``b`` (weighted, scaled to the
luminosity), their efficiencies, ``s / sqrt(b)`` and the Asimov significance
``Z_A = sqrt(2 ((s + b) ln(1 + s/b) - s))``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from eventlm.metrics import roc_curve

METHODS = ("youden", "background_efficiency")


@dataclass(frozen=True)
class Threshold:
    """A chosen threshold and the CR efficiencies it gives."""

    value: float
    method: str
    eff_b: float
    eff_s: float

    @property
    def youden_j(self) -> float:
        return self.eff_s - self.eff_b


def choose_threshold(
    scores_b,
    scores_s=None,
    weights_b=None,
    weights_s=None,
    *,
    method: str = "youden",
    background_efficiency: float = 0.01,
) -> Threshold:
    """Choose the threshold on CR scores; see the module docstring for the criteria."""
    if method not in METHODS:
        raise ValueError(f"threshold method {method!r} is not one of {METHODS}")
    scores_b = np.asarray(scores_b, dtype=np.float64)
    if method == "background_efficiency":
        if not 0 < background_efficiency < 1:
            raise ValueError(f"background_efficiency must be in (0, 1), got {background_efficiency}")
        if scores_s is None or len(scores_s) == 0:  # no signal needed: use the background alone
            scores_s, weights_s = scores_b[:1], None
        roc = roc_curve(scores_b, scores_s, weights_b, weights_s)
        # the last threshold before the background efficiency first exceeds the target (with signed
        # weights the curve is not monotone: a later dip below the target is not a valid choice)
        over = np.nonzero(roc.eff_b > background_efficiency + 1e-12)[0]
        i = int(over[0]) - 1 if len(over) else len(roc.eff_b) - 1
        if i == 0:  # even the highest score exceeds the target: select nothing beyond the maximum
            return Threshold(float(np.nextafter(roc.thresholds[1], np.inf)), method, 0.0, 0.0)
    else:
        if scores_s is None or len(scores_s) == 0:
            raise ValueError("Youden's J needs signal events in the control region")
        roc = roc_curve(scores_b, scores_s, weights_b, weights_s)
        j = roc.eff_s - roc.eff_b
        # only points whose efficiencies are efficiencies (signed weights can leave [0, 1])
        valid = (roc.eff_s >= 0) & (roc.eff_s <= 1) & (roc.eff_b >= 0) & (roc.eff_b <= 1)
        valid[0] = False  # skip the (0, 0) point at threshold +inf
        if not valid.any():
            raise ValueError("no threshold of the control region gives efficiencies in [0, 1] with these weights")
        i = int(np.argmax(np.where(valid, j, -np.inf)))
    return Threshold(float(roc.thresholds[i]), method, float(roc.eff_b[i]), float(roc.eff_s[i]))


def asimov_significance(s: float, b: float) -> float | None:
    """``Z_A = sqrt(2 ((s + b) ln(1 + s/b) - s))``; ``None`` when ``b <= 0`` (undefined)."""
    if b <= 0:
        return None
    if s <= 0:
        return 0.0
    return math.sqrt(max(0.0, 2.0 * ((s + b) * math.log1p(s / b) - s)))


@dataclass(frozen=True)
class RegionYields:
    """What the threshold does to one region: weighted yields before and after, and significances."""

    region: str
    threshold: float
    s_total: float
    b_total: float
    s: float
    b: float
    n_s: int  # unweighted events passing
    n_b: int
    data_total: int | None = None  # collision-data events in the region (None: the study has no data)
    data: int | None = None  # of them passing the threshold

    @property
    def eff_s(self) -> float | None:
        """``s / s_total``; None when not an efficiency (total <= 0, or outside [0, 1] with signed weights)."""
        return _efficiency(self.s, self.s_total)

    @property
    def eff_b(self) -> float | None:
        return _efficiency(self.b, self.b_total)

    @property
    def undefined(self) -> dict[str, str]:
        """Why a figure of this region is ``None``: one line each."""
        out = {}
        for key, part, total, what in (("eff_s", self.s, self.s_total, "signal"),
                                       ("eff_b", self.b, self.b_total, "background")):
            if _efficiency(part, total) is None:
                out[key] = (f"the summed {what} weight in {self.region} is {total:.4g}" if total <= 0 else
                            f"{what} {part:.4g} of {total:.4g} passes: outside [0, 1] (negative weights)")
        if self.b <= 0:
            out["z_asimov"] = f"the background above the threshold in {self.region} is {self.b:.4g} (not positive)"
        return out

    @property
    def s_over_sqrt_b(self) -> float | None:
        return self.s / math.sqrt(self.b) if self.b > 0 else None

    @property
    def z_asimov(self) -> float | None:
        return asimov_significance(self.s, self.b)

    @property
    def z_asimov_before(self) -> float | None:
        return asimov_significance(self.s_total, self.b_total)

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("eff_s", "eff_b", "s_over_sqrt_b", "z_asimov", "z_asimov_before", "undefined"):
            out[key] = getattr(self, key)
        return out


def _efficiency(part: float, total: float) -> float | None:
    if not total > 0:
        return None
    value = part / total
    return value if 0.0 <= value <= 1.0 else None


def region_yields(
    region: str,
    threshold: float,
    scores_b,
    scores_s,
    weights_b=None,
    weights_s=None,
    *,
    lumi_scale: float = 1.0,
    data=None,
) -> RegionYields:
    """Yields above ``threshold`` in one region; weights are multiplied by ``lumi_scale`` (1 in
    ``eventlm analyze``: its weights are already at the study luminosity). ``data``: the scores of the
    collision-data events in the region (counted, not weighted)."""
    scores_b = np.asarray(scores_b, dtype=np.float64)
    scores_s = np.asarray(scores_s, dtype=np.float64)
    w_b = np.ones_like(scores_b) if weights_b is None else np.asarray(weights_b, dtype=np.float64)
    w_s = np.ones_like(scores_s) if weights_s is None else np.asarray(weights_s, dtype=np.float64)
    pass_b = scores_b >= threshold
    pass_s = scores_s >= threshold
    return RegionYields(
        region=region,
        threshold=float(threshold),
        s_total=float(w_s.sum() * lumi_scale),
        b_total=float(w_b.sum() * lumi_scale),
        s=float(w_s[pass_s].sum() * lumi_scale),
        b=float(w_b[pass_b].sum() * lumi_scale),
        n_s=int(pass_s.sum()),
        n_b=int(pass_b.sum()),
        data_total=None if data is None else int(len(data)),
        data=None if data is None else int(np.count_nonzero(np.asarray(data, dtype=np.float64) >= threshold)),
    )
