"""The search: from the anomaly score to a background estimate, a significance and limits.

:func:`run_search` is what ``eventlm analyze`` runs for a study with a ``[statistics]`` table
(docs/statistics.md):

1. the transferable score (:mod:`eventlm.analysis.transfer`) of every dataset, cross-fitted on the
   background, and the CR -> SR closure of every score (bootstrap errors, the calibration refitted);
2. the threshold on the ``[statistics] score`` that keeps ``background_efficiency`` of the CR background;
3. the ABCD non-closure in the validation region (background MC), the SR prediction by ABCD and by the
   MC transfer factor against the MC (:mod:`eventlm.analysis.abcd`);
4. the pyhf workspace (``workspace.json``), its significances and limits (:mod:`eventlm.analysis.stats`),
   the limit on the cross section, the figure ``limits.png``;
5. the Combine export (``shapes.root``, ``datacard_<signal>.txt``).

The observations are the ``data`` samples where the study has them, otherwise the background MC
(pseudo-data). Every yield is at the study's luminosity (the weights already are).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eventlm.analysis.abcd import Counts, Prediction, nonclosure_uncertainty, predict
from eventlm.analysis.transfer import (CONDITIONAL, TRANSFERABLE, Closure, bootstrap, closures,
                                       refit_transferable, threshold_at, transferable_scores)

log = logging.getLogger(__name__)

BACKGROUND = "background"
DATA = "data"


@dataclass
class SearchResult:
    score: str
    threshold: float
    closures: list[Closure]
    validation: Prediction | None  # the VR: ABCD against MC (background MC)
    validation_error: float | None  # bootstrap error of its closure (the calibration refitted)
    nonclosure: float
    prediction: Prediction  # the SR
    counts: dict[str, Counts]  # background MC per region
    signal_counts: dict[str, dict[str, Counts]]
    observed_source: str
    limits: dict[str, dict]  # signal -> infer() + cross sections
    files: dict[str, Path] = field(default_factory=dict)
    markdown: str = ""

    def to_dict(self) -> dict:
        return {"score": self.score, "threshold": self.threshold,
                "closure": [c.to_dict() for c in self.closures],
                "validation_region": ({**self.validation.to_dict(), "closure_error_bootstrap": self.validation_error}
                                      if self.validation else None),
                "nonclosure": self.nonclosure, "signal_region": self.prediction.to_dict(),
                "counts": {r: c.to_dict() for r, c in self.counts.items()},
                "signal_counts": {s: {r: c.to_dict() for r, c in by.items()} for s, by in self.signal_counts.items()},
                "observed": self.observed_source, "limits": self.limits,
                "files": {k: str(v) for k, v in self.files.items()}}


def add_transferable(config, columns: dict[str, dict[str, np.ndarray]], variables: Mapping[str, Mapping]) -> None:
    """Add ``anomaly_score_transferable`` and ``anomaly_score_conditional`` to every dataset's columns."""
    st = config.statistics
    bkg = columns[BACKGROUND]
    others = {ds: (variables[ds], cols["anomaly_score"]) for ds, cols in columns.items() if ds != BACKGROUND}
    ts = transferable_scores(config.regions, variables[BACKGROUND], bkg["anomaly_score"], bkg["weight"], others,
                             seed=config.study.seed, by_count=st.cells == "counts", min_events=st.min_cell_events)
    bkg[TRANSFERABLE] = ts.background[TRANSFERABLE].astype(np.float32)
    bkg[CONDITIONAL] = ts.background[CONDITIONAL].astype(np.float32)
    for ds, scores in ts.signals.items():
        columns[ds][TRANSFERABLE] = scores[TRANSFERABLE].astype(np.float32)
        columns[ds][CONDITIONAL] = scores[CONDITIONAL].astype(np.float32)


def _score_of(config, bkg, variables_b, kind: str):
    """The background's score as a function of resampled indices (refitted where it is fitted)."""
    st = config.statistics
    if kind in (TRANSFERABLE, CONDITIONAL):
        return refit_transferable(config.regions, variables_b, bkg["anomaly_score"], bkg["weight"],
                                  seed=config.study.seed, by_count=st.cells == "counts", kind=kind,
                                  min_events=st.min_cell_events)
    values = np.asarray(bkg[kind], np.float64)
    return lambda idx: values[idx]


