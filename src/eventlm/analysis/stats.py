"""The statistical model of a study, a HistFactory workspace built and evaluated with pyhf.

Channels are the control region (CR) and the signal region (SR), each with two bins: below and above
the anomaly threshold. Samples and modifiers::

    background   shapefactor bkg_norm (shared by CR and SR: free below- and above-threshold
                 normalisations, fixed by the CR), normfactor bkg_SR_over_CR (SR only, free: the
                 below-threshold SR count fixes it); on the SR's above-threshold bin one histosys,
                 abcd_mcstat_nonclosure: the MC-statistical error of the ABCD factor kappa and the
                 non-closure (measured in the validation region), in quadrature
    <signal>     normfactor mu_<signal> (the parameter of interest)

With three free background parameters for four bins the fit is the ABCD method: the SR background above
the threshold is ``n_A * (B/n_B) * (C/n_C) / (D/n_D)`` (``n_*`` the MC yields, the nominal), i.e. the
ABCD prediction times the MC's own ABCD factor ``kappa = n_A n_D / (n_B n_C)`` (about 1 for a
transferable score). Only kappa's MC-statistical error reaches the prediction: the free normalisations
absorb any change of the other three MC yields. Why one nuisance parameter and not a staterror beside a
non-closure histosys: two constrained parameters on the one bin that the pseudo-data (10^5 events)
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
#: Relative tolerance of pyhf's limit search (toms748).
LIMIT_RTOL = 1e-2
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
    """A POI bound above the upper limit: 2x the estimate ``2 sigma_b / s`` (:func:`infer_all` doubles it
    where pyhf needs more; too high a bound makes the CLs of the scan's first step 0/0)."""
    sigma_b = math.sqrt(b.above.value + (relative * b.above.value) ** 2)
    if s.above.value <= 0:
        raise ValueError(f"no {s.region} signal above the threshold: no limit can be set")
    return float(max(1.0, 2.0 * 2.0 * sigma_b / s.above.value))


def workspace_spec(background: Mapping[str, Counts], signals: Mapping[str, Mapping[str, Counts]],
                   observed: Mapping[str, list[float]], *, control_region: str, signal_region: str,
                   nonclosure: float = 0.0) -> dict:
    """The HistFactory workspace (a JSON-able dict; see the module docstring)."""
    channels, observations = [], []
    rel_kappa = _kappa_relative(background[control_region], background[signal_region])
    rel = math.hypot(rel_kappa, nonclosure)
    for region in (control_region, signal_region):
        b = background[region]
        mods = [{"name": "bkg_norm", "type": "shapefactor", "data": None}]
        if region == signal_region:
            lo, hi = b.above.value * max(1.0 - rel, 0.0), b.above.value * (1.0 + rel)
            mods += [{"name": "bkg_SR_over_CR", "type": "normfactor", "data": None},
                     {"name": UNCERTAINTY, "type": "histosys",
                      "data": {"lo_data": [b.below.value, lo], "hi_data": [b.below.value, hi]}}]
        samples = [{"name": BACKGROUND_SAMPLE, "data": _bins(b), "modifiers": mods}]
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


def infer(spec: dict, measurement: str) -> dict:
    """Significances and CLs upper limits of one measurement of the workspace (pyhf, asymptotic)."""
    import pyhf
    from pyhf.infer.intervals.upper_limits import upper_limit

    # a CLs of 0/0 far above the limit is NaN here (handled by infer_all), not a numpy warning
    with _backend("scipy"), np.errstate(divide="ignore", invalid="ignore"):
        model, data = model_and_data(spec, measurement)
        injected = asimov(model, 1.0)
        p_obs, p_exp = pyhf.infer.hypotest(0.0, data, model, test_stat="q0", return_expected=True)
        p_inj = pyhf.infer.hypotest(0.0, injected, model, test_stat="q0")
        obs, band = upper_limit(data, model, level=0.05, rtol=LIMIT_RTOL)
    band = [float(x) for x in band]
    return {
        "z_expected": z_of(float(p_exp)), "p0_expected": float(p_exp),
        "z_observed": z_of(float(p_obs)), "p0_observed": float(p_obs),
        "z_observed_injected": z_of(float(p_inj)), "p0_observed_injected": float(p_inj),
        "mu_limit_expected": band[2], "mu_limit_band": band,  # -2σ, -1σ, median, +1σ, +2σ
        "mu_limit_observed": float(obs),
    }


def infer_all(spec: dict, *, max_tries: int = 12) -> dict[str, dict]:
    """:func:`infer` for every measurement (signal) of ``spec``, adjusting the POI bound the workspace
    declares until pyhf's limit scan works with it: doubled where the scan needs a POI above it (it
    tests the +2σ expected limit too) or a limit comes out at the bound, cut to 0.6 where the CLs at
    the bound is 0/0 (far above the limit). ``spec`` keeps the bound that worked, so the workspace written afterwards reproduces them."""
    out = {}
    for m in spec["measurements"]:
        poi = next(p for p in m["config"]["parameters"] if p["name"] == m["config"]["poi"])
        at_bound = None  # the last result with a limit at the bound (and its bound)
        for _ in range(max_tries):
            try:
                result = infer(spec, m["name"])
            except ValueError as err:
                if "outside of its bounds" in str(err):
                    poi["bounds"][0][1] *= 2.0
                    continue
                if "NaN" not in str(err):
                    raise
                if at_bound is not None:  # above the bound the scan fails: keep the bounded result
                    poi["bounds"][0][1] = at_bound[1]
                    out[m["name"]] = {**at_bound[0], "limit_at_poi_bound": True}
                    break
                poi["bounds"][0][1] *= 0.6
                continue
            if max(result["mu_limit_band"] + [result["mu_limit_observed"]]) < 0.98 * poi["bounds"][0][1]:
                out[m["name"]] = {**result, "limit_at_poi_bound": False}
                break
            at_bound = (result, poi["bounds"][0][1])  # a limit at the bound is the bound, not a limit
            poi["bounds"][0][1] *= 2.0
        else:
            if at_bound is None:  # said in the results, not fatal for the other signals
                log.warning("%s: pyhf's limit scan failed for every POI bound tried", m["name"])
                out[m["name"]] = {"error": "pyhf's asymptotic limit scan failed (CLs undefined: the signal "
                                           "barely changes the expected yields)"}
                continue
            poi["bounds"][0][1] = at_bound[1]
            out[m["name"]] = {**at_bound[0], "limit_at_poi_bound": True}
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
            "sigma_asimov": sigma_a, "mu_hat_mean": float(mu_hat.mean()),
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
