"""Token figures: the token frequency of each process ("repartition of the tokens between signal and
background") and, for learned tokenizers, the decoded-vs-input resolution of pT, eta and phi."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventlm.plotting import PlotLabel, add_label, figure

#: ``add_label`` draws "Simulation" itself for non-data figures; this keeps it from appearing twice.
DEFAULT_LABEL = PlotLabel()


def plot_token_frequency(
    counts: dict[str, np.ndarray],
    path,
    *,
    n_content: int,
    boundaries: list[tuple[float, str]] | None = None,
    title: str | None = None,
    label: PlotLabel = DEFAULT_LABEL,
) -> Path:
    """Fraction of each process's tokens per content id (1..n_content), one step line per process.

    ``counts[process]`` holds occurrences indexed by token id. ``boundaries``: ``(id, text)`` markers,
    e.g. the start of the MET tokens.
    """
    ids = np.arange(1, n_content + 1)
    edges = np.arange(0.5, n_content + 1.5)
    with figure(path, figsize=(11, 6)) as (fig, ax):
        top = 0.0
        # fewest tokens first, so the well-populated processes are drawn on top of the noisy ones;
        # colours stay those of the input order
        colour = {process: f"C{i}" for i, process in enumerate(counts)}
        for process, c in sorted(counts.items(), key=lambda item: np.asarray(item[1])[ids].sum()):
            c = np.asarray(c, dtype=float)[ids]
            total = c.sum()
            if total == 0:
                continue
            frac = c / total
            top = max(top, frac.max())
            ax.stairs(frac, edges, label=f"{process} ({int(total):,} tokens)", lw=1.4,
                      color=colour[process], baseline=None)
        marks = sorted(boundaries or [])
        for k, (x, text) in enumerate(marks):
            end = marks[k + 1][0] if k + 1 < len(marks) else n_content + 1
            ax.axvspan(x - 0.5, end - 0.5, color=f"C{7 + k}", alpha=0.25, lw=0,
                       label=f"{text} tokens ({x}-{end - 1})")
        ax.set_yscale("log")
        ax.set_ylim(1e-6, max(top, 1e-5) * 30)
        ax.set_xlim(0.5, n_content + 0.5)
        ax.set_xlabel("Token id")
        ax.set_ylabel("Fraction of tokens")
        ax.legend(loc="upper right", fontsize="small", title=title, title_fontsize="small")
        add_label(ax, label)
    return Path(path)


def plot_resolution(arrays: dict[str, np.ndarray], out_dir, *, prefix: str = "resolution",
                    label: PlotLabel = DEFAULT_LABEL) -> list[Path]:
    """Decoded vs input pT, eta, phi (2D, log colour) for a learned tokenizer; one PNG per variable.

    ``arrays``: :meth:`eventlm.tokenize.learned.LearnedTokenizer.resolution_arrays`.
    """
    from matplotlib.colors import LogNorm

    out_dir = Path(out_dir)
    pt_all = np.concatenate([arrays["pt_in"], arrays["pt_out"]])
    pt_lo, pt_hi = np.percentile(pt_all, [0.05, 99.9]) if len(pt_all) else (10.0, 1000.0)
    specs = [
        ("pt", r"$p_{T}$", "GeV", np.geomspace(max(pt_lo * 0.9, 1.0), pt_hi * 1.1, 61), True),
        ("eta", r"$\eta$", None, np.linspace(-3, 3, 61), False),
        ("phi", r"$\phi$", "rad", np.linspace(-np.pi, np.pi, 61), False),
    ]
    paths = []
    for name, tex, unit, bins, logscale in specs:
        x, y = arrays[f"{name}_in"], arrays[f"{name}_out"]
        path = out_dir / f"{prefix}_{name}.png"
        unit_text = f" [{unit}]" if unit else ""
        with figure(path, figsize=(9, 7)) as (fig, ax):
            h, xe, ye, img = ax.hist2d(x, y, bins=[bins, bins], norm=LogNorm(), cmap="viridis")
            fig.colorbar(img, ax=ax, label="Particles")
            ax.plot(bins[[0, -1]], bins[[0, -1]], color="gray", ls="--", lw=1, label="decoded = input")
            if logscale:
                ax.set_xscale("log")
                ax.set_yscale("log")
            ax.set_xlabel(f"Input {tex}{unit_text}")
            ax.set_ylabel(f"Decoded token {tex}{unit_text}")
            add_label(ax, label, loc=0)
        paths.append(path)
    return paths
