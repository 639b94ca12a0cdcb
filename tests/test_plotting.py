"""eventlm's figures: nothing global changes on import or use, and the PNGs hold what they draw."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from eventlm.plotting.training import plot_loss

METRICS = {"epoch": [1, 2, 3], "train_loss": [3.0, 2.5, 2.3], "val_loss": [2.8, 2.4, 2.35],
           "step_loss": [float(x) for x in np.linspace(3.2, 2.2, 60)], "unigram_entropy": 3.5, "best_epoch": 3}


def test_plotting_leaves_backend_style_and_open_figures_alone(tmp_path):
    """A notebook's backend, rcParams and open figures survive importing and using eventlm.plotting."""
    code = textwrap.dedent(f"""
        import math
        import matplotlib
        import matplotlib.pyplot as plt

        backend = matplotlib.get_backend()
        before = dict(matplotlib.rcParams)
        mine = plt.figure()  # the user's open figure
        import eventlm.plotting
        from eventlm.plotting.training import plot_loss
        plot_loss({METRICS!r}, {str(tmp_path / "loss.png")!r})
        assert matplotlib.get_backend() == backend, (backend, matplotlib.get_backend())
        assert plt.get_fignums() == [mine.number], plt.get_fignums()
        after = dict(matplotlib.rcParams)
        changed = [k for k in before if before[k] != after[k]
                   and not (isinstance(before[k], float) and math.isnan(before[k]) and math.isnan(after[k]))]
        assert not changed, changed
        print("ok")
    """)
    env = {**os.environ, "MPLBACKEND": "svg"}  # not eventlm's Agg: a switch would show
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ok"
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_loss_figure_draws_both_curves(tmp_path):
    """The PNG is the figure's size and shows the train (blue) and validation (orange) curves and
    the best epoch (green), which is left out when the metrics name none."""
    import matplotlib.image as mpimg
    from matplotlib.colors import to_rgb

    path = plot_loss(METRICS, tmp_path / "loss.png")
    image = mpimg.imread(path)[..., :3]
    height, width = image.shape[:2]
    assert 500 < width < 1200 and 400 < height < 900  # 8 x 6 in at 110 dpi, trimmed
    for colour in ("tab:blue", "tab:orange", "tab:green"):
        near = np.abs(image - np.array(to_rgb(colour))).max(axis=-1) < 0.08
        assert near.sum() > 200, colour
    no_best = plot_loss({k: v for k, v in METRICS.items() if k != "best_epoch"}, tmp_path / "no_best.png")
    image = mpimg.imread(no_best)[..., :3]
    green = np.abs(image - np.array(to_rgb("tab:green"))).max(axis=-1) < 0.08
    assert green.sum() == 0  # no best-epoch line (nor its legend entry) without a best epoch
