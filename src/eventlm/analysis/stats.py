"""The statistical model of a study, a HistFactory workspace built and evaluated with pyhf.

Channels are the control region (CR) and the signal region (SR), each with two bins: below and above
the anomaly threshold. Samples and modifiers::

    background   shapefactor bkg_norm (shared by CR and SR: free below- and above-threshold
                 normalisations, fixed by the CR), normfactor bkg_SR_over_CR (SR only, free: the
                 below-threshold SR count fixes it). In the SR the above-threshold bin is a sample of
                 its own, background_above, with the same factors and one normsys (log-normal, never
                 negative), abcd_mcstat_nonclosure: the MC-statistical error of the ABCD factor kappa
                 and the non-closure (measured in the validation region), in quadrature
    <signal>     normfactor mu_<signal> (the parameter of interest)

With three free background parameters for four bins the fit is the ABCD method: the SR background above
the threshold is ``n_A * (B/n_B) * (C/n_C) / (D/n_D)`` (``n_*`` the MC yields, the nominal), i.e. the
ABCD prediction times the MC's own ABCD factor ``kappa = n_A n_D / (n_B n_C)`` (about 1 for a
transferable score). Only kappa's MC-statistical error reaches the prediction: the free normalisations
absorb any change of the other three MC yields. Why one nuisance parameter and not a staterror beside a
non-closure normsys: two constrained parameters on the one bin that the pseudo-data (10^5 events)
measure to 0.3 % form a valley in which neither MINUIT nor SLSQP converged reliably (limit scans failed
at random points); per-bin staterrors add parameters the free normalisations already absorb. The
signal's MC statistics (about 1.5 % in the SR) are left out for the same reason. The signal enters every
bin, so its leakage into the CR is part of the fit. One measurement per signal (``POI = mu_<signal>``,
the other signals fixed to 0). The observations are the data, or the background MC yields (pseudo-data
at the study's luminosity).

From the workspace alone (:func:`infer`): the expected discovery significance (``q0`` on the Asimov data
at ``mu = 1``), the "observed" one on the pseudo-data, CLs 95 % upper limits on ``mu`` (expected with
its ±1σ/±2σ band; observed on the background-only pseudo-data), the discovery significance observed
on the pseudo-data with the signal injected at ``mu = 1``, all asymptotic. :func:`injection` checks the model with Poisson toys.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping

import numpy as np

from eventlm.analysis.abcd import Counts

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0.0"
#: the one nuisance parameter of the SR background above the threshold: MC statistics of kappa and the
#: non-closure, in quadrature
UNCERTAINTY = "abcd_mcstat_nonclosure"
BACKGROUND_SAMPLE = "background"
#: the SR's background above the threshold (a sample of its own: the one the uncertainty acts on)
BACKGROUND_ABOVE = "background_above"
#: POI values of the limit scan (from bound/LIMIT_POINTS to the bound of the measurement).
LIMIT_POINTS = 16
#: Below this expected significance a limit scan whose curves do not all cross 0.05 is not retried.
NO_SENSITIVITY = 0.1
#: MINUIT's tolerance (EDM goal 0.002 x tolerance): pyhf's 0.1 asks for an EDM of 2e-4, which MIGRAD does not
#: reach with pseudo-data counts of 10^6-10^7; an EDM of 0.02 moves -2 ln L by 0.04, a 1 % change of a limit.
MINUIT_TOLERANCE = 10.0
#: MINUIT strategy 1 (pyhf picks 0 for the numpy backend: its MIGRAD then fails in the ABCD valleys).
MINUIT_STRATEGY = 1


def poi_name(signal: str) -> str:
    return f"mu_{signal}"


def _bins(c: Counts) -> list[float]:
    return [c.below.value, c.above.value]


def _errors(c: Counts) -> list[float]:
    return [c.below.error, c.above.error]


def poi_upper_bound(b: Counts, s: Counts, relative: float) -> float:
    """The POI bound, the end of the limit scan: 2.5x the estimate ``2 sigma_b / s`` of the median limit,
    so that the +2σ limit is inside (:func:`infer_all` adjusts it where that is not so)."""
    sigma_b = math.sqrt(b.above.value + (relative * b.above.value) ** 2)
    if s.above.value <= 0:  # no signal above the threshold in the SR: infer_all finds out whether any range works
        return 10.0
    return float(max(1.0, 2.5 * 2.0 * sigma_b / s.above.value))


def workspace_spec(background: Mapping[str, Counts], signals: Mapping[str, Mapping[str, Counts]],
                   observed: Mapping[str, list[float]], *, control_region: str, signal_region: str,
                   nonclosure: float = 0.0) -> dict:
    """The HistFactory workspace (a JSON-able dict; see the module docstring)."""
    channels, observations = [], []
    rel_kappa = _kappa_relative(background[control_region], background[signal_region])
    rel = math.hypot(rel_kappa, nonclosure)
    for region in (control_region, signal_region):
        b = background[region]
        norm = [{"name": "bkg_norm", "type": "shapefactor", "data": None}]
        if region == control_region:
            samples = [{"name": BACKGROUND_SAMPLE, "data": _bins(b), "modifiers": norm}]
        else:  # the above-threshold background its own sample, so that the log-normal acts on it alone
            norm = norm + [{"name": "bkg_SR_over_CR", "type": "normfactor", "data": None}]
            samples = [{"name": BACKGROUND_SAMPLE, "data": [b.below.value, 0.0], "modifiers": norm},
                       {"name": BACKGROUND_ABOVE, "data": [0.0, b.above.value], "modifiers": norm + [
                           {"name": UNCERTAINTY, "type": "normsys", "data": {"hi": 1.0 + rel, "lo": 1.0 / (1.0 + rel)}}]}]
        for name, per_region in signals.items():
            s = per_region[region]
            samples.append({"name": name, "data": _bins(s),
                            "modifiers": [{"name": poi_name(name), "type": "normfactor", "data": None}]})
        channels.append({"name": region, "samples": samples})
        observations.append({"name": region, "data": [float(x) for x in observed[region]]})
    measurements = []
    for name in signals:
        bound = poi_upper_bound(background[signal_region], signals[name][signal_region], rel)
        params = [{"name": poi_name(name), "bounds": [[0.0, bound]]}]
        params += [{"name": poi_name(o), "fixed": True, "inits": [0.0]} for o in signals if o != name]
        measurements.append({"name": name, "config": {"poi": poi_name(name), "parameters": params}})
    return {"version": SCHEMA_VERSION, "channels": channels, "observations": observations,
            "measurements": measurements}


def _kappa_relative(cr: Counts, sr: Counts) -> float:
    """Relative MC-statistical error of the MC's ABCD factor ``kappa = n_A n_D / (n_B n_C)``."""
    return math.sqrt(sum(c.relative ** 2 for c in (cr.below, cr.above, sr.below, sr.above)))


