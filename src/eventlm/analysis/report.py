"""The outputs of ``eventlm analyze``: the results table (``results.md``), the histograms
(``hists.pkl``, ``hists.root``) and the figures (score stacks in CR and SR, kinematics, ROC, SIC).
"""

from __future__ import annotations

import logging
import math
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np

from eventlm.analysis.config import SCORE_LABELS, AnalysisConfig
from eventlm.atomic import atomic_path, write_bytes

log = logging.getLogger(__name__)

EVENTLM = "eventlm"


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float) and (abs(value) >= 1e4 or (0 < abs(value) < 1e-3)):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def model_label(model_dir) -> str:
    """``"eventlm (lut, masked)"`` from a model directory's config.toml; ``"eventlm"`` if unknown."""
    if model_dir is None or not (Path(model_dir) / "config.toml").exists():
        return "eventlm"
    try:
        from eventlm.config import load_config as load_run_config

        run = load_run_config(Path(model_dir) / "config.toml")
        return f"eventlm ({run.tokenizer.kind}, {run.train.objective})"
    except Exception:  # noqa: BLE001 - a label is not worth failing the analysis for
        return "eventlm"


def method_label(method: str, config) -> str:
    """How a method is named in tables and legends: eventlm rows carry the model's tokenizer/objective."""
    from eventlm.analysis.baselines import LABELS

    if method.startswith(EVENTLM):
        return model_label(config.study.model) + method[len(EVENTLM):]
    return LABELS.get(method, method)


