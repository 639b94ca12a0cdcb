"""``eventlm analyze``: run one study (coffea processor, CR/SR threshold, metrics, baselines, plots)."""

from __future__ import annotations

import argparse

from eventlm.cli import add_no_progress, positive_int


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
    p.add_argument("--workers", type=positive_int, metavar="N", help="worker processes for futures/dask ([run] workers)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    add_no_progress(p)
    from eventlm.cli.reader_options import add_arguments

    add_arguments(p)  # how the samples are read (as the model was trained)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from eventlm.extras import require_extra

    require_extra("analysis", "eventlm analyze")
    from eventlm.analysis.config import load_analysis_config
    from eventlm.analysis.runner import run_analysis
    from eventlm.atomic import removed_on_error
    config = load_analysis_config(args.config)
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
    from eventlm.cli.reader_options import options

    reader = options(args)
    precheck(config, args.model, args.out, reader)
    with removed_on_error(args.out):  # a failed study leaves no --out behind
        result = run_analysis(config, args.out, model=args.model, progress=not args.no_progress, reader=reader)
    print(result.table)
    print(f"wrote {result.out_dir}/ in {result.seconds:.0f} s: results.md, metrics.json, hists.pkl, hists.root, "
          f"scored/, {sum(1 for k in result.files if str(result.files[k]).endswith('.png'))} figures")
    return 0


def precheck(config, model, out, reader: dict | None = None) -> None:
    """What can be checked before the processing: the output directory, the model directory (whole),
    the inputs (readable; without a model they must carry the score column), and the regions (the
    control region must select background, and signal for Youden's J; an empty signal region is
    worth a warning, not a silent ``n/a`` at the end)."""
    import logging
    from pathlib import Path

    import numpy as np

    from eventlm.analysis.config import AnalysisConfigError
    from eventlm.atomic import check_location
    from eventlm.cli import check_inputs
    from eventlm.io import detect_format, iter_events

    log = logging.getLogger("eventlm.analyze")
    source = str(config.path or "the study config")
    check_location(out, directory=True)
    if config.run.executor == "dask" and config.run.scheduler:  # nothing listening: fail now, in one line
        from eventlm.analysis.execution import check_scheduler

        check_scheduler(config.run.scheduler, f"{source}: [run] scheduler (--scheduler)")
    model_dir = Path(model) if model is not None else config.study.model
    if model_dir is not None:
        from eventlm.modeldir import ModelDir

        ModelDir(model_dir).check()
        from eventlm.card import read_card, reader_difference

        difference = reader_difference(read_card(model_dir), reader)
        if difference:
            log.warning("%s: %s", model_dir, difference)
    datasets: dict[str, list] = {}
    for sample in config.all_samples:
        name = {"background": "background", "data": "data"}.get(sample.role, sample.label)
        datasets.setdefault(name, []).extend(sample.files)
    if not datasets.get("background"):
        raise AnalysisConfigError(f"{source}: no background sample ([samples.*] with role = \"background\", or "
                                  "[inputs] background)")
    if not config.signals:
        raise AnalysisConfigError(f"{source}: no signal sample ([samples.*] with role = \"signal\", or "
                                  "[inputs.signals])")
    if config.study.lumi_mask is not None:
        from eventlm.analysis.lumimask import load_lumi_mask

        load_lumi_mask(config.study.lumi_mask)
    for name, paths in datasets.items():
        check_inputs(paths)
        if model_dir is None:
            score = config.threshold.score
            for path in paths:
                if score not in _columns(path, detect_format(path)):
                    raise AnalysisConfigError(
                        f"{path}: no {score} column, and no model to score it: pass --model DIR (or set "
                        f"[study] model), or give inputs written by `eventlm score`")
    cr = config.region(config.threshold.control_region)
    sr = config.region(config.threshold.signal_region)
    from eventlm.analysis.inputs import selection_values, study_reader
    from eventlm.analysis.regions import Region

    reader = study_reader(config, reader)
    pre = Region("preselection", config.inputs.preselection)
    counts = {}
    for name, paths in datasets.items():
        n_cr = n_sr = 0
        for path in paths:
            for chunk in iter_events(path, max_events=config.inputs.max_events, **reader):
                missing = [f for f in config.flags if f not in chunk.fields]
                if missing:
                    raise AnalysisConfigError(f"{path}: the selections use {', '.join(missing)}, which this file "
                                              "does not carry (trigger and filter bits come from NanoAOD)")
                values = selection_values(chunk, config.flags)
                kept = pre.mask(values)
                n_cr += int(np.count_nonzero(cr.mask(values) & kept))
                n_sr += int(np.count_nonzero(sr.mask(values) & kept))
        counts[name] = (n_cr, n_sr)
    if counts["background"][0] == 0:
        raise AnalysisConfigError(f"{source}: the control region {cr.name} ({cr.describe()}) selects no "
                                  "background event: no threshold can be chosen there")
    if config.threshold.method == "youden":
        for name in config.signals:
            if counts[name][0] == 0:
                raise AnalysisConfigError(
                    f"{source}: the control region {cr.name} ({cr.describe()}) selects no {name} event, and "
                    "Youden's J needs signal there (use method = \"background_efficiency\")")
    for name, (_, n_sr) in counts.items():
        if n_sr == 0:
            log.warning("%s: the signal region %s (%s) selects no %s event: its yields and Z will be n/a",
                        source, sr.name, sr.describe(), name)


def _columns(path, fmt: str) -> set[str]:
    """The column (branch) names of an event file without reading its events."""
    if fmt == "root":
        import uproot

        from eventlm.errors import EventFormatError

        try:
            with uproot.open(path) as f:
                return set(f["Events"].keys()) if "Events" in f else set()
        except Exception as err:  # noqa: BLE001 - a corrupt file: the reader will say what is wrong
            raise EventFormatError(path, f"not a readable ROOT file ({type(err).__name__}: {err})") from None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from eventlm.errors import EventFormatError

        try:
            return set(pq.ParquetFile(path).schema_arrow.names)
        except Exception as err:  # noqa: BLE001
            raise EventFormatError(path, f"not a readable Parquet file ({type(err).__name__}: {err})") from None
    return set()  # CSV holds no extra columns
