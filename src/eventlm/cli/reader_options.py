"""Command-line options of the experiment readers (NanoAOD, PHYSLITE), shared by ``convert`` and
``info``: ``add_arguments(parser)`` at parser set-up (no heavy imports), ``options(args)`` in ``run``
gives the keywords of :func:`eventlm.io.iter_events` (``nanoaod=``, ``physlite=``)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("CMS NanoAOD and ATLAS PHYSLITE input (see docs/event-model.md)")
    g.add_argument("--process", metavar="NAME", help="process label of every event (default: the file name)")
    g.add_argument("--met", choices=("MET", "PuppiMET"), help="NanoAOD MET collection (default: by Run, from the file)")
    g.add_argument("--btag-branch", metavar="BRANCH", help="NanoAOD b-tag branch (default: Jet_btagDeepFlavB "
                   "for Run 2, Jet_btagPNetB for Run 3)")
    g.add_argument("--btag-wp", metavar="WP", help="NanoAOD b-tag cut: a number, or loose/medium/tight of "
                   "--btag-era (default: medium)")
    g.add_argument("--btag-era", metavar="ERA", help="NanoAOD period of the working point, e.g. 2017, 2022EE "
                   "(default: 2018 for Run 2, 2022 for Run 3)")
    g.add_argument("--physlite-tagger", metavar="TAGGER", help="PHYSLITE b-tagger (default: DL1dv01, else DL1r)")
    g.add_argument("--physlite-btag-eff", type=int, choices=(60, 70, 77, 85), default=77,
                   help="PHYSLITE b-tag working point, b-jet efficiency in %% (default: 77)")
    g.add_argument("--overlap-dr", type=float, metavar="DR", help="ΔR of the jet-lepton overlap removal "
                   "(default: 0.4; 0 switches it off)")
    g.add_argument("--jet-id", choices=("tight", "tightlepveto", "none"), help="NanoAOD jet ID from Jet_jetId "
                   "(default: tight; 'none' reads a file without Jet_jetId, such as NanoAOD v15, without jet ID)")
    g.add_argument("--kinematic-only", action="store_true",
                   help="only the pT and eta cuts: no identification, isolation or overlap removal")


def read_with(args: argparse.Namespace, paths, **kwargs):
    """The events of ``paths`` read with the command's reader options (None when ``paths`` is None)."""
    if paths is None:
        return None
    from eventlm.io import read_events

    return read_events(paths, **kwargs, **options(args))


def options(args: argparse.Namespace) -> dict:
    """``{"nanoaod": NanoAODOptions, "physlite": PHYSLITEOptions}`` from the parsed arguments."""
    from dataclasses import replace

    from eventlm.io.nanoaod import NanoAODOptions
    from eventlm.io.physlite import PHYSLITEOptions

    try:
        return _options(args, NanoAODOptions, PHYSLITEOptions, replace)
    except ValueError as err:
        print(f"eventlm {args.command}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _options(args, NanoAODOptions, PHYSLITEOptions, replace) -> dict:  # noqa: N803 - the classes
    nano = NanoAODOptions.kinematic_only() if args.kinematic_only else NanoAODOptions()
    lite = PHYSLITEOptions.kinematic_only() if args.kinematic_only else PHYSLITEOptions()
    wp = args.btag_wp
    if wp is not None and wp not in ("loose", "medium", "tight"):
        try:
            wp = float(wp)
        except ValueError:
            raise ValueError(f"--btag-wp must be a number or loose/medium/tight, not {wp!r}") from None
    nano = replace(nano, **{k: v for k, v in (("process", args.process), ("met", args.met),
                                              ("btag_branch", args.btag_branch), ("btag_wp", wp),
                                              ("btag_era", args.btag_era), ("overlap_dr", args.overlap_dr))
                            if v is not None})
    if getattr(args, "jet_id", None) is not None:
        nano = replace(nano, jet_id=None if args.jet_id == "none" else args.jet_id)
    lite = replace(lite, btag_wp=args.physlite_btag_eff,
                   **{k: v for k, v in (("process", args.process), ("btag_tagger", args.physlite_tagger),
                                        ("overlap_dr", args.overlap_dr)) if v is not None})
    return {"nanoaod": nano, "physlite": lite}