def _fmt_yield(value):
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def results_table(config: AnalysisConfig, thresholds, yields, metrics, notes=()) -> str:
    """The Markdown results of one study: figures of merit per method, then the CR/SR selection."""
    wps = config.metrics.working_points
    lines = [f"## {config.study.name}: {config.title}", ""]
    region = "all test events" if config.metrics.region == "all" else f"region {config.metrics.region}"
    for signal, per_method in metrics.items():
        lines += [f"### {signal}: figures of merit ({region}; ± = std. dev. of {config.metrics.n_bootstrap} bootstrap resamplings)", ""]
        matched = any("length_matched_auc" in m.values for m in per_method.values())
        head = (["Method", "ROC-AUC"] + (["length-matched AUC"] if matched else [])
                + [f"eff_S @ eff_B={wp:g}" for wp in wps] + ["SIC max"])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, m in per_method.items():
            name = method_label(method, config)
            name = f"*{name}*" if method.endswith(" alone") else name  # the one-number references
            row = ([name, m.format("auc")] + ([m.format("length_matched_auc")] if matched else [])
                   + [m.format(f"eff_s@{wp:g}") for wp in wps] + [m.format("sic_max", 2)])
            lines.append("| " + " | ".join(row) + " |")
        n_b = next(iter(per_method.values())).n_background if per_method else 0
        n_s = next(iter(per_method.values())).n_signal if per_method else 0
        lines += [""] + undefined_lines(per_method, config)
        lines += ["", f"{n_b} background and {n_s} signal events (unweighted)."
                  + (" Length-matched AUC: the AUC inside classes of equal object count, averaged over "
                     "them (0.5 for the object count itself)." if matched else ""), ""]
    t = config.threshold
    lines += [f"### Threshold ({t.method}, chosen in {t.control_region}) applied in {t.signal_region}, "
              f"L = {config.study.lumi:g} fb⁻¹", ""]
    head = ["Signal", "threshold", "CR eff_B", "CR eff_S", "region", "s", "b", "eff_S", "eff_B",
            "s/√b", "Z_A", "Z_A before"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for signal, thr in thresholds.items():
        for region, y in yields[signal].items():
            row = [signal, _fmt(thr.value), _fmt(thr.eff_b), _fmt(thr.eff_s), region, _fmt_yield(y.s), _fmt_yield(y.b),
                   _fmt(y.eff_s), _fmt(y.eff_b), _fmt(y.s_over_sqrt_b, 2), _fmt(y.z_asimov, 2),
                   _fmt(y.z_asimov_before, 2)]
            lines.append("| " + " | ".join(row) + " |")
    why = {}
    for signal, per_region in yields.items():
        for region, y in per_region.items():
            for key, reason in y.undefined.items():
                why.setdefault(f"{key} ({region})", reason)
    if why:
        lines += [""] + [f"- n/a {key}: {reason}" for key, reason in why.items()]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def undefined_lines(per_method, config) -> list[str]:
    """One line per figure left undefined (``n/a``) and why, the methods sharing a reason on one line."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for method, m in per_method.items():
        for key, reason in m.undefined.items():
            if key.startswith("sic@"):
                continue  # follows its eff_s@ (same reason)
            grouped.setdefault((key, reason), []).append(method_label(method, config))
    lines = []
    for (key, reason), methods in grouped.items():
        who = "every method" if len(methods) == len(per_method) and len(methods) > 1 else ", ".join(methods)
        lines.append(f"- n/a {key} ({who}): {reason}")
    return lines


def write_hists(output: dict, out_dir: Path) -> tuple[Path, Path]:
    """``hists.pkl`` (every hist object, by dataset) and ``hists.root`` (1D slices per process and region)."""
    import hist
    import uproot

    hists = {ds: {k: v for k, v in content.items() if isinstance(v, hist.Hist)} for ds, content in output.items()}
    pkl = write_bytes(out_dir / "hists.pkl", pickle.dumps(hists))
    root = out_dir / "hists.root"
    with atomic_path(root) as tmp, uproot.recreate(tmp) as f:
        for ds, content in hists.items():
            for name, h in content.items():
                for process in h.axes["process"]:
                    for region in h.axes["region"]:
                        f[f"{ds}/{name}/{process}/{region}"] = h[{"process": process, "region": region}]
    return pkl, root


def make_plots(config: AnalysisConfig, output: dict, thresholds, metrics, rocs, out_dir: Path) -> list[Path]:
    """Score stacks in CR and SR (per signal), kinematic stacks, ROC and SIC curves."""
    import hist

    from eventlm.plotting.analysis import label_for, plot_roc, plot_sic, plot_stack

    label = label_for(config.plot.experiment, config.plot.label, config.plot.com, config.study.lumi)
    label = replace(label, data=config.has_data)
    paths = []
    merged = {}
    for ds, content in output.items():  # one hist per name, over every dataset (process axis tells them apart)
        for name, h in content.items():
            if isinstance(h, hist.Hist):
                merged[name] = h if name not in merged else merged[name] + h
    signals = config.signals
    data = [s.label for s in config.all_samples if s.role == "data"]
    t = config.threshold
    for signal in signals:
        thr = thresholds[signal].value if signal in thresholds else None
        for region in (t.control_region, t.signal_region):
            path = out_dir / f"score_{region}_{signal}.png"
            plot_stack(merged["score"], path, region=region, signals=[signal], threshold=thr, label=label,
                       region_text=config.region(region).describe(),
                       title=config.title, xlabel=SCORE_LABELS[config.threshold.score], data=data)
            paths.append(path)
    from eventlm.analysis.features import VARIABLES

    for var in config.histograms.variables:
        for region in (t.control_region, t.signal_region):
            path = out_dir / f"{var}_{region}.png"
            plot_stack(merged[var], path, region=region, signals=signals, axis=var, xlabel=VARIABLES[var][0],
                       region_text=config.region(region).describe(),
                       label=label, title=config.title, data=data)
            paths.append(path)
    for signal, curves in rocs.items():
        named = {}
        aucs = {}
        for method, roc in curves.items():
            text = method_label(method, config)
            named[text] = roc
            aucs[text] = f"AUC = {metrics[signal][method].format('auc', 3)}"
        path = out_dir / f"roc_{signal}.png"
        plot_roc(named, path, aucs=aucs, style=config.plot.roc_style, label=label, title=signal)
        paths.append(path)
        path = out_dir / f"sic_{signal}.png"
        plot_sic(named, path, label=label, title=signal)
        paths.append(path)
    return paths


def json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)
