"""The linear-programming bound of analysis/bar_bound.py: the LP's optimum on cells whose answer is
known by hand, the per-count quantiles the cells are made of, and the end-to-end report on a reused
column file (no model, no baselines: seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bb():
    spec = importlib.util.spec_from_file_location("bar_bound_script", ROOT / "analysis" / "bar_bound.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lp_splits_the_budget_where_two_signals_pull_apart(bb):
    # three cells: background 0.01 in cell 0 and 0.01 in cell 1 (and the rest in cell 2); signal 1
    # lives in cell 0, signal 2 in cell 1. With a budget of 0.01 the best worst margin takes half of
    # each: eps_S = 0.5 on both, so targets of 0.4 leave t* = +0.1 and targets of 0.6 leave -0.1.
    B = np.array([0.01, 0.01, 0.98])
    S = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t, x = bb.solve(B, S, np.array([0.4, 0.4]), 0.01)
    assert t == pytest.approx(0.1, abs=1e-9)
    assert B @ x <= 0.01 + 1e-12
    t, _ = bb.solve(B, S, np.array([0.6, 0.6]), 0.01)
    assert t == pytest.approx(-0.1, abs=1e-9)
    # one signal alone takes its whole cell
    t, _ = bb.solve(B, S[:1], np.zeros(1), 0.01)
    assert t == pytest.approx(1.0, abs=1e-9)


def test_conditional_quantile_is_the_tail_fraction_within_each_count(bb):
    ref_values = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0])
    ref_n = np.array([2, 2, 2, 2, 5, 5])
    q = bb.conditional_quantile(ref_values, ref_n, np.array([0.0, 2.5, 4.0, 15.0, 25.0, 1.0]),
                                np.array([2, 2, 2, 5, 5, 7]))
    # below everything: 1; between 2 and 3: half above; at the largest: none above; a count with no
    # reference events: beyond every reference (0)
    np.testing.assert_allclose(q, [1.0, 0.5, 0.0, 0.5, 0.0, 0.0])


def test_report_from_reused_columns(bb, tmp_path):
    rng = np.random.default_rng(7)
    n_b, n_s = 4000, 600

    def sample(n, ht_shift=0.0, n_shift=0):
        count = rng.poisson(4, n) + n_shift
        ht = rng.exponential(200, n) + ht_shift
        nll = 5.0 * count + rng.normal(0, 3, n)
        cols = {"default": nll + ht / 100, "nll": nll, "scale": ht + 50 * count, "n": count, "ht": ht,
                "count": count.astype(float)}
        for name in ("isolation_forest", "autoencoder", "deep_svdd", "flow", "combined"):
            cols[name] = rng.normal(0, 1, n)
        return cols

    owners = {"background": sample(n_b), "resonance": sample(n_s, ht_shift=400.0),
              "many_objects": sample(n_s, n_shift=4)}
    np.savez(tmp_path / "columns.npz", **{f"{o}.{c}": v for o, d in owners.items() for c, v in d.items()})
    assert bb.main(["--background", "unused", "--reuse", "--out", str(tmp_path),
                    "--tail-edges", "0.2,0.05,0.01"]) == 0
    import json

    result = json.loads((tmp_path / "bar_bound.json").read_text())
    assert result["signals"] == ["many_objects", "resonance"]
    for key, r in result["spaces"].items():
        assert key.endswith(":0.2,0.05,0.01")
        # the held-out region holds at most eps_B of the half it never saw
        assert r["region_b_eps_b"] <= 0.01 + 1e-9
        # each signal alone does at least as well as in the joint region
        for s in result["signals"]:
            assert r["alone"][s] >= r["region_a"][s] - 1e-9
    assert "| count, HT, NLL for the count |" in (tmp_path / "bar_bound.md").read_text()
