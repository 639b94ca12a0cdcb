"""Training figures: loss curves and token-reconstruction confusion matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventlm.plotting import PlotLabel, add_label, figure


def plot_loss(metrics: dict, path, *, label: PlotLabel = PlotLabel()) -> Path:
    """Train and validation loss per epoch (and the unigram entropy, the no-context baseline)."""
    epochs = np.asarray(metrics["epoch"])
    with figure(path) as (fig, ax):
        steps = np.asarray(metrics.get("step_loss", []), dtype=float)
        if len(steps) and len(epochs):
            x = np.arange(1, len(steps) + 1) / len(steps) * epochs[-1]
            window = max(1, len(steps) // 50)
            smooth = np.convolve(steps, np.ones(window) / window, mode="valid")
            ax.plot(x[window - 1 :], smooth, color="tab:blue", alpha=0.35, lw=1, label="train (per step, smoothed)")
        ax.plot(epochs, metrics["train_loss"], "o-", color="tab:blue", label="train")
        ax.plot(epochs, metrics["val_loss"], "s-", color="tab:orange", label="validation")
        if metrics.get("unigram_entropy") is not None:
            ax.axhline(metrics["unigram_entropy"], color="gray", ls="--", label="unigram entropy")
        best = metrics.get("best_epoch")
        if best:
            ax.axvline(best, color="tab:green", ls=":", label=f"best epoch ({best})")
        ax.set_xlabel("Epoch")
        ax.set_ylabel("Cross entropy [nats]")
        ax.set_xlim(0, max(1, epochs[-1] if len(epochs) else 1) + 0.2)
        curves = [*metrics["train_loss"], *metrics["val_loss"]]
        if metrics.get("unigram_entropy") is not None:
            curves.append(metrics["unigram_entropy"])
        lo, hi = (min(curves), max(curves)) if curves else (0.0, 1.0)
        span = max(hi - lo, 0.1)
        ax.set_ylim(max(0.0, lo - 0.3 * span), hi + 0.8 * span)  # room for the legend and label
        ax.legend(loc="upper right", fontsize="small")
        add_label(ax, label)
    return Path(path)


def plot_confusion(
    matrices: dict[str, np.ndarray],
    path,
    *,
    n_content: int | None = None,
    boundaries: list[tuple[float, str]] | None = None,
    label: PlotLabel = PlotLabel(),
) -> Path:
    """True vs predicted token, one panel per sample (e.g. ``{"Background": m, "Signal": m}``).

    ``matrices[name][true, pred]`` are counts over token ids; only content ids 1..n_content are shown.
    Each true-token column is normalised to the fraction of its masked occurrences (colour, log
    scale). ``boundaries``: ``(token id, text)`` lines, e.g. where the MET tokens start.
    """
    from matplotlib.colors import LogNorm

    names = [n for n in matrices]
    with figure(path, figsize=(9.0 * len(names), 7.5), ncols=len(names), squeeze=False) as (fig, axes):
        fig.subplots_adjust(wspace=0.35)
        for ax, name in zip(axes[0], names):
            m = np.asarray(matrices[name], dtype=float)
            hi = n_content if n_content is not None else m.shape[0] - 1
            m = m[1 : hi + 1, 1 : hi + 1]
            total = m.sum()
            col = m.sum(axis=1, keepdims=True)
            frac = np.divide(m, col, out=np.zeros_like(m), where=col > 0)
            frac[frac == 0] = np.nan
            im = ax.imshow(
                frac.T, origin="lower", extent=(0.5, hi + 0.5, 0.5, hi + 0.5), aspect="auto",
                norm=LogNorm(vmin=1e-3, vmax=1.0), cmap="viridis", interpolation="nearest",
            )
            ax.plot([0.5, hi + 0.5], [0.5, hi + 0.5], color="white", lw=0.5, alpha=0.4)
            for pos, text in boundaries or []:
                ax.axvline(pos - 0.5, color="red", lw=0.6, alpha=0.6)
                ax.axhline(pos - 0.5, color="red", lw=0.6, alpha=0.6)
            acc = np.trace(m) / total if total else float("nan")
            ax.set_xlabel("True token")
            ax.set_ylabel("Predicted token")
            ax.set_xlim(0.5, hi + 0.5)
            ax.set_ylim(0.5, hi * 1.15)  # room for the label
            ax.text(0.03, 0.86, f"{name}\n{int(total)} masked tokens, accuracy {acc:.3f}", transform=ax.transAxes,
                    fontsize="x-small", va="top")
            fig.colorbar(im, ax=ax, label="Fraction of true token", pad=0.02)
            add_label(ax, label)
    return Path(path)
