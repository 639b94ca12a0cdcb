"""Analysis figures: anomaly-score stacks in CR/SR with the threshold, kinematic stacks, ROC and SIC.

Histograms come from the coffea processor (``hist.Hist`` with a ``process`` and a ``region`` category
axis); ROC curves are :class:`eventlm.metrics.RocCurve`. Every function writes one PNG (or PDF)
through :func:`eventlm.plotting.figure` and draws the label with :func:`eventlm.plotting.add_label`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from eventlm.metrics import sic_curve
from eventlm.plotting import PlotLabel, add_label, figure

#: Background colours (the ATLAS-ish palette of mplhep's default cycle), one per process (by name).
_BKG_COLORS = ["#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59", "#e76300", "#b9ac70"]
_SIG_COLORS = ["black", "#e42536", "#5790fc", "#964a8b"]
#: Method colours of the ROC/SIC figures (eventlm first: black), distinct from one another.
_METHOD_COLORS = ["black", "#3f90da", "#e42536", "#2ca02c", "#964a8b", "#ffa90e", "#94a4a2", "#a96b59",
                  "#17becf", "#e76300"]
_LINESTYLES = ["-", "--", "-.", ":"]


def _label_lines(ax, lines: Sequence[str], *, y: float = 0.80) -> None:
    for i, line in enumerate(lines):
        ax.text(0.05, y - 0.06 * i, line, transform=ax.transAxes, fontsize=13, va="top")


def _values_with_flow(h, *, variances: bool = False) -> np.ndarray:
    """Bin contents (or, with ``variances``, summed squared weights) with the underflow added to the
    first and the overflow to the last bin (so no event is lost from a figure whose range is narrower
    than the data, e.g. a signal with > 15 jets)."""
    try:
        v = h.variances(flow=True) if variances else h.values(flow=True)
    except TypeError:  # an axis without flow bins
        v = h.variances() if variances else h.values()
    if v is None:  # unweighted storage: Poisson variances
        return _values_with_flow(h)
    v = np.asarray(v, dtype=np.float64)
    n = len(h.axes[0])
    if len(v) == n:
        return v
    ax = h.axes[0]
    under = bool(getattr(ax.traits, "underflow", False))
    over = bool(getattr(ax.traits, "overflow", False))
    core = v[int(under): int(under) + n].copy()
    if under:
        core[0] += v[0]
    if over:
        core[-1] += v[-1]
    return core


def _trim_range(edges: np.ndarray, counts: list[np.ndarray]) -> tuple[float, float]:
    total = np.sum(counts, axis=0) if counts else np.zeros(len(edges) - 1)
    nz = np.nonzero(total > 0)[0]
    if len(nz) == 0:
        return float(edges[0]), float(edges[-1])
    lo = max(0, nz[0] - 1)
    hi = min(len(edges) - 1, nz[-1] + 2)
    return float(edges[lo]), float(edges[hi])


def events_per_bin_label(edges, xlabel: str) -> str:
    """``"Events / 2 nats"``, ``"Events / 100 GeV"``; ``"Events"`` for a count (unit-wide integer bins)."""
    widths = np.diff(np.asarray(edges, dtype=np.float64))
    if xlabel.startswith("Number of"):
        return "Events"
    if len(widths) == 0 or not np.allclose(widths, widths[0], rtol=1e-6):
        return "Events / bin"
    unit = ""
    if xlabel.rstrip().endswith("]") and "[" in xlabel:
        unit = xlabel.rstrip()[xlabel.rstrip().rindex("[") + 1:-1].strip()
    width = float(f"{widths[0]:.3g}")
    return f"Events / {width:g} {unit}".rstrip()


def plot_stack(
    h,
    path,
    *,
    region: str,
    signals: Sequence[str],
    axis: str = "score",
    xlabel: str = "Anomaly score (mean masked-token NLL)",
    threshold: float | None = None,
    label: PlotLabel = PlotLabel(),
    title: str = "",
    lumi_scale: float = 1.0,
    signal_scale: float | None = None,
    logy: bool = True,
    data: Sequence[str] = (),
    region_text: str = "",
) -> None:
    """Stacked backgrounds per process with their MC-statistics band, the signals overlaid and the
    collision data (processes ``data``, summed) as points, in one region.

    ``h`` has axes ``process`` (category), ``region`` (category) and ``axis``. Yields are multiplied
    by ``lumi_scale`` (1 for ``eventlm analyze``, whose weights are at the study luminosity).
    ``signal_scale`` multiplies the signal curves (``None``: scaled so the largest signal's total is the
    background total, for shape comparison; the legend says by how much). ``region_text``: the
    region's definition, written under its name. Underflow and overflow are added to the first and last
    bins; empty backgrounds are left out. A bin whose summed background weight is negative (events with
    negative generator weights) is drawn at 0 and the figure says how many there are.
    """
    import mplhep as hep

    processes = list(h.axes["process"])
    if region not in list(h.axes["region"]):
        raise KeyError(f"region {region!r} not in the histogram (have {list(h.axes['region'])})")
    sub = h[{"region": region}]
    edges = sub.axes[axis].edges
    backgrounds = [p for p in processes if p not in signals and p not in data]
    # one colour per process, fixed by its name (sorted): the same in every region
    # and figure of a study, whatever the stacking order
    colors = {p: _BKG_COLORS[i % len(_BKG_COLORS)] for i, p in enumerate(sorted(backgrounds))}
    bkg = {p: _values_with_flow(sub[{"process": p}]) * lumi_scale for p in backgrounds}
    var = {p: _values_with_flow(sub[{"process": p}], variances=True) * lumi_scale ** 2 for p in backgrounds}
    bkg = {p: v for p, v in bkg.items() if np.abs(v).sum() > 0}  # no empty legend entries (e.g. ttbarHiggs in a CR)
    bkg = dict(sorted(bkg.items(), key=lambda kv: kv[1].sum()))  # the largest on top of the stack
    total = np.sum(list(bkg.values()), axis=0) if bkg else np.zeros(len(edges) - 1)
    error = np.sqrt(np.sum([var[p] for p in bkg], axis=0)) if bkg else np.zeros(len(edges) - 1)
    negative = int(np.count_nonzero(total < 0))
    drawn_bkg = {p: np.clip(v, 0, None) for p, v in bkg.items()}  # a stack cannot show a negative layer
    sig = {p: _values_with_flow(sub[{"process": p}]) * lumi_scale for p in signals if p in processes}
    observed = [_values_with_flow(sub[{"process": p}]) for p in data if p in processes]
    observed = np.sum(observed, axis=0) if observed else None
    total_b = float(total.sum())
    if signal_scale is None:
        largest = max((v.sum() for v in sig.values()), default=0.0)
        ratio = total_b / largest if largest > 0 and total_b > 0 else 1.0
        signal_scale = float(10 ** np.floor(np.log10(ratio))) if ratio > 30 else 1.0
    with figure(path) as (fig, ax):
        if drawn_bkg:
            hep.histplot(
                list(drawn_bkg.values()), edges, stack=True, histtype="fill", label=list(drawn_bkg.keys()),
                color=[colors[p] for p in drawn_bkg],
                edgecolor="black", linewidth=0.5, ax=ax,
            )
            shown = np.clip(total, 0, None)
            ax.stairs(shown + error, edges, baseline=np.clip(shown - error, 0, None), fill=True, hatch="////",
                      facecolor="none", edgecolor="#555555", linewidth=0, label="MC stat. unc.")
        for i, (name, values) in enumerate(sig.items()):
            text = name if signal_scale == 1 else f"{name} ($\\times${signal_scale:g})"
            hep.histplot(values * signal_scale, edges, histtype="step", linewidth=2.2,
                         color=_SIG_COLORS[i % len(_SIG_COLORS)],
                         linestyle=_LINESTYLES[i % len(_LINESTYLES)], label=text, ax=ax)
        if observed is not None:
            centres = 0.5 * (edges[1:] + edges[:-1])
            has = observed > 0
            ax.errorbar(centres[has], observed[has], yerr=np.sqrt(observed[has]), fmt="o", color="black",
                        markersize=5, label="Data")
        curves = list(drawn_bkg.values()) + list(sig.values()) + ([observed] if observed is not None else [])
        lo, hi = _trim_range(edges, curves)
        if threshold is not None:  # the threshold stays on the figure, whatever the events' range
            lo, hi = min(lo, threshold - 0.05 * (hi - lo)), max(hi, threshold + 0.05 * (hi - lo))
        ax.set_xlim(lo, hi)
        ymax = max([float(np.max(np.clip(total, 0, None) + error)) if bkg else 0.0]
                   + [np.max(v * signal_scale) for v in sig.values()]
                   + ([float(np.max(observed + np.sqrt(observed)))] if observed is not None else []) + [1e-9])
        if logy:
            drawn = [*drawn_bkg.values(), *(v * signal_scale for v in sig.values())]  # as drawn (signal scaled)
            positive = [v[v > 0].min() for v in drawn if (v > 0).any()]
            ymin = max(min(positive) * 0.5, ymax * 1e-6) if positive else 1e-3
            if observed is not None and (observed > 0).any():  # every data point on the figure
                ymin = min(ymin, 0.5)
            ax.set_yscale("log")
            ax.set_ylim(ymin, ymax * 10 ** (0.6 * np.log10(max(ymax / ymin, 10))))
        else:
            ax.set_ylim(0, ymax * 1.6)
        if threshold is not None:
            ax.axvline(threshold, color="#d62728", linestyle="--", linewidth=2, label=f"threshold = {threshold:.3g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(events_per_bin_label(edges, xlabel))
        add_label(ax, label)
        lines = [f"{region}: {region_text}" if region_text else region] + ([title] if title else [])
        if negative:
            lines.append(f"{negative} bin(s) with negative summed MC weight drawn at 0")
        _label_lines(ax, lines, y=0.74)
        ax.legend(loc="upper right", fontsize=12, ncol=1 if len(bkg) + len(sig) < 6 else 2, frameon=False)


def _finish_curves(ax, label: PlotLabel, title: str) -> None:
    """Experiment label, the study title and the legend of a ROC or SIC figure."""
    add_label(ax, label)
    if title:
        _label_lines(ax, [title], y=0.78)
    if _legend_outside(len(ax.get_legend_handles_labels()[1])):  # beside the axes: never over a curve
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=10, frameon=False)
    else:  # below the label lines of the top left corner, so the legend never runs into them
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 0.84), fontsize=10, frameon=False)


#: Methods on a ROC or SIC figure above which the legend goes beside the axes (inside, ten long entries
#: covered the curves whatever the headroom)
MAX_LEGEND_INSIDE = 6


def _legend_outside(n_entries: int) -> bool:
    return n_entries > MAX_LEGEND_INSIDE


def _headroom(n_curves: int) -> int:
    """Room above the curves, in legend entries: for the legend inside the axes, or (beside) for the
    label lines of the top left corner alone."""
    return 4 if _legend_outside(n_curves + 1) else max(0, n_curves - 3)


def _method_style(i: int) -> dict:
    """Line style of the i-th method on ROC and SIC figures (the same method, the same look)."""
    return {"linewidth": 2, "linestyle": _LINESTYLES[(i // 10) % 4], "color": _METHOD_COLORS[i % len(_METHOD_COLORS)]}


def plot_roc(
    curves: Mapping[str, object],
    path,
    *,
    aucs: Mapping[str, str] | None = None,
    style: str = "rejection",
    label: PlotLabel = PlotLabel(),
    title: str = "",
) -> None:
    """ROC curves of several methods on one figure.

    ``style="rejection"``: background rejection 1/eff_B (log) against signal efficiency, the
    usual HEP form; ``"standard"``: eff_S against eff_B with the random-guess diagonal.
    ``aucs`` maps a method to the text after its name in the legend (e.g. ``"AUC = 0.61 ± 0.01"``).
    """
    if style not in ("rejection", "standard"):
        raise ValueError(f"ROC style must be 'rejection' or 'standard', got {style!r}")
    aucs = aucs or {}
    with figure(path) as (fig, ax):
        ymax = 10.0
        for i, (name, roc) in enumerate(curves.items()):
            text = f"{name} ({aucs[name]})" if name in aucs else name
            kw = dict(label=text, **_method_style(i))
            if style == "rejection":
                keep = roc.eff_b > 0
                ax.plot(roc.eff_s[keep], 1.0 / roc.eff_b[keep], **kw)
                if keep.any():
                    ymax = max(ymax, float(1.0 / roc.eff_b[keep].min()))
            else:
                ax.plot(roc.eff_b, roc.eff_s, **kw)
        if style == "rejection":
            x = np.linspace(0.005, 1, 200)
            ax.plot(x, 1 / x, color="grey", linestyle=":", label="random")
            ax.set_yscale("log")
            ax.set_xlim(0, 1)
            # room for the legend above the curves: it grows with the number of entries
            ax.set_ylim(0.8, ymax * 20 * 10 ** (0.25 * max(0, _headroom(len(curves)) - 1)))
            ax.set_xlabel("Signal efficiency")
            ax.set_ylabel("Background rejection 1/$\\epsilon_B$")
        else:
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.35)
            ax.set_xlabel("Background efficiency")
            ax.set_ylabel("Signal efficiency")
        _finish_curves(ax, label, title)


def plot_sic(curves: Mapping[str, object], path, *, label: PlotLabel = PlotLabel(), title: str = "",
             min_background_events: int = 10) -> None:
    """Significance improvement eff_S/sqrt(eff_B) against eff_S, where at least
    ``min_background_events`` background events pass (below that the curve is noise)."""
    with figure(path) as (fig, ax):
        ymax = 1.0
        for i, (name, roc) in enumerate(curves.items()):
            eff_s, sic = sic_curve(roc, min_background_events)
            ax.plot(eff_s, sic, label=name, **_method_style(i))
            if len(sic):
                ymax = max(ymax, float(sic.max()))
        ax.axhline(1.0, color="grey", linestyle=":", label="random")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, ymax * (1.9 + 0.12 * _headroom(len(curves))))  # room for the label and the legend
        ax.set_xlabel("Signal efficiency")
        ax.set_ylabel("SIC = $\\epsilon_S\\,/\\,\\epsilon_B^{1/2}$")
        _finish_curves(ax, label, title)


def score_by_multiplicity(n_objects: np.ndarray, score: np.ndarray, *, min_events: int = 30) -> dict[str, np.ndarray]:
    """Mean ``score`` and its standard error per object multiplicity (bins with ``min_events`` or more)."""
    n_objects, score = np.asarray(n_objects), np.asarray(score, dtype=np.float64)
    values = np.unique(n_objects)
    rows = [(n, score[n_objects == n]) for n in values]
    rows = [(n, x) for n, x in rows if len(x) >= min_events]
    return {
        "n": np.array([n for n, _ in rows], dtype=np.int64),
        "mean": np.array([x.mean() for _, x in rows]),
        "error": np.array([x.std(ddof=1) / np.sqrt(len(x)) for _, x in rows]),
    }


def plot_score_vs_multiplicity(
    curves: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    path,
    *,
    ylabel: str = "mean anomaly_score (nats per token)",
    label: PlotLabel = PlotLabel(),
    title: str = "",
) -> None:
    """Mean event score against the number of objects: ``curves[method][dataset]`` is a
    :func:`score_by_multiplicity` result. One colour per method, one line style per dataset."""
    datasets = list(dict.fromkeys(ds for by_ds in curves.values() for ds in by_ds))
    styles = {ds: _LINESTYLES[i % len(_LINESTYLES)] for i, ds in enumerate(datasets)}
    markers = {ds: "osd^v"[i % 5] for i, ds in enumerate(datasets)}
    with figure(path) as (fig, ax):
        lo, hi = np.inf, -np.inf
        for i, (method, by_ds) in enumerate(curves.items()):
            color = _METHOD_COLORS[i % len(_METHOD_COLORS)]
            for ds, c in by_ds.items():
                ax.errorbar(c["n"], c["mean"], yerr=c["error"], color=color, linestyle=styles[ds],
                            marker=markers[ds], markersize=4, linewidth=1.5, label=f"{method}: {ds}")
                if len(c["mean"]):
                    lo, hi = min(lo, float(c["mean"].min())), max(hi, float(c["mean"].max()))
        if np.isfinite(lo):
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.6 * (hi - lo))  # room for the legend
        ax.set_xlabel("Number of objects")
        ax.set_ylabel(ylabel)
        add_label(ax, label)
        if title:
            _label_lines(ax, [title], y=0.78)
        ax.legend(loc="upper right", fontsize=10, frameon=False, ncol=2)


def plot_confusion(matrices, path, **kwargs):
    """Token confusion matrices (true vs predicted token, e.g. ``{"Background": m, "Signal": m}``):
    delegates to :func:`eventlm.plotting.training.plot_confusion`."""
    from eventlm.plotting import training

    return training.plot_confusion(matrices, path, **kwargs)


def label_for(experiment: str, text: str, com: float, lumi: float | None) -> PlotLabel:
    """A :class:`PlotLabel` from config values."""
    def tidy(x):
        return int(x) if x is not None and float(x).is_integer() else x

    return replace(PlotLabel(), experiment=experiment, text=text, com=tidy(com), lumi=tidy(lumi))
