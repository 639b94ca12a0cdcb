"""Which objects make an event anomalous: its score split over its objects (:func:`eventlm.score.explain`).

:func:`plot_event_explanation` draws one event in two panels: left, the event in the (eta, phi) plane,
one marker per object (area ~ pT, colour = the object's NLL term) and the MET as an arrow at its phi;
right, the terms as horizontal bars, one per object (in the event's own order, labelled with kind,
charge and pT) and the event terms (MET, stop or object count), which add up to ``anomaly_score_nll``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventlm.plotting import PlotLabel, add_label, figure

#: Short names of (kind, charge) for the bar labels.
_NAMES = {(0, 0): "jet", (1, 0): "b-jet", (2, -1): "e$^-$", (2, 1): "e$^+$", (3, -1): r"$\mu^-$",
          (3, 1): r"$\mu^+$", (4, 0): r"$\gamma$"}
_MARKERS = {0: "o", 1: "s", 2: "^", 3: "v", 4: "*"}
_KINDS = {0: "jet", 1: "b-jet", 2: "electron", 3: "muon", 4: "photon"}


def plot_event_explanation(event, terms: dict, path, *, title: str | None = None,
                           label: PlotLabel = PlotLabel()) -> Path:
    """Draw one event and its score terms to ``path``.

    ``event``: one record of the event model (``events[i]``); ``terms``: that event's explanation
    columns (``object_nll`` (list), ``met_nll``, ``stop_nll``, ``count_nll``, ``anomaly_score_nll``).
    """
    particles = event["particles"]
    kind = np.asarray(particles["kind"], dtype=int)
    charge = np.asarray(particles["charge"], dtype=int)
    pt = np.asarray(particles["pt"], dtype=float)
    eta = np.asarray(particles["eta"], dtype=float)
    phi = np.asarray(particles["phi"], dtype=float)
    per_object = np.asarray(terms["object_nll"], dtype=float)
    event_terms = [("MET", float(terms["met_nll"])), ("stop (EOS)", float(terms["stop_nll"])),
                   ("object count", float(terms["count_nll"]))]
    event_terms = [(name, value) for name, value in event_terms if value != 0.0]
    total = float(terms["anomaly_score_nll"])
    with figure(path, figsize=(15, 6.5), ncols=2,
                gridspec_kw={"width_ratios": [1, 1.1], "wspace": 0.6}) as (fig, (ax, bx)):
        import matplotlib as mpl

        low = float(per_object.min()) if len(per_object) else 0.0
        norm = mpl.colors.Normalize(vmin=low, vmax=max(per_object.max(initial=0.0), low + 1e-3))
        cmap = mpl.colormaps["viridis"]
        for k in np.unique(kind):
            sel = kind == k
            ax.scatter(eta[sel], phi[sel], s=30 + 400 * pt[sel] / max(pt.max(initial=1.0), 1.0),
                       c=cmap(norm(per_object[sel])), marker=_MARKERS.get(int(k), "o"), edgecolors="black",
                       linewidths=0.8, label=_KINDS.get(int(k), str(k)))
        for i in range(len(pt)):
            ax.annotate(str(i), (eta[i], phi[i]), textcoords="offset points", xytext=(7, 5), fontsize=10)
        met_phi = float(event["met_phi"])
        ax.annotate("", xy=(4.7, met_phi), xytext=(3.7, met_phi),
                    arrowprops={"arrowstyle": "->", "lw": 2, "color": "tab:red"})
        ax.text(4.7, met_phi + 0.15, f"MET {float(event['met']):.0f} GeV", color="tab:red", fontsize=10,
                ha="right", va="bottom")
        ax.set_xlim(-5, 5)
        ax.set_ylim(-np.pi - 0.3, np.pi + 1.6)
        ax.set_xlabel(r"$\eta$")
        ax.set_ylabel(r"$\phi$ [rad]")
        ax.legend(loc="lower left", fontsize=10, frameon=False, ncol=3)
        add_label(ax, label)
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
        bar.set_label("object NLL term [nats]", fontsize=13)

        names = [f"{i}: {_NAMES.get((int(kind[i]), int(charge[i])), '?')} {pt[i]:.0f} GeV" for i in range(len(pt))]
        names += [name for name, _ in event_terms]
        values = np.concatenate([per_object, [v for _, v in event_terms]])
        colours = [cmap(norm(v)) for v in per_object] + ["tab:red"] * len(event_terms)
        y = np.arange(len(values))[::-1]
        bx.barh(y, values, color=colours, edgecolor="black", linewidth=0.6)
        bx.set_yticks(y, names, fontsize=10)
        bx.tick_params(axis="y", which="both", left=False, right=False)
        bx.set_xlabel("NLL term [nats]")
        bx.set_xlim(0, max(values.max(initial=0.0), 1e-6) * 1.25)
        for yi, v in zip(y, values):
            bx.text(v, yi, f" {v:.2f}", va="center", fontsize=9)
        bx.text(0.98, 0.02, f"sum = anomaly_score_nll = {total:.2f}", transform=bx.transAxes, ha="right",
                fontsize=11)
        if title:
            bx.set_title(title, fontsize=12, loc="left")
    return Path(path)
