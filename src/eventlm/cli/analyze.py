"""``eventlm analyze``: run one study (coffea processor, CR/SR threshold, metrics, baselines, plots)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="run the CR/SR anomaly analysis of a study config",
        description="Run the study in CONFIG.toml (see analysis/*.toml and docs/analysis.md): score the "
        "events with the coffea processor, choose the threshold in the control region, apply it in the "
        "signal region, compare with the baselines. Writes to DIR: hists.pkl and hists.root (histograms), "
        "metrics.json, results.md, scored/<dataset>/*.root (the scored events, one ROOT skim per chunk, "
        "written by the workers) and the figures (*.png).",
    )
    p.add_argument("config", metavar="CONFIG.toml", help="the study config")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--model", metavar="DIR", help="model directory (overrides [study] model)")
    p.add_argument("--executor", choices=("iterative", "futures", "dask"), help="coffea executor ([run] executor)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes for futures/dask ([run] workers)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eventlm.analysis.config import load_config
    from eventlm.analysis.runner import run_analysis

    config = load_config(args.config)
    run_overrides = {}
    if args.executor:
        run_overrides["executor"] = args.executor
    if args.workers:
        run_overrides["workers"] = args.workers
    if args.scheduler:
        run_overrides["scheduler"] = args.scheduler
        run_overrides.setdefault("executor", "dask")
    overrides = {"run": run_overrides} if run_overrides else {}
    if args.no_baselines:
        overrides["baselines"] = {"names": ()}
    if overrides:
        config = config.with_overrides(**overrides)
    result = run_analysis(config, args.out, model=args.model, progress=not args.no_progress)
    print(result.table)
    print(f"wrote {result.out_dir}/ in {result.seconds:.0f} s: results.md, metrics.json, hists.pkl, hists.root, "
          f"scored/, {sum(1 for k in result.files if str(result.files[k]).endswith('.png'))} figures")
    return 0