def validate(spec: dict) -> None:
    """pyhf's schema validation of a workspace (raises ``pyhf.exceptions.InvalidSpecification``)."""
    import pyhf

    pyhf.schema.validate(spec, "workspace.json")


def minuit():
    """The optimizer of the toy fits (:func:`injection`): MINUIT (iminuit). SciPy's SLSQP, started away
    from the minimum, stops early in the flat valley of mu and the MC-statistical gamma (pseudo-data
    counts of 10^6 next to a 20 % constraint): the toys' mu_hat then spread half the Asimov error and
    their p-values were not uniform; with MINUIT they are (docs/statistics.md). The asymptotic limits
    (:func:`infer`) use pyhf's default SLSQP: their fits start at the nominal point, where MIGRAD (any
    tolerance, strategy 1) stops above its EDM goal in the valley of the non-closure and the MC-stat
    gamma; SLSQP and a converged MIGRAD agree there within 2 % (docs/statistics.md)."""
    import pyhf

    return pyhf.optimize.minuit_optimizer(verbose=0, tolerance=MINUIT_TOLERANCE, strategy=MINUIT_STRATEGY)


@contextlib.contextmanager
def _backend(optimizer=None):
    """numpy backend with ``optimizer`` (default :func:`minuit`) for the block; the previous one after."""
    import pyhf

    tensorlib, previous = pyhf.get_backend()
    pyhf.set_backend("numpy", optimizer or minuit())
    try:
        yield
    finally:
        pyhf.set_backend(tensorlib, previous)


