"""Background prediction above the anomaly threshold in a region, from the control region.

The **ABCD method** over (region) x (below, above the threshold)::

    N_SR,above = N_SR,below * N_CR,above / N_CR,below

needs the threshold's background efficiency to be the same in both regions (the transferable score,
:mod:`eventlm.analysis.transfer`, is built for that). The **MC transfer factor** is the alternative:
``N_SR,above = N_CR,above(data) * N_SR,above(MC) / N_CR,above(MC)``; it rests on the simulation's
anomaly-score tail. Every count is a weighted yield at the study's luminosity with its statistical
error ``sqrt(sum w^2)`` (signed weights allowed); the errors of independent counts add in quadrature
relative to their values. The **non-closure** is measured on background MC in a validation region
(VR): the ABCD prediction there, from the VR's below-threshold count and the CR events outside the VR,
against the MC above the threshold; the relative uncertainty the SR prediction then carries is
``max(|pred / MC - 1|, its statistical error)`` (a closure cannot be known better than it is tested).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from eventlm.errors import EventlmError


class ABCDError(EventlmError, ValueError):
    """A region without events on one side of the threshold: no ABCD prediction (``eventlm analyze``
    says it in one line and which [statistics] setting to change)."""


@dataclass(frozen=True)
class Count:
    """A weighted yield and its statistical error ``sqrt(sum w^2)``, both at the study's luminosity."""

    value: float
    error: float
    n_events: int  # unweighted

    @classmethod
    def of(cls, weights, mask, lumi_scale: float = 1.0) -> Count:
        w = np.asarray(weights, np.float64)[np.asarray(mask, bool)]
        return cls(float(w.sum() * lumi_scale), float(math.sqrt(float((w ** 2).sum())) * lumi_scale), int(len(w)))

    @property
    def relative(self) -> float:
        return self.error / self.value if self.value > 0 else float("inf")


@dataclass(frozen=True)
class Counts:
    """One region split at the threshold."""

    region: str
    below: Count
    above: Count

    @classmethod
    def of(cls, region: str, scores, weights, mask, threshold: float, lumi_scale: float = 1.0) -> Counts:
        mask = np.asarray(mask, bool)
        above = np.asarray(scores, np.float64) >= threshold
        return cls(region, Count.of(weights, mask & ~above, lumi_scale), Count.of(weights, mask & above, lumi_scale))

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio_error(value: float, *counts: Count) -> float:
    return abs(value) * math.sqrt(sum(c.relative ** 2 for c in counts))


@dataclass(frozen=True)
class Prediction:
    """The background above the threshold in ``region``, predicted from ``reference``, and the MC."""

    region: str
    reference: str
    abcd: float
    abcd_stat: float
    transfer: float  # MC transfer factor
    transfer_stat: float
    mc: float
    mc_stat: float
    nonclosure: float = 0.0  # relative uncertainty from the validation region (0: none assigned)

    @property
    def abcd_error(self) -> float:
        return math.hypot(self.abcd_stat, self.nonclosure * self.abcd)

    @property
    def closure(self) -> float:
        """``pred / MC - 1``."""
        return self.abcd / self.mc - 1.0 if self.mc > 0 else float("nan")

    @property
    def closure_error(self) -> float:
        """Statistical error of :attr:`closure` (prediction and MC counts independent)."""
        if self.mc <= 0 or self.abcd <= 0:
            return float("nan")
        return (self.abcd / self.mc) * math.hypot(self.abcd_stat / self.abcd, self.mc_stat / self.mc)

    def to_dict(self) -> dict:
        return {**asdict(self), "abcd_error": self.abcd_error, "closure": self.closure,
                "closure_error": self.closure_error}


def predict(target: Counts, reference: Counts, *, target_mc: Counts | None = None, reference_mc: Counts | None = None,
            nonclosure: float = 0.0) -> Prediction:
    """ABCD and MC-transfer-factor predictions of ``target.above`` from the data counts ``target`` and
    ``reference``; ``*_mc`` are the simulation's (default: the data counts themselves, for pseudo-data
    that is the background MC)."""
    target_mc = target_mc or target
    reference_mc = reference_mc or reference
    b, c, d = target.below, reference.above, reference.below
    if min(b.value, c.value, d.value) <= 0:
        raise ABCDError(f"ABCD for {target.region} needs positive yields below the threshold in {target.region} "
                         f"and below and above it in {reference.region}; got {b.value:.3g}, {d.value:.3g} "
                         f"and {c.value:.3g} (raise [statistics] background_efficiency or widen the regions)")
    abcd = b.value * c.value / d.value
    a_mc, c_mc = target_mc.above, reference_mc.above
    tf = a_mc.value / c_mc.value
    transfer = c.value * tf
    return Prediction(target.region, reference.region, abcd, _ratio_error(abcd, b, c, d), transfer,
                      _ratio_error(transfer, c, a_mc, c_mc) if a_mc.value > 0 else float("nan"),
                      a_mc.value, a_mc.error, nonclosure)


def nonclosure_uncertainty(closure: float, closure_error: float) -> float:
    """The relative uncertainty a measured closure ``pred/MC - 1 = closure ± closure_error`` assigns."""
    return float(max(abs(closure), closure_error))


__all__ = ["ABCDError", "Count", "Counts", "Prediction", "nonclosure_uncertainty", "predict"]
