"""Can one fixed score reach issue 25's bar on every signal at once? An upper bound by linear programming.

The bar: at eps_B = 1e-2, a score's signal efficiency on EVERY signal at least that of the best
reference on that signal (HT alone, the object count alone, the learned baselines). Any score is a
cut ``score > c``, i.e. a region of event space holding 1 % of the background. Restrict the region to
a union of cells of a binned feature space ``phi`` (cells may be taken in part: that is a randomised
cut, the straight line between two ROC points) and the best region is a linear programme::

    maximise t   subject to   sum_b x_b B_b <= eps_B,   sum_b x_b S_kb - T_k >= t  (every signal k),
                              0 <= x_b <= 1

``B_b``/``S_kb``: the background/signal-k fraction in cell b; ``T_k``: the best reference's eps_S on
signal k. ``t* < 0`` means NO function of ``phi`` reaches the bar on all signals together, although
(checked, column "alone") each signal on its own can beat its best reference in the same cells. The
cells are fitted on one half of the events (which flatters the bound: the LP sees the fluctuations it
picks); the region is then measured on the other half, with its budget lowered until it holds eps_B
of that half too. Each ``--tail-edges`` set is run in both spaces ``phi``:
- ``ht``: (object count, HT, the event NLL's background quantile for its object count): HT is the
  reference that wins on the resonances, the count and the NLL the ones that win on the others;
- ``st``: (object count, S_T's quantile for the count, the NLL's quantile for the count): everything
  the default ``anomaly_score`` is a function of, so it bounds every combination of the model's terms.

    .venv/bin/python analysis/bar_bound.py --model runs/validation/model --out runs/bar_bound \\
        --background generated/scaling/part1/background.csv.gz,generated/scaling/part2/background.csv.gz

The background is independent of the model's training (``make scaling-data``: other seeds than data/);
the learned baselines are fitted on the model's own training rows of data/ as in the validation study.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: background tail fractions of the HT / S_T / NLL cell edges (finest where a 1e-2 cut falls)
TAIL_EDGES = (0.5, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002, 0.001)
DEFAULT_EDGES = ",".join(f"{e:g}" for e in TAIL_EDGES)
COARSER_EDGES = ("0.2,0.05,0.02,0.01,0.005,0.001", "0.1,0.02,0.01,0.003")
MAX_COUNT = 11  # object counts above this share one cell
REFERENCES = ("HT alone", "object count alone", "isolation_forest", "autoencoder", "deep_svdd", "flow",
              "combined")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="runs/validation/model", help="a default model trained on data/")
    p.add_argument("--background", required=True,
                   help="comma-separated background files independent of the model (make scaling-data)")
    p.add_argument("--signals", default=str(ROOT / "data"), help="folder of signal files (*.csv.gz)")
    p.add_argument("--train-background", default=str(ROOT / "data" / "background.csv.gz"),
                   help="the file the model was trained on: the baselines are fitted on its training rows")
    p.add_argument("--eps-b", type=float, default=1e-2)
    p.add_argument("--out", default="runs/bar_bound")
    p.add_argument("--tail-edges", action="append",
                   help="background tail fractions of the HT / S_T / NLL cell edges, comma-separated; repeat for "
                        "several cell sets (the first gets the detailed table); default: " + DEFAULT_EDGES
                        + " and two coarser sets")
    p.add_argument("--reuse", action="store_true", help="reuse OUT/columns.npz of an earlier run (same inputs)")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


def eff_at(b: np.ndarray, s: np.ndarray, eps_b: float) -> float:
    from eventlm.metrics import efficiency_at, roc_curve

    return float(efficiency_at(roc_curve(b, s), eps_b, n_background=len(b)) or 0.0)


def conditional_quantile(ref_values, ref_n, values, n) -> np.ndarray:
    """Tail fraction of ``values`` among the reference (background) values of the same object-count
    cell: 1 = lowest, -> 0 = beyond every reference event."""
    out = np.empty(len(values))
    for c in np.unique(n):
        ref = np.sort(ref_values[ref_n == c])
        sel = n == c
        if len(ref) == 0:
            out[sel] = 0.0
            continue
        out[sel] = 1.0 - np.searchsorted(ref, values[sel], side="right") / len(ref)
    return out


def cells(space: str, ref: dict, ev: dict, tail_edges=TAIL_EDGES) -> np.ndarray:
    """The cell index of every event of ``ev`` (a dict of per-event arrays) in ``space``; edges from
    the background ``ref``."""
    n_ref, n = np.minimum(ref["n"], MAX_COUNT), np.minimum(ev["n"], MAX_COUNT)
    u = conditional_quantile(ref["nll"], n_ref, ev["nll"], n)
    tail = -np.array(tail_edges)
    tail_bins = np.searchsorted(tail, -u)  # 0: bulk ... len: beyond the last edge
    if space == "ht":
        edges = np.quantile(ref["ht"], 1.0 + tail)
        second = np.searchsorted(edges, ev["ht"], side="right")
    else:
        second = np.searchsorted(tail, -conditional_quantile(ref["scale"], n_ref, ev["scale"], n))
    k = len(tail_edges) + 1
    return (n * k + second) * k + tail_bins


def solve(B: np.ndarray, S: np.ndarray, targets: np.ndarray, eps_b: float):
    """max t s.t. B.x <= eps_b, S_k.x - T_k >= t, 0 <= x <= 1. Returns (t*, x)."""
    from scipy.optimize import linprog

    n_cells, n_sig = B.shape[0], S.shape[0]
    c = np.zeros(n_cells + 1)
    c[-1] = -1.0
    a_ub = np.zeros((1 + n_sig, n_cells + 1))
    a_ub[0, :n_cells] = B
    a_ub[1:, :n_cells] = -S
    a_ub[1:, -1] = 1.0
    b_ub = np.concatenate([[eps_b], -targets])
    bounds = [(0.0, 1.0)] * n_cells + [(None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
    if not res.success:  # pragma: no cover (the problem is always feasible in x with t free)
        raise RuntimeError(res.message)
    return float(res.x[-1]), res.x[:-1]


def compute_columns(args) -> dict:
    """Every per-event column the bound needs, for the background (``"background"``) and each signal."""
    import awkward as ak

    from eventlm.analysis.baselines import TrainSettings, fit_baselines
    from eventlm.analysis.features import fixed_features, variables_of
    from eventlm.io import read_events
    from eventlm.modeldir import ModelDir
    from eventlm.score import n_objects_of, token_scale

    md = ModelDir(args.model)
    scorer = md.open_scorer()
    background = ak.concatenate([read_events(f) for f in args.background.split(",")])
    signals = {p.name[: -len(".csv.gz")]: read_events(p) for p in sorted(Path(args.signals).glob("*.csv.gz"))
               if p.name not in ("background.csv.gz", "fixture.csv.gz")}
    train_bg = read_events(args.train_background)
    print(f"background {len(background)} events; signals {', '.join(signals)}", flush=True)
    fitted = fit_baselines(fixed_features(md.select(train_bg, "train"), 10), seed=args.seed,
                           settings=TrainSettings(epochs=20),
                           x_calibration=fixed_features(md.select(train_bg, "validation"), 10))

    def columns(events) -> dict:
        tokens = scorer.tokenizer.encode(events)
        cols = scorer.score_tokens(tokens)
        var = variables_of(events)
        feats = fixed_features(events, 10)
        d = {"default": cols["anomaly_score"].astype(np.float64), "nll": cols["anomaly_score_nll"].astype(np.float64),
             "scale": token_scale(scorer.tokenizer, tokens), "n": n_objects_of(scorer.tokenizer, tokens),
             "ht": var["ht"], "count": var["n_particles"].astype(np.float64)}
        for name, b in fitted.items():
            d[name] = b.score(feats)
        return d

    return {"background": columns(background), **{s: columns(ev) for s, ev in signals.items()}}


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "columns.npz"
    if args.reuse and cache.exists():
        flat = dict(np.load(cache))
        cols = {}
        for key, v in flat.items():
            owner, col = key.rsplit(".", 1)
            cols.setdefault(owner, {})[col] = v
        print(f"reusing {cache}", flush=True)
    else:
        cols = compute_columns(args)
        np.savez(cache, **{f"{owner}.{c}": v for owner, d in cols.items() for c, v in d.items()})
    background_size = len(cols["background"]["nll"])
    edge_sets = [tuple(float(e) for e in text.split(","))
                 for text in (args.tail_edges or [DEFAULT_EDGES, *COARSER_EDGES])]
    rng = np.random.default_rng(args.seed)

    def halves(d: dict):
        perm = rng.permutation(len(d["nll"]))
        a, b = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])
        return {k: v[a] for k, v in d.items()}, {k: v[b] for k, v in d.items()}

    bg_a, bg_b = halves(cols.pop("background"))
    sig = {s: halves(cols[s]) for s in sorted(cols)}
    names = list(sig)
    ref_col = {"HT alone": "ht", "object count alone": "count"}
    eps = args.eps_b

    def reference_table(bg, half):
        return {s: {r: eff_at(bg[ref_col.get(r, r)], sig[s][half][ref_col.get(r, r)], eps) for r in REFERENCES}
                for s in names}

    refs_a, refs_b = reference_table(bg_a, 0), reference_table(bg_b, 1)
    targets = np.array([max(refs_a[s].values()) for s in names])
    default_a = {s: eff_at(bg_a["default"], sig[s][0]["default"], eps) for s in names}
    default_b = {s: eff_at(bg_b["default"], sig[s][1]["default"], eps) for s in names}
    result = {"eps_b": eps, "background_events": background_size, "signals": names, "spaces": {}}
    sizes = ", ".join(f"{s} ({len(sig[s][0]['nll'])}+{len(sig[s][1]['nll'])})" for s in names)
    lines = [f"Background: {background_size} events independent of the model (halves of {len(bg_a['nll'])}); "
             f"signals: {sizes}. "
             f"eps_S at eps_B = {eps:g}; cells fitted on half A, measured on half B.", ""]

    def bound(space: str, edges) -> dict:
        n_cells = (MAX_COUNT + 1) * (len(edges) + 1) ** 2

        def fractions(ev):
            return np.bincount(cells(space, bg_a, ev, edges), minlength=n_cells) / len(ev["nll"])

        cb_a, cb_b = fractions(bg_a), fractions(bg_b)
        cs_a = np.stack([fractions(sig[s][0]) for s in names])
        cs_b = np.stack([fractions(sig[s][1]) for s in names])
        alone = {s: solve(cb_a, cs_a[i:i + 1], np.zeros(1), eps)[0] for i, s in enumerate(names)}
        t_all, x = solve(cb_a, cs_a, targets, eps)
        pairs = {f"{names[i]} + {names[j]}": solve(cb_a, cs_a[[i, j]], targets[[i, j]], eps)[0]
                 for i, j in itertools.combinations(range(len(names)), 2)}
        # the LP sees half A's fluctuations: lower its budget until the region holds eps_B of half B too
        budget = eps
        while float(cb_b @ x) > eps and budget > eps / 100:
            budget *= 0.95
            x = solve(cb_a, cs_a, targets, budget)[1]
        if float(cb_b @ x) > eps:  # the LP's optimum is not unique: thin the region uniformly to eps_B
            x = x * (eps / float(cb_b @ x))
        return {"n_cells": n_cells, "t_all": t_all, "alone": alone, "pairs": pairs, "budget_a": budget,
                "region_a": {s: float(cs_a[i] @ x) for i, s in enumerate(names)},
                "region_b": {s: float(cs_b[i] @ x) for i, s in enumerate(names)},
                "region_b_eps_b": float(cb_b @ x)}

    titles = {"ht": "count, HT, NLL for the count", "st": "count, S_T for the count, NLL for the count"}
    summary = ["| cells | edges (background tail fractions) | n cells | t* on half A | held-out region: signals at or "
               "above the best reference on half B | worst held-out margin | the binding pair on A |",
               "|---|---|---|---|---|---|---|"]
    detail = []
    for edges in edge_sets:
        for space in ("ht", "st"):
            r = bound(space, edges)
            key = f"{space}:{','.join(f'{e:g}' for e in edges)}"
            result["spaces"][key] = r
            margins = {s: r["region_b"][s] - max(refs_b[s].values()) for s in names}
            pair, t_pair = min(r["pairs"].items(), key=lambda kv: kv[1])
            summary.append(f"| {titles[space]} | {', '.join(f'{e:g}' for e in edges)} | {r['n_cells']} | "
                           f"{r['t_all']:+.3f} | {sum(m >= 0 for m in margins.values())} of {len(names)} | "
                           f"{min(margins.values()):+.3f} ({min(margins, key=margins.get)}) | {pair}: {t_pair:+.3f} |")
            if edges != edge_sets[0]:
                continue
            detail += [f"### Cells ({titles[space]}), {r['n_cells']} cells: t* = {r['t_all']:+.3f}", "",
                       "| signal | best reference (A) | its eps_S | this signal alone (LP, A) | the joint region, A | "
                       "the joint region, B | best reference, B | the default, A / B |",
                       "|---|---|---|---|---|---|---|---|"]
            for i, s in enumerate(names):
                best = max(refs_a[s], key=refs_a[s].get)
                detail.append(f"| {s} | {best} | {targets[i]:.3f} | {r['alone'][s]:.3f} | {r['region_a'][s]:.3f} | "
                              f"{r['region_b'][s]:.3f} | {max(refs_b[s].values()):.3f} | "
                              f"{default_a[s]:.3f} / {default_b[s]:.3f} |")
            detail += ["", f"The joint region's budget on half A is lowered to {r['budget_a']:.4f} so that it holds "
                       f"{r['region_b_eps_b']:.4f} of the independent half B.", ""]
    lines += summary + [""] + detail
    result["references_a"], result["references_b"] = refs_a, refs_b
    result["default_a"], result["default_b"] = default_a, default_b
    text = "\n".join(lines) + "\n"
    (out / "bar_bound.md").write_text(text)
    (out / "bar_bound.json").write_text(json.dumps(result, indent=1))
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
