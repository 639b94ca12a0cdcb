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
    """What the ATLAS-style label says: ``text`` after the experiment name, sqrt(s) and luminosity."""

    experiment: str = "ATLAS"
    text: str = "Internal"  # mplhep adds "Simulation" itself (data=False)
    com: float = 13  # TeV (an int prints as "13 TeV", not "13.0 TeV")
    lumi: float | None = None  # fb^-1


@contextlib.contextmanager
def atlas_style():
    """The ATLAS style of mplhep inside the block; matplotlib's settings are restored after it."""
    with matplotlib.rc_context(hep.style.ATLAS):
        yield


def add_label(ax, label: PlotLabel = PlotLabel(), *, loc: int = 0) -> None:
    """Draw the experiment label with sqrt(s) and luminosity on ``ax``."""
    kwargs = {"com": label.com, "ax": ax, "loc": loc}
    if label.lumi is not None:
        kwargs["lumi"] = label.lumi
    if label.experiment.upper() == "ATLAS":
        hep.atlas.label(label.text, data=False, **kwargs)
    else:
        hep.label.exp_label(exp=label.experiment, text=label.text, data=False, **kwargs)


def finish(ax, label: PlotLabel = PlotLabel(), *, note: str | None = None, note_xy=(0.04, 0.86),
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
        if path is not None:
            fig.savefig(path, dpi=110, bbox_inches="tight")
