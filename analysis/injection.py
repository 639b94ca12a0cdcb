"""Signal injection with Poisson toys on a study's workspace (docs/statistics.md, "Coverage").

    .venv/bin/python analysis/injection.py OUT/workspace.json --toys 300 [--measurement SIGNAL]

For mu_true = 0 and 1: toys drawn from the model (main and auxiliary data), each fitted with pyhf
(eventlm.analysis.stats.injection); prints the mean fitted mu, the likelihood-ratio pulls (mean, width)
and the Kolmogorov-Smirnov p-value of the background-only discovery p-values against uniform, and
writes them to injection.json beside the workspace.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from eventlm.analysis.stats import injection


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--measurement", default=None, help="signal (default: every measurement)")
    parser.add_argument("--toys", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    spec = json.loads(args.workspace.read_text())
    names = [args.measurement] if args.measurement else [m["name"] for m in spec["measurements"]]
    out = {}
    for name in names:
        for mu in (0.0, 1.0):
            t0 = time.perf_counter()
            r = injection(spec, name, mu, n_toys=args.toys, seed=args.seed)
            r["seconds"] = time.perf_counter() - t0
            out[f"{name} mu={mu:g}"] = {k: v for k, v in r.items() if k not in ("mu_hat", "pulls", "p_values")}
            print(f"{name} mu_true={mu:g}: {args.toys} toys ({r['failed']} failed fits), mu_hat mean "
                  f"{r['mu_hat_mean']:.3f} ± {r['mu_hat_mean_error']:.3f}, median {r['mu_hat_median']:.3f} (sigma_A "
                  f"{r['sigma_asimov']:.3f}), "
                  f"pull mean {r['pull_mean']:+.3f} ± {r['pull_mean_error']:.3f}, width {r['pull_width']:.3f} ± "
                  f"{r['pull_width_error']:.3f}, "
                  + (f"KS p (p-values uniform) {r['ks_p_uniform']:.3f}, " if mu == 0 else "")
                  + f"{r['seconds']:.0f} s", flush=True)
    (args.workspace.parent / "injection.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
