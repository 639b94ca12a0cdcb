"""Generator validation plots: object multiplicities, leading-jet pT, MET and HT per process.

Every histogram is normalized to unit area with the event weights, so processes of very different cross
sections share one axis (shapes, not rates)::

    plot_generator_validation({"ttbar": events, "gluino_1000": sig}, "docs/figures", prefix="generator_")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.events import Kind
from eventlm.plotting import PlotLabel, figure, finish


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    bins: np.ndarray
    integer: bool = False
    logy: bool = False


def _jets(particles):
    return particles[(particles.kind == int(Kind.JET)) | (particles.kind == int(Kind.BJET))]


def event_variables(events: ak.Array) -> dict[str, np.ndarray]:
    """Per-event validation quantities (numpy arrays, GeV)."""
    part = events.particles
    jets = _jets(part)
    lead = ak.fill_none(ak.firsts(jets.pt), 0.0)  # particles are pT-ordered
    leptons = (part.kind == int(Kind.ELECTRON)) | (part.kind == int(Kind.MUON))
    return {
        "n_jets": ak.to_numpy(ak.num(jets)),
        "n_bjets": ak.to_numpy(ak.sum(part.kind == int(Kind.BJET), axis=1)),
        "lead_jet_pt": ak.to_numpy(lead),
        "n_leptons": ak.to_numpy(ak.sum(leptons, axis=1)),
        "met": ak.to_numpy(events.met),
        "ht": ak.to_numpy(ak.sum(jets.pt, axis=1)),
    }


VARIABLES = (
    Variable("n_jets", "Number of jets (incl. b-jets)", np.arange(-0.5, 16.5), integer=True),
    Variable("n_bjets", "Number of b-jets", np.arange(-0.5, 8.5), integer=True),
    Variable("lead_jet_pt", r"Leading jet $p_{\mathrm{T}}$ [GeV]", np.linspace(0, 1200, 49), logy=True),
    Variable("n_leptons", "Number of electrons and muons", np.arange(-0.5, 5.5), integer=True),
    Variable("met", r"$E_{\mathrm{T}}^{\mathrm{miss}}$ [GeV]", np.linspace(0, 1000, 51), logy=True),
    Variable("ht", r"$H_{\mathrm{T}}$ [GeV]", np.linspace(0, 3000, 61), logy=True),
)


#: Line colours (Petroff's colour-blind-safe 6-colour sequence), in the order processes are given.
COLORS = ("#3f90da", "#ffa90e", "#bd1f01", "#94a4a2", "#832db6", "#a96b59")
#: Processes drawn dashed by default (signals).
SIGNALS = ("gluino_1000", "tttt_H500")


def plot_variable(samples: dict[str, ak.Array], variable: Variable, path, *, label: PlotLabel = PlotLabel(),
                  note: str | None = None, signals=SIGNALS) -> None:
    """One normalized distribution per process (overflow added to the last bin); signals dashed."""
    import mplhep as hep

    with figure(path) as (fig, ax):
        for i, (process, events) in enumerate(samples.items()):
            values = np.clip(event_variables(events)[variable.name], variable.bins[0], variable.bins[-1] - 1e-9)
            weights = ak.to_numpy(events.weight).astype(float)
            counts, _ = np.histogram(values, bins=variable.bins, weights=weights)
            total = counts.sum()
            if total > 0:
                counts = counts / total
            hep.histplot(counts, variable.bins, ax=ax, label=f"{process} ({len(events)})", linewidth=2.0,
                         color=COLORS[i % len(COLORS)], linestyle="--" if process in signals else "-")
        ax.set_xlabel(variable.label)
        ax.set_ylabel("Fraction of events")
        ax.set_xlim(variable.bins[0], variable.bins[-1])
        if variable.logy:
            ax.set_yscale("log")
            ax.set_ylim(1e-4, 2.0)
        else:
            ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        finish(ax, label, note=note, note_xy=(0.03, 0.80))


def plot_generator_validation(samples: dict[str, ak.Array], outdir, *, prefix: str = "generator_",
                              label: PlotLabel = PlotLabel(), note: str | None = None, signals=SIGNALS) -> list[Path]:
    """Write one PNG per variable of :data:`VARIABLES` to ``outdir``; returns the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for variable in VARIABLES:
        path = outdir / f"{prefix}{variable.name}.png"
        plot_variable(samples, variable, path, label=label, note=note, signals=signals)
        paths.append(path)
    return paths