def run_search(config, columns: dict[str, dict[str, np.ndarray]], variables: Mapping[str, Mapping], out_dir, *,
               plots: bool = True) -> SearchResult:
    """The chain of the module docstring for one study; ``columns`` as :func:`eventlm.analysis.inputs.skim_columns`
    gives them (``weight`` at the study's luminosity, ``in_<region>``, the scores), ``variables[dataset]`` the
    event variables (:func:`eventlm.analysis.features.variables_of`) of the same events."""
    from eventlm.analysis import stats
    from eventlm.analysis.export_fit import write_datacards
    from eventlm.atomic import write_json

    st, t = config.statistics, config.threshold
    cr, sr, vr = t.control_region, t.signal_region, st.validation_region
    out_dir = Path(out_dir)
    if TRANSFERABLE not in columns[BACKGROUND]:
        add_transferable(config, columns, variables)
    bkg = columns[BACKGROUND]
    w = np.asarray(bkg["weight"], np.float64)
    in_cr, in_sr = bkg[f"in_{cr}"].astype(bool), bkg[f"in_{sr}"].astype(bool)
    n_boot = config.metrics.n_bootstrap
    seed = config.study.seed

    # 1. closure of every score
    kinds = ["anomaly_score"] + [k for k in ("anomaly_score_calibrated",) if k in bkg] + [TRANSFERABLE, CONDITIONAL]
    if st.score not in kinds:
        kinds.append(st.score)
    fns = {k: _score_of(config, bkg, variables[BACKGROUND], k) for k in kinds}
    clos = closures(fns, w, in_cr, in_sr, targets=st.closure_efficiencies, n_bootstrap=n_boot, seed=seed)

    # 2. threshold
    score_b = np.asarray(bkg[st.score], np.float64)
    thr = threshold_at(score_b, w, in_cr, st.background_efficiency)

    def counts_of(cols, region_mask, region, weights=None):
        return Counts.of(region, cols[st.score], cols["weight"] if weights is None else weights, region_mask, thr)

    regions = [cr, sr] + ([vr] if vr else [])
    counts = {r: counts_of(bkg, bkg[f"in_{r}"], r) for r in regions}

    # 3. validation region: ABCD from the CR events outside the VR, against the MC
    validation, validation_error, nonclosure = None, None, 0.0
    if vr:
        in_vr = bkg[f"in_{vr}"].astype(bool)
        ref = in_cr & ~in_vr
        validation = predict(counts[vr], counts_of(bkg, ref, f"{cr} outside {vr}"))
        fn = fns[st.score]

        def vr_closure(idx):
            s = fn(idx)
            ww = w[idx]
            th = threshold_at(s, ww, in_cr[idx], st.background_efficiency)
            a = Counts.of(vr, s, ww, in_vr[idx], th)
            b = Counts.of("ref", s, ww, ref[idx], th)
            try:
                return [predict(a, b).closure]
            except ValueError:
                return [np.nan]

        validation_error = float(bootstrap(vr_closure, len(w), n_boot, seed)[0])
        nonclosure = nonclosure_uncertainty(validation.closure, validation_error)
    # 4. SR prediction; observations: the data where the study has them, else the background MC
    if DATA in columns:
        obs_cols = columns[DATA]
        observed = {r: counts_of(obs_cols, obs_cols[f"in_{r}"], r) for r in (cr, sr)}
        observed_source = "data"
    else:
        observed = {r: counts[r] for r in (cr, sr)}
        observed_source = "background MC (pseudo-data)"
    prediction = predict(observed[sr], observed[cr], target_mc=counts[sr], reference_mc=counts[cr],
                         nonclosure=nonclosure)
    signals = [s for s in config.signals if s in columns]
    signal_counts = {s: {r: counts_of(columns[s], columns[s][f"in_{r}"], r) for r in (cr, sr)} for s in signals}
    obs_bins = {r: [observed[r].below.value, observed[r].above.value] for r in (cr, sr)}
    spec = stats.workspace_spec(counts, signal_counts, obs_bins, control_region=cr, signal_region=sr,
                                nonclosure=nonclosure)
    stats.validate(spec)
    limits = stats.infer_all(spec)
    lumi = config.study.lumi
    for s in signals:
        sigma = float(np.sum(columns[s]["weight"])) / lumi  # fb: the sample's cross section (x its preselection)
        lim = limits[s]
        lim["cross_section_fb"] = sigma
        if "error" in lim:
            continue
        lim["xs_limit_band"] = [x * sigma for x in lim["mu_limit_band"]]
        lim["xs_limit_expected"] = lim["mu_limit_expected"] * sigma
        lim["xs_limit_observed"] = lim["mu_limit_observed"] * sigma
    files = {"workspace": write_json(out_dir / "workspace.json", spec, indent=1)}
    files.update(write_datacards(out_dir, counts, signal_counts, obs_bins, control_region=cr, signal_region=sr,
                                 nonclosure=nonclosure))
    if plots:
        from eventlm.plotting import PlotLabel
        from eventlm.plotting.statistics import plot_limits

        label = PlotLabel(experiment=config.plot.experiment, text=config.plot.label, com=config.plot.com, lumi=lumi)
        drawn = {s: lim for s, lim in limits.items() if "error" not in lim}
        if drawn:
            files["limits"] = plot_limits(drawn, out_dir / "limits.png", label=label, title=config.title)
            files["limits_xs"] = plot_limits(drawn, out_dir / "limits_xs.png", label=label, key="xs",
                                             ylabel="95% CL upper limit on σ × A [fb]", title=config.title)
    result = SearchResult(st.score, thr, clos, validation, validation_error, nonclosure, prediction, counts,
                          signal_counts, observed_source, limits, files)
    result.markdown = search_table(config, result)
    return result


