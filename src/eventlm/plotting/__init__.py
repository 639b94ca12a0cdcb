"""All of eventlm's figures. One module per topic; every figure goes through :func:`atlas_style`.

- ``kinematics``: generator validation plots (multiplicities, pT, MET, HT per process)
- ``tokens``: token frequencies per process, tokenizer resolution
- ``training``: loss curves, token confusion matrices
- ``analysis``: anomaly-score stacks in CR/SR with the threshold, ROC and SIC curves
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mplhep as hep  # noqa: E402


@dataclass(frozen=True)
class PlotLabel:
    """What the ATLAS-style label says: ``text`` after the experiment name, sqrt(s) and luminosity."""

    experiment: str = "ATLAS"
    text: str = "Internal"  # mplhep adds "Simulation" itself (data=False)
    com: float = 13  # TeV (an int prints as "13 TeV", not "13.0 TeV")
    lumi: float | None = None  # fb^-1


def atlas_style() -> None:
    """Switch matplotlib to the ATLAS style of mplhep (idempotent)."""
    hep.style.use("ATLAS")


def add_label(ax, label: PlotLabel = PlotLabel(), *, loc: int = 0) -> None:
    """Draw the experiment label with sqrt(s) and luminosity on ``ax``."""
    kwargs = {"com": label.com, "ax": ax, "loc": loc}
    if label.lumi is not None:
        kwargs["lumi"] = label.lumi
    if label.experiment.upper() == "ATLAS":
        hep.atlas.label(label.text, data=False, **kwargs)
    else:
        hep.label.exp_label(exp=label.experiment, text=label.text, data=False, **kwargs)


@contextlib.contextmanager
def figure(path=None, *, figsize=(8, 6), **subplot_kw):
    """Create an ATLAS-styled figure, yield ``(fig, ax)``, save to ``path`` (PNG/PDF) and close it."""
    atlas_style()
    fig, ax = plt.subplots(figsize=figsize, **subplot_kw)
    try:
        yield fig, ax
        if path is not None:
            fig.savefig(path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
