"""Tokenizer throughput: the vectorized look-up table against a per-event Python loop on the same
particles (same run, one thread), and VQ-VAE encoding in events/s on CPU.

    python benchmarks/tokenize.py [--particles 1000000] [--update-docs]
"""

from __future__ import annotations

import os

import _report  # first: it takes benchmarks/ off sys.path (this file shadows the stdlib tokenize)

import argparse  # noqa: E402
import bisect  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import awkward as ak  # noqa: E402
import numpy as np  # noqa: E402

from eventlm.events import make_events, make_particles  # noqa: E402
from eventlm.tokenize import get_tokenizer  # noqa: E402
from eventlm.tokenize.particles import _CAT_TABLE  # noqa: E402


def synthetic_events(n_particles: int, seed: int = 0) -> ak.Array:
    """Events with 0-18 particles (mean ~9) until ``n_particles`` are reached; physical ranges."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 19, size=int(n_particles / 9 * 1.1))
    counts = counts[: np.searchsorted(np.cumsum(counts), n_particles) + 1]
    counts[-1] -= counts.sum() - n_particles
    total = int(counts.sum())
    kind = rng.choice(np.array([0, 0, 0, 0, 1, 1, 2, 3, 4]), size=total)
    charge = np.where((kind == 2) | (kind == 3), rng.choice([-1, 1], size=total), 0)
    pt = 20 + rng.exponential(60, size=total)
    eta = rng.uniform(-2.7, 2.7, size=total)
    phi = rng.uniform(-np.pi, np.pi, size=total)
    n = len(counts)
    return make_events(
        event_id=np.arange(n), process="ttbar", weight=np.ones(n),
        met=rng.exponential(80, size=n), met_phi=rng.uniform(-np.pi, np.pi, size=n),
        particles=make_particles(kind, charge, pt, eta, phi, pt * np.cosh(eta), counts),
    )


def python_loop_encode(events, tok) -> list[list[int]]:
    """The baseline: one event at a time, one particle at a time, with ``bisect`` for the bins and
    phi measured from the leading object as the default table does (``phi_reference="leading"``)."""
    pt_edges, eta_edges, met_edges = tok.pt_edges.tolist(), tok.eta_edges.tolist(), tok.met.edges.tolist()
    n_pt, n_eta, n_phi = tok.n_pt, tok.n_eta, tok.n_phi
    first_met = tok.n_particle_tokens + 1
    cat_table = _CAT_TABLE.tolist()
    leading = tok.phi_reference == "leading"

    def rotated(phi, reference):  # phi measured from the reference, wrapped into [-pi, pi)
        return (phi - reference + math.pi) % (2 * math.pi) - math.pi if leading else phi

    out = []
    for event in ak.to_list(events[["met", "met_phi", "particles"]]):
        parts = []
        for i, p in enumerate(event["particles"]):
            cat = cat_table[p["kind"]][p["charge"] + 1]
            parts.append((cat, -p["pt"], i, p))
        # the leading object (the first of the highest pT, before truncation), else the MET
        reference = max(event["particles"], key=lambda p: p["pt"])["phi"] if parts else event["met_phi"]
        parts.sort()
        tokens = []
        for cat, _, _, p in parts[: tok.max_particles]:
            cpt = bisect.bisect_right(pt_edges, p["pt"]) + 1
            ceta = bisect.bisect_right(eta_edges, abs(p["eta"])) + 1
            cphi = min(int((rotated(p["phi"], reference) + math.pi) * (n_phi / (2 * math.pi))), n_phi - 1) + 1
            tokens.append((cat - 1) * n_pt * n_eta * n_phi + (cpt - 1) * n_eta * n_phi + (ceta - 1) * n_phi + cphi)
        tokens.append(first_met + bisect.bisect_right(met_edges, event["met"]))
        met_phi = rotated(event["met_phi"], reference)
        cmphi = min(int((met_phi + math.pi) * (tok.n_met_phi / (2 * math.pi))), tok.n_met_phi - 1) + 1
        tokens.append(first_met + tok.n_met + cmphi - 1)
        out.append(tokens)
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=1_000_000)
    parser.add_argument("--vq-events", type=int, default=50_000)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    events = synthetic_events(args.particles)
    n_particles = int(ak.sum(ak.num(events.particles)))
    tok = get_tokenizer("lut").fit(events)
    t_vec, tokens = best_of(lambda: tok.encode(events), 3)
    t_loop, loop_tokens = best_of(lambda: python_loop_encode(events, tok), 1)
    assert ak.to_list(tokens) == loop_tokens, "vectorized and loop encodings differ"
    t_dec, _ = best_of(lambda: tok.decode(tokens), 3)
    rate_vec, rate_loop = n_particles / t_vec, n_particles / t_loop
    print(f"LUT encode, {n_particles:,} particles in {len(events):,} events: "
          f"vectorized {t_vec:.3f} s ({rate_vec / 1e6:.1f} M particles/s), "
          f"Python loop {t_loop:.1f} s ({rate_loop / 1e6:.3f} M particles/s): {t_loop / t_vec:.0f}x")
    print(f"LUT decode: {t_dec:.3f} s ({n_particles / t_dec / 1e6:.1f} M particles/s)")

    vq_events = events[: args.vq_events]
    vq = get_tokenizer("vqvae", seed=0)
    t_fit, _ = best_of(lambda: vq.fit(events[:20_000], epochs=1, progress=False), 1)
    vq_particles = int(ak.sum(np.minimum(ak.num(vq_events.particles), 18)))
    t_vq, _ = best_of(lambda: vq.encode(vq_events), 2)
    print(f"VQ-VAE (512 codes) encode on CPU, 1 thread: {len(vq_events) / t_vq:,.0f} events/s "
          f"({vq_particles / t_vq / 1e6:.2f} M particles/s); 1 training epoch on 20k events {t_fit:.1f} s")
    graph = get_tokenizer("graph", seed=0)
    graph.fit(events[:5_000], epochs=1, progress=False)
    g_events = events[:10_000]
    t_graph, _ = best_of(lambda: graph.encode(g_events), 1)
    print(f"graph VQ encode on CPU, 1 thread: {len(g_events) / t_graph:,.0f} events/s")

    if args.update_docs:
        md = f"""### Tokenizers (`benchmarks/tokenize.py`)

