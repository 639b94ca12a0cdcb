"""Figures of the statistical model: the expected upper limits per signal with their ±1σ/±2σ bands."""

from __future__ import annotations

from collections.abc import Mapping

from eventlm.plotting import PlotLabel, figure, finish


def plot_limits(limits: Mapping[str, Mapping], path, *, label: PlotLabel = PlotLabel(),
                ylabel: str = "95% CL upper limit on $\\mu$", key: str = "mu", log: bool = True,
                title: str | None = None):
    """One column per signal: the expected limit (dashed), its ±1σ (green) and ±2σ (yellow) bands and
    the observed limit (black dot). ``limits[signal]`` holds ``f"{key}_limit_band"`` (five values:
    -2σ, -1σ, median, +1σ, +2σ) and ``f"{key}_limit_observed"``; a reference line at 1 when ``key`` is
    ``"mu"`` (the signal as simulated)."""
    names = list(limits)
    with figure(path, figsize=(max(6.0, 1.1 * len(names) + 3.0), 6)) as (fig, ax):
        for i, name in enumerate(names):
            band = limits[name][f"{key}_limit_band"]
            kw = dict(lw=0)
            ax.fill_between([i - 0.4, i + 0.4], band[0], band[4], color="#ffdf00",
                            label="Expected ±2σ" if i == 0 else None, **kw)
            ax.fill_between([i - 0.4, i + 0.4], band[1], band[3], color="#00c000",
                            label="Expected ±1σ" if i == 0 else None, **kw)
            ax.plot([i - 0.4, i + 0.4], [band[2]] * 2, "k--", lw=1.5, label="Expected" if i == 0 else None)
            ax.plot([i], [limits[name][f"{key}_limit_observed"]], "ko", ms=7,
                    label="Observed (pseudo-data)" if i == 0 else None)
        if key == "mu":
            ax.axhline(1.0, color="red", lw=1.2, label="$\\mu$ = 1 (simulated cross section)")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30 if len(names) > 2 else 0, ha="right" if len(names) > 2 else "center")
        ax.set_xlim(-0.6, len(names) - 0.4)
        if log:
            ax.set_yscale("log")
        lo = min(limits[n][f"{key}_limit_band"][0] for n in names)
        hi = max(limits[n][f"{key}_limit_band"][4] for n in names)
        if log:  # room above for the label and the legend, below for the title
            ax.set_ylim(lo / 10, hi * 100)
        else:
            ax.set_ylim(0, hi * 1.8)
        ax.set_ylabel(ylabel)
        finish(ax, label, note=title, note_xy=(0.04, 0.10), legend_loc="upper right", fontsize=11)
    return path
