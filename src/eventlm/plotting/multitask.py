"""Figures of the multi-task study: generated vs real distributions with a ratio panel, the transfer curve.

::

    plot_ratio({"Real (test split)": real_values, "Generated": gen_values}, bins, "fig.png",
               xlabel="$H_T$ [GeV]", logy=True)
    plot_transfer(rows, "transfer.png", signal="gluino_1000")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventlm.plotting import PlotLabel, add_label, figure, finish

#: Colours (Petroff's colour-blind-safe sequence), one per curve.
COLORS = ("#3f90da", "#bd1f01", "#ffa90e", "#832db6", "#94a4a2")


def _normalized(values, bins):
    values = np.clip(np.asarray(values, dtype=np.float64), bins[0], bins[-1] - 1e-9 * (bins[-1] - bins[0]))
    counts, _ = np.histogram(values, bins=bins)
    total = max(counts.sum(), 1)
    return counts / total, np.sqrt(counts) / total


def plot_ratio(samples: dict, bins, path, *, xlabel: str, logy: bool = False, note: str | None = None,
               label: PlotLabel = PlotLabel(), ratio_range=(0.5, 1.5)) -> Path:
    """Unit-area histograms of each sample (first: the reference, drawn as points) and their ratio to it.

    Under- and overflow go to the first and last bin. Error bars: Poisson errors of the counts.
    """
    bins = np.asarray(bins, dtype=np.float64)
    with figure(path, figsize=(8, 7.5), nrows=2, ncols=1, sharex=True,
                gridspec_kw={"height_ratios": (3, 1), "hspace": 0.06}) as (fig, (ax, rax)):
        _draw_ratio(ax, rax, samples, bins, xlabel=xlabel, logy=logy, note=note, label=label,
                    ratio_range=ratio_range)
    return Path(path)


def _draw_ratio(ax, rax, samples, bins, *, xlabel, logy, note, label, ratio_range) -> None:
    import mplhep as hep

    names = list(samples)
    ref, ref_err = _normalized(samples[names[0]], bins)
    centers = 0.5 * (bins[1:] + bins[:-1])
    hep.histplot(ref, bins, yerr=ref_err, ax=ax, histtype="errorbar", color="black",
                 label=f"{names[0]} ({len(samples[names[0]])})")
    for i, name in enumerate(names[1:]):
        h, err = _normalized(samples[name], bins)
        hep.histplot(h, bins, ax=ax, color=COLORS[i % len(COLORS)], linewidth=2.0,
                     label=f"{name} ({len(samples[name])})")
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ref > 0, h / ref, np.nan)
            rerr = np.where(ref > 0, ratio * np.sqrt((err / np.maximum(h, 1e-300)) ** 2 + (ref_err / ref) ** 2), np.nan)
        rax.errorbar(centers, ratio, yerr=rerr, xerr=0.5 * np.diff(bins), fmt="o", ms=4, color=COLORS[i % len(COLORS)])
    rax.axhline(1.0, color="black", linewidth=1.0)
    rax.set_ylim(*ratio_range)
    rax.set_ylabel(f"Ratio to\n{names[0].split(' ')[0].lower()}", fontsize=14)
    rax.set_xlabel(xlabel)
    ax.set_ylabel("Fraction of events")
    ax.set_xlim(bins[0], bins[-1])
    if logy:
        ax.set_yscale("log")
        positive = ref[ref > 0]
        ax.set_ylim(max(positive.min() * 0.3, 1e-6) if len(positive) else 1e-5, 60.0 * max(ref.max(), 1e-6))
    else:
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)
    finish(ax, label, note=note)


def plot_transfer(rows: list[dict], path, *, signal: str, label: PlotLabel = PlotLabel(),
                  note: str | None = None) -> Path:
    """AUC against the number of labelled signal events, one curve per method (mean and seed spread).

    ``rows``: dicts with ``method``, ``n_signal``, ``auc_mean``, ``auc_std``.
    """
    with figure(path) as (fig, ax):
        _draw_transfer(ax, rows, signal=signal, label=label, note=note)
    return Path(path)


def _draw_transfer(ax, rows, *, signal, label, note) -> None:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, method in enumerate(methods):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["n_signal"])
        x = np.array([r["n_signal"] for r in rs], dtype=float)
        y = np.array([r["auc_mean"] for r in rs])
        e = np.array([r["auc_std"] for r in rs])
        ax.errorbar(x, y, yerr=e, fmt="o-", ms=6, capsize=3, linewidth=2, color=COLORS[i % len(COLORS)], label=method)
    ax.set_xscale("log")
    ax.set_xlabel("Labelled signal events")
    ax.set_ylabel("AUC (held-out test events)")
    lo = min(r["auc_mean"] - r["auc_std"] for r in rows)
    ax.set_ylim(max(0.5, lo - 0.03), 1.0 + 0.08 * (1.0 - max(0.5, lo - 0.03)))
    add_label(ax, label)
    ax.set_xlim(min(r["n_signal"] for r in rows) * 0.7, max(r["n_signal"] for r in rows) * 1.6)
    ax.legend(fontsize=12, loc="lower right", frameon=False, title=note or signal, title_fontsize=12)