Machine: {_report.machine()}; numpy and torch limited to one thread.

| tokenizer | what | time | rate |
|---|---|---|---|
| look-up table, vectorized | encode {n_particles:,} particles ({len(events):,} events) | {t_vec:.3f} s | {rate_vec / 1e6:.1f} M particles/s |
| look-up table, per-event Python loop (baseline) | same particles, same tokens | {t_loop:.1f} s | {rate_loop / 1e6:.3f} M particles/s |
| look-up table, vectorized | decode the same tokens | {t_dec:.3f} s | {n_particles / t_dec / 1e6:.1f} M particles/s |
| VQ-VAE (512 codes), CPU | encode {len(vq_events):,} events | {t_vq:.2f} s | {len(vq_events) / t_vq:,.0f} events/s |
| graph VQ (2 GAT layers, k=8), CPU | encode {len(g_events):,} events | {t_graph:.2f} s | {len(g_events) / t_graph:,.0f} events/s |

Vectorized look-up table / Python loop: **{t_loop / t_vec:.0f}x** (both produce identical tokens; the
script asserts it). Synthetic events (0-18 particles, mean 9; `synthetic_events` in the script), so
the rates do not depend on the bundled samples. The machine is shared, so absolute rates are lower bounds.
"""
        _report.update_section("tokenize", md)
        print("updated docs/benchmarks.md (tokenize)")


if __name__ == "__main__":
    main()
