"""All of eventlm's figures. One module per topic; every figure goes through :func:`atlas_style`.

- ``kinematics``: generator validation plots (multiplicities, pT, MET, HT per process)
- ``tokens``: token frequencies per process, tokenizer resolution
- ``training``: loss curves, token confusion matrices
- ``analysis``: anomaly-score stacks in CR/SR with the threshold, ROC and SIC curves

Importing eventlm's plotting changes nothing global: no backend switch and no style change, so a
notebook's open figures and settings stay as they are. Figures are :class:`matplotlib.figure.Figure`
objects made without pyplot (they render to PNG/PDF on any backend, also on a machine without a
display) and drawn inside :func:`atlas_style`, which restores matplotlib's settings afterwards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from eventlm.extras import require

matplotlib = require("matplotlib", "plots", "drawing figures")
hep = require("mplhep", "plots", "drawing figures in ATLAS style")
Figure = require("matplotlib.figure", "plots", "drawing figures").Figure
FigureCanvasAgg = require("matplotlib.backends.backend_agg", "plots", "drawing figures").FigureCanvasAgg


@dataclass(frozen=True)
class PlotLabel:
    """What the ATLAS-style label says: the experiment name (bold) and ``text`` in the top left corner,
    sqrt(s) and the luminosity on the line below it.

    The default claims no experiment (eventlm's bundled samples are Pythia events through a
    parametric detector, no experiment's result): a study of an experiment's own samples sets
    ``experiment = "ATLAS"``, ``text = "Internal"`` (or ``"CMS"``, ...) in its ``[plot]`` table.
    With an experiment, mplhep writes "Simulation" before ``text`` unless ``data`` is true.
    """

    experiment: str = ""
    text: str = "Simulation"
    com: float = 13  # TeV (an int prints as "13 TeV", not "13.0 TeV")
    lumi: float | None = None  # fb^-1
    data: bool = False  # the figure shows collision data (no "Simulation")


@contextlib.contextmanager
def atlas_style():
    """The ATLAS style of mplhep inside the block; matplotlib's settings are restored after it."""
    with matplotlib.rc_context(hep.style.ATLAS):
        yield


def add_label(ax, label: PlotLabel = PlotLabel(), *, loc: int = 4) -> None:
    """Draw the label where ATLAS puts it (``loc=4``: the experiment and text in the top left corner of
    the axes, "sqrt(s) = 13 TeV, 139 fb^-1" on the line below)."""
    energy = f"√s = {label.com:g} TeV"
    second = energy if label.lumi is None else f"{energy}, {label.lumi:g} fb$^{{-1}}$"
    if label.experiment:
        hep.label.exp_label(exp=label.experiment, text=label.text, data=label.data, ax=ax, loc=loc,
                            rlabel=second)
    else:  # no experiment name: the text alone, not bold
        hep.label.exp_label(exp="", llabel=label.text, ax=ax, loc=loc, rlabel=second)


def finish(ax, label: PlotLabel = PlotLabel(), *, note: str | None = None, note_xy=(0.04, 0.80),
           legend_loc: str = "upper right", fontsize: int = 12) -> None:
    """The experiment label, an optional note (a line of text under it) and the legend of ``ax``."""
    add_label(ax, label)
    if note:
        ax.text(*note_xy, note, transform=ax.transAxes, fontsize=fontsize + 1, va="top")
    ax.legend(fontsize=fontsize, loc=legend_loc, frameon=False)


@contextlib.contextmanager
def figure(path=None, *, figsize=(8, 6), **subplot_kw):
    """An ATLAS-styled figure: yield ``(fig, ax)`` (``subplot_kw``: :meth:`Figure.subplots`' arguments,
    e.g. ``nrows``, ``sharex``, ``gridspec_kw``), then save it to ``path`` (PNG/PDF). The figure is not
    registered with pyplot, so there is nothing to close and nothing left behind."""
    with atlas_style():
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)  # its own Agg canvas (older matplotlib cannot save a bare Figure "tight")
        ax = fig.subplots(**subplot_kw)
        yield fig, ax
        if path is not None:  # atomically: a full disk leaves no half PNG under the final name
            from eventlm.atomic import atomic_path

            with atomic_path(path, mkdir=False) as tmp:
                fig.savefig(tmp, dpi=110, bbox_inches="tight")
