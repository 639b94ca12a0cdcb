"""A score whose background efficiency transfers between regions (docs/statistics.md).

A threshold on ``anomaly_score`` chosen in a control region keeps another fraction of the background in
the signal region, because the likelihood of an event depends on the very variables the regions cut on
(the jet and b-jet counts of the bundled studies, HT or MET in others). The transferable score removes
that dependence where it matters, in the cells of the region variables::

    anomaly_score_transferable = -log10 S_c(anomaly_score),   S_c(x) = P_bkg(score >= x | cell c)

``S_c`` is the weighted empirical survival function of the background inside cell ``c`` (signed
weights allowed), with an exponential tail beyond the largest background score of the cell. A cell is
an *atom* of the region partition (the events that share the same membership in every configured
region) further split by the value of every count variable (``n_*``) the regions cut on; cells with
fewer than ``min_events`` background events are merged with their neighbour inside the same atom, so
every region is a union of cells. In background the transferable score then has the same
distribution in every region (``P(score >= k) = 10^-k``) and a threshold keeps the same background
efficiency in the CR, the VR and the SR.

The survival functions are fitted on the analysed background itself, **cross-fitted**: the events are
split into ``n_folds`` seeded folds and each fold's score comes from the survival functions of the
other folds, so no background event is calibrated on itself (signal events use every fold). The
variant ``anomaly_score_conditional`` conditions instead of calibrating: ``-log p(event | cell) =
anomaly_score + log P_bkg(cell)`` (the cell's background fraction, same folds); it keeps the score's
shape inside each cell and removes only the cell's prior (measured against each other in
docs/statistics.md).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from eventlm.analysis.regions import Region

TRANSFERABLE = "anomaly_score_transferable"
CONDITIONAL = "anomaly_score_conditional"
#: Least background events (unweighted) of a calibration cell.
MIN_CELL_EVENTS = 200
#: Fraction of a cell's weight at the top whose mean excess sets the exponential tail scale.
TAIL_FRACTION = 0.02


def region_variables(regions: Sequence[Region]) -> tuple[str, ...]:
    """The event variables the regions cut on, in order of first appearance."""
    names: list[str] = []
    for r in regions:
        found = []
        if r.selection:
            found += [n.id for n in ast.walk(ast.parse(r.selection, mode="eval")) if isinstance(n, ast.Name)]
        found += list(r.minimum) + list(r.maximum)
        names += [n for n in found if n not in names]
    return tuple(names)


def is_count(variable: str) -> bool:
    """A count variable (``n_jets``, ``n_bjets``, ...): cells per value."""
    return variable.startswith("n_")


@dataclass(frozen=True)
class Cells:
    """The calibration cells: ``key -> cell`` for the (atom, count values) keys of the background.

    ``atoms``: one boolean per configured region (membership); ``counts``: the values of the count
    variables. :meth:`of` assigns any event (background or signal) a cell: an unseen key goes to the
    nearest key of its atom (counts compared in order), an unseen atom to cell -1 (the inclusive one).
    """

    regions: tuple[Region, ...]
    counts: tuple[str, ...]
    keys: np.ndarray  # (n_keys, n_regions + n_counts) int64, sorted lexicographically
    cell_of_key: np.ndarray  # (n_keys,) int64
    n_cells: int

    @staticmethod
    def raw_keys(regions, counts, values: Mapping[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(values.values())))
        cols = [r.mask(values).astype(np.int64) for r in regions]
        cols += [np.asarray(values[c]).astype(np.int64) for c in counts]
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0), np.int64)

    @classmethod
    def fit(cls, regions: Sequence[Region], values: Mapping[str, np.ndarray], *, by_count: bool = True,
            min_events: int = MIN_CELL_EVENTS) -> Cells:
        regions = tuple(regions)
        counts = tuple(v for v in region_variables(regions) if is_count(v)) if by_count else ()
        raw = cls.raw_keys(regions, counts, values)
        keys, n_per_key = np.unique(raw, axis=0, return_counts=True)
        cell_of_key = np.empty(len(keys), np.int64)
        n_regions = len(regions)
        cell = -1
        start = 0
        while start < len(keys):  # one atom (same region flags) at a time, its keys in count order
            stop = start
            while stop < len(keys) and np.array_equal(keys[stop, :n_regions], keys[start, :n_regions]):
                stop += 1
            first_cell, acc = cell + 1, 0
            for i in range(start, stop):  # consecutive keys fill a cell up to min_events
                if i == start or acc >= min_events:
                    cell, acc = cell + 1, 0
                cell_of_key[i] = cell
                acc += int(n_per_key[i])
            if acc < min_events and cell > first_cell:  # the atom's last cell is small: merge it downwards
                cell_of_key[start:stop][cell_of_key[start:stop] == cell] = cell - 1
                cell -= 1
            start = stop
        return cls(regions, counts, keys, cell_of_key, cell + 1)

    def of(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        raw = self.raw_keys(self.regions, self.counts, values)
        out = np.full(len(raw), -1, np.int64)
        n_regions = len(self.regions)
        # keys as rows of a structured view: lexicographic searchsorted
        view = np.ascontiguousarray(self.keys).view([("", np.int64)] * self.keys.shape[1]).ravel()
        rview = np.ascontiguousarray(raw).view([("", np.int64)] * raw.shape[1]).ravel()
        pos = np.clip(np.searchsorted(view, rview), 0, len(self.keys) - 1)
        hit = (self.keys[pos] == raw).all(axis=1)
        out[hit] = self.cell_of_key[pos[hit]]
        for i in np.nonzero(~hit)[0]:  # an unseen key: the nearest key of the same atom
            same = np.nonzero((self.keys[:, :n_regions] == raw[i, :n_regions]).all(axis=1))[0]
            if len(same):
                d = np.abs(self.keys[same, n_regions:] - raw[i, n_regions:]).sum(axis=1)
                out[i] = self.cell_of_key[same[int(np.argmin(d))]]
        return out


class Survival:
    """Weighted empirical survival function of one cell, exponential beyond its largest score."""

    def __init__(self, scores, weights):
        s = np.asarray(scores, np.float64)
        w = np.asarray(weights, np.float64)
        order = np.argsort(s, kind="stable")
        s, w = s[order], w[order]
        total = w.sum()
        if len(s) == 0 or total <= 0:
            raise ValueError("a survival function needs events of positive total weight")
        above = np.cumsum(w[::-1])[::-1] / total  # P(score >= s_i)
        # signed weights can make it rise: keep it non-increasing and in (0, 1]
        above = np.minimum.accumulate(np.clip(above, 1e-12, 1.0))
        self.x, idx = np.unique(s, return_index=True)
        self.logs = np.log(above[idx])
        # tail scale: the weighted mean excess of the top TAIL_FRACTION over its lowest score
        x0 = s[min(int(np.searchsorted(np.cumsum(w) / total, 1 - TAIL_FRACTION)), len(s) - 1)]
        top = s >= x0
        excess = np.average(s[top] - x0, weights=np.abs(w[top])) if np.abs(w[top]).sum() > 0 else 0.0
        self.scale = float(max(excess, 1e-3 * (np.std(s) or 1.0), 1e-6))

    def log_survival(self, values) -> np.ndarray:
        v = np.asarray(values, np.float64)
        out = np.interp(v, self.x, self.logs, left=0.0)
        beyond = v > self.x[-1]
        out[beyond] = self.logs[-1] - (v[beyond] - self.x[-1]) / self.scale
        return out


@dataclass
class Calibration:
    """Per-cell survival functions (and background fractions) fitted on some background events."""

    cells: Cells
    survival: dict[int, Survival]  # cell -> survival; -1: every event (fallback)
    log_fraction: dict[int, float]  # cell -> log of its background weight fraction

    @classmethod
    def fit(cls, cells: Cells, scores, cell, weights) -> Calibration:
        survival = {-1: Survival(scores, weights)}
        total = float(np.sum(weights))
        log_fraction = {-1: 0.0}
        for c in range(cells.n_cells):
            sel = cell == c
            if sel.any() and weights[sel].sum() > 0:
                survival[c] = Survival(scores[sel], weights[sel])
                log_fraction[c] = float(np.log(weights[sel].sum() / total))
        return cls(cells, survival, log_fraction)

    def transferable(self, scores, cell) -> np.ndarray:
        out = np.empty(len(scores))
        for c in np.unique(cell):
            sel = cell == c
            out[sel] = -self.survival.get(int(c), self.survival[-1]).log_survival(scores[sel]) / np.log(10)
        return out

    def conditional(self, scores, cell) -> np.ndarray:
        return np.asarray(scores, np.float64) + _lookup(self.log_fraction, cell)


def _lookup(table: Mapping[int, float], cell: np.ndarray) -> np.ndarray:
    out = np.zeros(len(cell))
    for c in np.unique(cell):
        out[cell == c] = table.get(int(c), 0.0)
    return out


def folds_of(n: int, n_folds: int, seed: int) -> np.ndarray:
    """The seeded fold of each of ``n`` events (the one seed of the study drives it)."""
    return np.random.default_rng([seed, 21]).integers(0, n_folds, n)


def cross_fitted(cells: Cells, scores_b, cell_b, weights_b, folds) -> tuple[np.ndarray, np.ndarray]:
    """``(transferable, conditional)`` of the background, each fold's from the other folds' calibration."""
    t = np.empty(len(scores_b))
    c = np.empty(len(scores_b))
    for f in np.unique(folds):
        fit, apply = folds != f, folds == f
        cal = Calibration.fit(cells, scores_b[fit], cell_b[fit], weights_b[fit])
        t[apply] = cal.transferable(scores_b[apply], cell_b[apply])
        c[apply] = cal.conditional(scores_b[apply], cell_b[apply])
    return t, c


@dataclass
class TransferableScores:
    """The transferable and conditional scores of the background (cross-fitted) and of each signal."""

    cells: Cells
    background: dict[str, np.ndarray]  # TRANSFERABLE / CONDITIONAL -> per event
    signals: dict[str, dict[str, np.ndarray]]
    cell_background: np.ndarray
    folds: np.ndarray


def transferable_scores(regions: Sequence[Region], values_b: Mapping[str, np.ndarray], scores_b, weights_b,
                        signals: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]] = {}, *,
                        seed: int = 0, n_folds: int = 2, by_count: bool = True,
                        min_events: int = MIN_CELL_EVENTS) -> TransferableScores:
    """Both scores for a study: ``values_b`` are the background's event variables (at least the region
    variables), ``signals[name] = (values, scores)``."""
    scores_b = np.asarray(scores_b, np.float64)
    weights_b = np.asarray(weights_b, np.float64)
    cells = Cells.fit(regions, values_b, by_count=by_count, min_events=min_events * n_folds // max(n_folds - 1, 1))
    cell_b = cells.of(values_b)
    folds = folds_of(len(scores_b), n_folds, seed)
    t, c = cross_fitted(cells, scores_b, cell_b, weights_b, folds)
    full = Calibration.fit(cells, scores_b, cell_b, weights_b)
    out_s = {}
    for name, (values, scores) in signals.items():
        cell_s = cells.of(values)
        scores = np.asarray(scores, np.float64)
        out_s[name] = {TRANSFERABLE: full.transferable(scores, cell_s), CONDITIONAL: full.conditional(scores, cell_s)}
    return TransferableScores(cells, {TRANSFERABLE: t, CONDITIONAL: c}, out_s, cell_b, folds)


# --- closure ---------------------------------------------------------------------------------------

def threshold_at(scores, weights, mask, efficiency: float) -> float:
    """The lowest score whose weighted efficiency in ``mask`` does not exceed ``efficiency``."""
    s, w = np.asarray(scores, np.float64)[mask], np.asarray(weights, np.float64)[mask]
    order = np.argsort(-s, kind="stable")
    cum = np.cumsum(w[order]) / w.sum()
    k = int(np.searchsorted(cum, efficiency, side="right"))
    return float(s[order][max(k - 1, 0)]) if k > 0 else float(np.nextafter(s.max(), np.inf))


def efficiency(scores, weights, mask, threshold: float) -> float:
    w = np.asarray(weights, np.float64)[mask]
    return float(w[np.asarray(scores)[mask] >= threshold].sum() / w.sum())


def closure_ratio(scores, weights, in_cr, in_sr, eff_cr: float) -> tuple[float, float, float]:
    """``(eff_CR, eff_SR, eff_SR / eff_CR)`` at the threshold that keeps ``eff_cr`` of the CR background."""
    thr = threshold_at(scores, weights, in_cr, eff_cr)
    a, b = efficiency(scores, weights, in_cr, thr), efficiency(scores, weights, in_sr, thr)
    return a, b, (b / a if a > 0 else float("nan"))


@dataclass(frozen=True)
class Closure:
    """SR/CR background-efficiency ratio of one score at one CR efficiency, with its bootstrap error."""

    score: str
    target: float
    eff_cr: float
    eff_sr: float
    ratio: float
    error: float

    @property
    def pull(self) -> float:
        return (self.ratio - 1.0) / self.error if self.error > 0 else float("inf")

    def to_dict(self) -> dict:
        return {"score": self.score, "target": self.target, "eff_cr": self.eff_cr, "eff_sr": self.eff_sr,
                "ratio": self.ratio, "error": self.error, "pull": self.pull}


def bootstrap(fn: Callable[[np.ndarray], np.ndarray], n_events: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Standard deviation of ``fn(indices)`` (an array of numbers) over seeded resamplings of the events."""
    rng = np.random.default_rng([seed, 2121])
    values = [np.asarray(fn(rng.integers(0, n_events, n_events)), np.float64) for _ in range(n_bootstrap)]
    return np.nanstd(np.stack(values), axis=0, ddof=1)