def z_of(p: float) -> float:
    """One-sided significance of a p-value."""
    from scipy.stats import norm

    return float(norm.isf(p))


def model_and_data(spec: dict, measurement: str):
    import pyhf

    ws = pyhf.Workspace(spec)
    model = ws.model(measurement_name=measurement)
    return model, np.asarray(ws.data(model), np.float64)


def asimov(model, mu: float) -> np.ndarray:
    """The expected data (main and auxiliary) with every parameter at its initial value and the POI at ``mu``."""
    pars = np.asarray(model.config.suggested_init(), np.float64)
    pars[model.config.poi_index] = mu
    return np.asarray(model.expected_data(pars), np.float64)


def cls_grid(data, model, grid) -> np.ndarray:
    """CLs at every POI value of ``grid``: rows (observed, expected -2σ, -1σ, median, +1σ, +2σ) x points
    (pyhf's ``hypotest``, qmu-tilde, asymptotic); NaN where pyhf's CLs is 0/0 (far above a limit)."""
    import pyhf

    out = np.full((6, len(grid)), np.nan)
    for j, mu in enumerate(grid):
        obs, expected = pyhf.infer.hypotest(float(mu), data, model, return_expected_set=True)
        out[:, j] = [float(obs)] + [float(e) for e in expected]
    return out


def crossing(grid, cls, level: float = 0.05) -> float | None:
    """The POI where ``cls`` first falls below ``level``: ``log CLs`` interpolated linearly between the two
    grid points around it (CLs falls about like a Gaussian tail, so its log is smooth); None when it does
    not within the grid, or already at its first point."""
    ok = np.isfinite(cls) & (cls > 0)
    g, c = np.asarray(grid)[ok], np.asarray(cls)[ok]
    below = np.nonzero(c < level)[0]
    if len(below) == 0 or below[0] == 0:
        return None
    i = below[0]
    x0, x1, y0, y1 = g[i - 1], g[i], math.log(c[i - 1]), math.log(c[i])
    return float(x0 + (math.log(level) - y0) * (x1 - x0) / (y1 - y0))


def limit_grid(bound: float) -> np.ndarray:
    """The POI values of the limit scan: ``LIMIT_POINTS`` from bound/LIMIT_POINTS to the bound."""
    return np.linspace(bound / LIMIT_POINTS, bound, LIMIT_POINTS)


def infer(spec: dict, measurement: str) -> dict:
    """Significances and CLs upper limits of one measurement of the workspace (pyhf, asymptotic).

    The limits: CLs on :func:`limit_grid` of the measurement's POI bound, where each of the six curves
    crosses 0.05 (:func:`crossing`); a curve that does not cross gives None (see :func:`infer_all`)."""
    import pyhf

    # a CLs of 0/0 far above a limit is NaN here (the crossing skips it), not a numpy warning
    with _backend("scipy"), np.errstate(divide="ignore", invalid="ignore"):
        model, data = model_and_data(spec, measurement)
        injected = asimov(model, 1.0)
        p_obs, p_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected=True)
        p_inj = pyhf.infer.hypotest(0.0, injected, model, test_stat="q0")
        bound = float(model.config.suggested_bounds()[model.config.poi_index][1])
        grid = limit_grid(bound)
        cls = cls_grid(data, model, grid)
    limits = [crossing(grid, row) for row in cls]
    return {
        "z_expected": z_of(float(p_exp)), "p0_expected": float(p_exp),
        "z_observed": z_of(float(p_obs)), "p0_observed": float(p_obs),
        "z_observed_injected": z_of(float(p_inj)), "p0_observed_injected": float(p_inj),
        "mu_limit_expected": limits[3], "mu_limit_band": limits[1:],  # -2σ, -1σ, median, +1σ, +2σ
        "mu_limit_observed": limits[0], "mu_grid": grid.tolist(), "cls_grid": cls.tolist(),
    }