def _pm(value, error, digits=0):
    if value is None or not math.isfinite(value):
        return "n/a"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(value)} ± {fmt.format(error)}" if error is not None and math.isfinite(error) else fmt.format(value)


def search_table(config, r: SearchResult) -> str:
    """The Markdown section of results.md: closure, prediction against MC, significance and limits."""
    st, t = config.statistics, config.threshold
    cr, sr, vr = t.control_region, t.signal_region, st.validation_region
    lumi = config.study.lumi
    lines = [f"### Background estimate and limits (`{r.score}`, L = {lumi:g} fb⁻¹; docs/statistics.md)", "",
             f"CR → SR closure on the background: the SR background efficiency at the threshold that keeps a given "
             f"fraction of the CR background ({cr}: `{config.region(cr).describe()}`, {sr}: "
             f"`{config.region(sr).describe()}`; ± = std. dev. of {config.metrics.n_bootstrap} bootstrap "
             "resamplings, the calibration refitted on each). 1 = the threshold transfers.", "",
             "| score | ε_B(CR) | ε_B(SR) | SR/CR | (SR/CR − 1)/σ |", "|---|---|---|---|---|"]
    for c in r.closures:
        lines.append(f"| `{c.score}` | {c.eff_cr:.4f} | {c.eff_sr:.4f} | {c.ratio:.3f} ± {c.error:.3f} | {c.pull:+.1f} |")
    lines += ["", f"Threshold: `{r.score}` ≥ {r.threshold:.4g} (keeps {st.background_efficiency:g} of the CR "
              "background). Yields at the study's luminosity, ± = statistical (Σw²) error.", ""]
    lines += ["| region | below threshold | above threshold | ABCD prediction (above) | MC transfer factor | MC |",
              "|---|---|---|---|---|---|"]
    for region, c in r.counts.items():
        lines.append(f"| {region} | {_pm(c.below.value, c.below.error)} | {_pm(c.above.value, c.above.error)} | | | |")
    if r.validation is not None:
        v = r.validation
        lines.append(f"| {vr} (from {v.reference}) | | | {_pm(v.abcd, v.abcd_stat)} | | {_pm(v.mc, v.mc_stat)} |")
    p = r.prediction
    lines.append(f"| {sr} (from {cr}) | | | {_pm(p.abcd, p.abcd_stat)} (stat) ± {p.nonclosure * p.abcd:,.0f} "
                 f"(non-closure) | {_pm(p.transfer, p.transfer_stat)} | {_pm(p.mc, p.mc_stat)} |")
    lines.append("")
    if r.validation is not None:
        v = r.validation
        err = r.validation_error
        lines.append(f"Non-closure in the validation region {vr} (`{config.region(vr).describe()}`): ABCD / MC − 1 = "
                     f"{v.closure:+.3f} ± {err:.3f} ({abs(v.closure) / err if err else float('inf'):.1f}σ); "
                     f"the SR prediction carries a relative non-closure uncertainty of {r.nonclosure:.3f} "
                     "(the larger of the two).")
    else:
        lines.append("No validation region ([statistics] validation_region): no non-closure uncertainty is assigned.")
    lines += ["", f"Significance and CLs 95 % upper limits (pyhf, asymptotic; `workspace.json`; observations: "
              f"{r.observed_source}). σ × A: the signal sample's cross section times its preselection.", "",
              "| signal | Z expected (μ=1) | Z obs. (bkg + signal) | μ limit exp. | −2σ | −1σ | +1σ | +2σ | μ limit obs. | "
              "σ × A [fb] | σ × A limit exp. [fb] | σ × A limit obs. [fb] |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s, lim in r.limits.items():
        if "error" in lim:
            lines.append(f"| {s} | " + " | ".join(["n/a"] * 8) + f" | {lim['cross_section_fb']:.3g} | n/a | n/a |")
            lines.append(f"| | {lim['error']} |" + " |" * 10)
            continue
        b = lim["mu_limit_band"]
        s = s if lim.get("band_ordered", True) else f"{s} (band collapsed: asymptotics unreliable)"
        lines.append(f"| {s} | {lim['z_expected']:.2f} | {lim['z_observed_injected']:.2f} | {b[2]:.3g} | {b[0]:.3g} | "
                     f"{b[1]:.3g} | {b[3]:.3g} | {b[4]:.3g} | {lim['mu_limit_observed']:.3g} | "
                     f"{lim['cross_section_fb']:.3g} | {lim['xs_limit_expected']:.3g} | {lim['xs_limit_observed']:.3g} |")
    lines += ["", "Files: `workspace.json` (pyhf), `shapes.root` + `datacard_<signal>.txt` (CMS Combine), "
              "`limits.png`, `limits_xs.png`.", ""]
    return "\n".join(lines)


__all__ = ["SearchResult", "add_transferable", "run_search", "search_table"]
