"""``eventlm demo``: the main job (``make demo``): train, score, analyse both studies, print results."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train, score and analyse the bundled samples end to end",
        description="On the bundled samples (data/): train the default model on the background, score the "
        "background test split and both signals, fit the baselines, run the tttt_H500 and gluino_1000 "
        "studies (analysis/*.toml, installed with the package too) and print the results table. About 10 "
        "minutes on a 2-core CPU.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output directory (default: demo_out)")
    p.add_argument("--quick", action="store_true",
                   help="reduced configuration (a few thousand events, one short epoch): a smoke test")
    p.add_argument("--executor", choices=("iterative", "futures", "dask"), default="iterative",
                   help="coffea executor of the analysis step")
    p.add_argument("--data", metavar="DIR", help="directory of the samples (default: the source checkout's data/; "
                   "an installed package has none: pass the data/ folder of a checkout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from eventlm.atomic import check_location, removed_on_error
    from eventlm.extras import require_extra

    require_extra("analysis", "eventlm demo")
    from eventlm.demo import DemoSettings, run_demo

    check_location(args.out, directory=True)  # before any training
    settings = DemoSettings.quick() if args.quick else DemoSettings.full()
    settings = replace(settings, executor=args.executor)
    with removed_on_error(args.out):  # a failed demo leaves no --out behind
        run_demo(args.out, quick=args.quick, settings=settings, data_dir=args.data)
    return 0