def infer_all(spec: dict, *, max_tries: int = 4) -> dict[str, dict]:
    """:func:`infer` for every measurement (signal) of ``spec``, with the POI bound the workspace
    declares adjusted until every limit lies inside the scan: doubled where a curve does not fall below
    0.05 within it, cut to a quarter where one is already below at the first point. ``spec`` keeps the
    bound that worked (the workspace written afterwards reproduces the limits). A measurement whose
    limits never all fall inside (or, below ``NO_SENSITIVITY`` expected significance, not at the first
    try) is reported with ``"error"``, not fatal for the others."""
    out = {}
    for m in spec["measurements"]:
        poi = next(p for p in m["config"]["parameters"] if p["name"] == m["config"]["poi"])
        for _ in range(max_tries):
            result = infer(spec, m["name"])
            curves = [result["mu_limit_observed"]] + result["mu_limit_band"]
            if all(c is not None for c in curves):
                band = result["mu_limit_band"]
                # asymptotic bands collapse where a large signal over-fills the CR (the free
                # normalisations hit 0): said, not hidden
                result["band_ordered"] = bool(all(b1 > 1.001 * b0 for b0, b1 in zip(band, band[1:])))
                out[m["name"]] = result
                break
            if result["z_expected"] < NO_SENSITIVITY:
                break  # no range will do: the signal changes the expected yields by far less than their error
            cls = np.asarray(result["cls_grid"])
            first_below = any(np.isfinite(row[0]) and row[0] < 0.05 for row in cls)
            poi["bounds"][0][1] *= 0.25 if first_below else 2.0
        if m["name"] not in out:
            log.warning("%s: no POI range found in which every CLs curve crosses 0.05", m["name"])
            out[m["name"]] = {"error": f"no POI range in which every CLs curve crosses 0.05 (expected "
                                       f"significance {result['z_expected']:.2g}: the signal barely changes "
                                       "the expected yields)",
                              "z_expected": result["z_expected"], "p0_expected": result["p0_expected"]}
    return out