def closures(scores: Mapping[str, np.ndarray | Callable[[np.ndarray], np.ndarray]], weights, in_cr, in_sr, *,
             targets=(0.1, 0.01), n_bootstrap: int = 100, seed: int = 0) -> list[Closure]:
    """The closure of every score at every CR efficiency in ``targets``, with bootstrap errors.

    ``scores[name]``: an array, or a function of resampled indices returning the score of those events
    (the transferable score is refitted on every resampling, so its error includes the calibration's)."""
    weights = np.asarray(weights, np.float64)
    n = len(weights)
    out = []
    for name, score in scores.items():
        of = score if callable(score) else (lambda idx, s=np.asarray(score): s[idx])

        def ratios(idx, of=of):
            s = of(idx)
            return [closure_ratio(s, weights[idx], in_cr[idx], in_sr[idx], t)[2] for t in targets]

        central = [closure_ratio(of(np.arange(n)), weights, in_cr, in_sr, t) for t in targets]
        errors = bootstrap(ratios, n, n_bootstrap, seed)
        out += [Closure(name, t, c[0], c[1], c[2], float(e)) for t, c, e in zip(targets, central, errors)]
    return out


def refit_transferable(regions, values_b, scores_b, weights_b, *, seed: int, by_count: bool = True,
                       kind: str = TRANSFERABLE, min_events: int = MIN_CELL_EVENTS):
    """A function of resampled indices: the cross-fitted score of those events, refitted on them
    (for :func:`closures`; a duplicated event keeps one fold, so it is never calibrated on itself)."""
    scores_b = np.asarray(scores_b, np.float64)
    weights_b = np.asarray(weights_b, np.float64)
    cells = Cells.fit(regions, values_b, by_count=by_count, min_events=2 * min_events)
    cell_b = cells.of(values_b)
    folds = folds_of(len(scores_b), 2, seed)

    def of(idx):
        t, c = cross_fitted(cells, scores_b[idx], cell_b[idx], weights_b[idx], folds[idx])
        return t if kind == TRANSFERABLE else c

    return of


__all__ = ["CONDITIONAL", "TRANSFERABLE", "Calibration", "Cells", "Closure", "Survival", "TransferableScores",
           "bootstrap", "closure_ratio", "closures", "cross_fitted", "efficiency", "folds_of", "refit_transferable",
           "region_variables", "threshold_at", "transferable_scores"]
