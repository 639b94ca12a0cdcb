"""Figures of the scaling study (:mod:`eventlm.analysis.scaling`): detection against the number of
training events and against the model size, one line per signal, HT alone beside each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import NullFormatter

from eventlm.plotting import PlotLabel, add_label, figure

#: One colour per signal (the order of the study's signals), colour-blind friendly.
COLORS = ["#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59", "#e76300", "#b9ac70", "#717581",
          "#92dadd"]
PANELS = (("auc", "AUC"), ("eff_s@0.01", r"$\varepsilon_S$ at $\varepsilon_B = 10^{-2}$"))


def plot_scaling(points: list[dict], ht: dict, path, *, x: str, xlabel: str, score: str = "anomaly_score",
                 label: PlotLabel = PlotLabel(), note: str | None = None, point_labels: bool = False) -> Path:
    """Three panels against ``x`` (a key of each point, log axis): the AUC and eps_S at eps_B = 1e-2 of
    ``score`` per signal (solid, with bootstrap errors; HT alone as a dotted line in the signal's
    colour at the right edge), and the test NLL per event of the background.

    ``points``: the study's points (``signals -> {score: metrics}``, ``test_nll_per_event``), in the
    order of ``x``; ``ht``: ``signal -> metrics`` of HT alone. ``point_labels``: write each point's
    ``n_layer x n_embd`` beside it in the NLL panel (the model-size axis). The legend (signals) is below
    the first two panels.
    """
    points = sorted(points, key=lambda p: p[x])
    xs = np.array([p[x] for p in points], dtype=float)
    signals = list(points[0]["signals"])
    with figure(path, figsize=(18, 6.2), ncols=3, gridspec_kw={"wspace": 0.3}) as (fig, axes):
        for ax, (key, ylabel) in zip(axes, PANELS):
            for i, s in enumerate(signals):
                color = COLORS[i % len(COLORS)]
                y = np.array([_value(p["signals"][s][score], key) for p in points])
                e = np.array([_value(p["signals"][s][score], f"{key}_err", 0.0) for p in points])
                ax.errorbar(xs, y, yerr=e, fmt="o-", ms=5, capsize=3, linewidth=1.8, color=color, label=s)
                ref = _value(ht.get(s, {}), key)
                if np.isfinite(ref):
                    ax.hlines(ref, xs[-1] * 1.25, xs[-1] * 1.9, colors=color, linestyles=":", linewidth=2.5)
            ax.set_xscale("log")
            ax.set_xlim(xs[0] / 1.5, xs[-1] * 2.1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{ylabel} ({score})")
            lo, hi = ax.get_ylim()
            lo = max(lo, 0.0)  # an AUC or an efficiency is never negative
            ax.set_ylim(lo, hi + 0.45 * (hi - lo))  # room for the label and the legend
            add_label(ax, label)
        axes[0].text(0.04, 0.80, note or "dotted, right: HT alone", transform=axes[0].transAxes, fontsize=12,
                     va="top")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, fontsize=13, loc="upper center", bbox_to_anchor=(0.37, 0.0), frameon=False,
                   ncol=min(len(names), 4))
        ax = axes[2]
        nll = np.array([p["test_nll_per_event"] for p in points])
        err = np.array([p["test_nll_per_event_err"] for p in points])
        ax.errorbar(xs, nll, yerr=err, fmt="o-", ms=6, capsize=3, linewidth=2, color="black",
                    label="test background")
        if point_labels:
            for p, xi, yi in zip(points, xs, nll):
                ax.annotate(f"{p['n_layer']}x{p['n_embd']}", (xi, yi), textcoords="offset points", xytext=(6, 6),
                            fontsize=12)
        ax.set_xscale("log")
        ax.set_xlim(xs[0] / 1.5, xs[-1] * 1.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(r"NLL per event, $-\log p(\mathrm{event})$")
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + 0.45 * (hi - lo))
        add_label(ax, label)
        ax.legend(fontsize=12, loc="upper right", frameon=False)
        for ax in axes:
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^2, 3x10^2 ... collide on a short log axis
    return Path(path)


def _value(metrics: dict, key: str, missing: float = np.nan) -> float:
    v = metrics.get(key)
    return missing if v is None else float(v)