def injection(spec: dict, measurement: str, mu_true: float, *, n_toys: int = 300, seed: int = 0,
              optimizer=None) -> dict:
    """Poisson pseudo-experiments drawn from the model at ``mu_true`` (main and auxiliary data, so the
    MC-statistical and non-closure constraints fluctuate too), each fitted with pyhf.

    Per toy: the fitted ``mu_hat`` (the POI may go below 0, down to where a bin's yield would vanish),
    the likelihood-ratio pull ``sign(mu_hat - mu_true) sqrt(t(mu_true))`` with ``t(mu) = -2 ln
    L(mu)/L(mu_hat)`` (standard normal by Wilks' theorem when the model is right), and the discovery
    p-value from the signed ``Z0 = sign(mu_hat) sqrt(t(0))`` (uniform when ``mu_true = 0``). Also the
    spread of ``mu_hat`` against the Asimov error ``sigma_A`` (``1/sqrt(t_A(0))`` on the Asimov data at
    ``mu = 1``)."""
    import pyhf
    from scipy.stats import kstest, norm

    with _backend(optimizer):
        model, _ = model_and_data(spec, measurement)
        poi = model.config.poi_index
        init = np.asarray(model.config.suggested_init(), np.float64)
        bounds = [list(b) for b in model.config.suggested_bounds()]
        by_sample = np.asarray(model.main_model.expected_data(_with(init, poi, 1.0), return_by_sample=True))
        s = by_sample[model.config.samples.index(measurement)]
        b = np.asarray(model.main_model.expected_data(_with(init, poi, 0.0)))
        lower = -0.9 * float(np.min(b[s > 0] / s[s > 0]))
        bounds[poi] = [max(lower, -bounds[poi][1]), bounds[poi][1]]
        a = asimov(model, 1.0)
        t_a = _twice_nll(pyhf, model, a, bounds, 0.0) - _twice_nll(pyhf, model, a, bounds, None)
        sigma_a = 1.0 / math.sqrt(max(t_a, 1e-300))
        truth = _with(init, poi, mu_true)
        rng_state = np.random.get_state()
        # pyhf draws from numpy's global generator (scipy.stats): seed it for the block, restore it after
        np.random.seed(int(np.random.SeedSequence([seed, 2121, int(round(mu_true * 1000))]).generate_state(1)[0]))
        try:
            toys = np.asarray(model.make_pdf(pyhf.tensorlib.astensor(truth)).sample((n_toys,)), np.float64)
        finally:
            np.random.set_state(rng_state)
        mu_hat, pulls, z, failed = [], [], [], 0
        for toy in toys:
            try:
                pars, best = pyhf.infer.mle.fit(toy, model, par_bounds=bounds, return_fitted_val=True)
                at_zero = _twice_nll(pyhf, model, toy, bounds, 0.0)
                at_true = at_zero if mu_true == 0 else _twice_nll(pyhf, model, toy, bounds, mu_true)
            except Exception:  # noqa: BLE001 - a failed toy fit is counted and reported, not hidden
                failed += 1
                continue
            m = float(pars[poi])
            mu_hat.append(m)
            pulls.append(math.copysign(math.sqrt(max(at_true - float(best), 0.0)), m - mu_true))
            z.append(math.copysign(math.sqrt(max(at_zero - float(best), 0.0)), m))
    mu_hat, pulls, z = np.asarray(mu_hat), np.asarray(pulls), np.asarray(z)
    if len(mu_hat) < 2:
        raise RuntimeError(f"{measurement}: {failed} of {n_toys} toy fits failed")
    p = norm.sf(z)
    gauss = (mu_hat - mu_true) / sigma_a
    n = len(pulls)
    return {"measurement": measurement, "mu_true": mu_true, "n_toys": n_toys, "failed": failed,
            "sigma_asimov": sigma_a, "mu_hat_mean": float(mu_hat.mean()), "mu_hat_median": float(np.median(mu_hat)),
            "mu_hat_mean_error": float(mu_hat.std(ddof=1) / math.sqrt(n)), "mu_hat_std": float(mu_hat.std(ddof=1)),
            "pull_mean": float(pulls.mean()), "pull_mean_error": float(pulls.std(ddof=1) / math.sqrt(n)),
            "pull_width": float(pulls.std(ddof=1)), "pull_width_error": float(pulls.std(ddof=1) / math.sqrt(2 * (n - 1))),
            "gaussian_pull_mean": float(gauss.mean()), "gaussian_pull_width": float(gauss.std(ddof=1)),
            "ks_p_uniform": float(kstest(p, "uniform").pvalue),
            "mu_hat": mu_hat.tolist(), "pulls": pulls.tolist(), "p_values": p.tolist()}


def _twice_nll(pyhf, model, data, bounds, mu: float | None) -> float:
    """``-2 ln L`` at the best fit, with the POI free (``mu=None``) or fixed at ``mu``."""
    if mu is None:
        return float(pyhf.infer.mle.fit(data, model, par_bounds=bounds, return_fitted_val=True)[1])
    return float(pyhf.infer.mle.fixed_poi_fit(mu, data, model, par_bounds=bounds, return_fitted_val=True)[1])


def _with(pars: np.ndarray, index: int, value: float) -> np.ndarray:
    out = np.array(pars, np.float64)
    out[index] = value
    return out


__all__ = ["BACKGROUND_SAMPLE", "UNCERTAINTY", "asimov", "infer", "injection", "model_and_data", "poi_name",
           "validate", "workspace_spec", "z_of"]
