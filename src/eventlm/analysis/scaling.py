"""The scaling study: detection against the number of training events and against the model size.

:func:`run_scaling` trains models on growing slices of a background pool and evaluates every one of
them on the same independent test set:

- **training events**: the default model (``RunConfig()`` with the study's seed: its tokenizer,
  objective, epochs and early stopping) on the first N events of the pool, for N in ``sizes``; the
  next ``validation_events(N)`` events of the pool are its validation split (early stopping and the
  calibration), the slices are nested (10k inside 30k inside 100k ...);
- **model size**: ``n_layer x n_embd`` (``models``; the default is 2 x 64) on ``model_events`` events,
  everything else the default's;
- **evaluation**: the test background (``eventlm`` passes the bundled ``data/background.csv.gz``,
  generated with another seed than the pool, so independent of it) against each signal: AUC and
  eps_S at eps_B = 1e-2 and 1e-3 with bootstrap errors, of ``anomaly_score`` (the default),
  ``anomaly_score_calibrated`` and ``anomaly_score_nll`` (each model calibrated on its own validation
  rows); HT alone beside them; the test NLL per event, the mean ``anomaly_score_nll`` (``-log
  p(event)`` for the causal objective) of the test background: the likelihood's own figure of merit,
  no signal in it.

Resumable: a model directory with ``best.pt`` and ``calibration.json`` is reused, and so is its
evaluation (``points/<name>.json``) while it matches the weights' and the calibration's SHA-256 and
the test set; a reused model calibrated under another default rule is recalibrated first.
``analysis/scaling.py`` is the command line (docs/results.md, "Scaling").
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

log = logging.getLogger(__name__)

#: The score columns the study reports, with their table labels: the default, the event NLL calibrated
#: per object count, and the event NLL itself (-log p(event), what the training minimises).
SCORES = {"anomaly_score": "anomaly_score", "anomaly_score_calibrated": "calibrated", "anomaly_score_nll": "nll"}
#: The working points quoted (eps_B).
WORKING_POINTS = (1e-2, 1e-3)


@dataclass(frozen=True)
class ScalingSettings:
    """What the study trains and how it evaluates (the models' own settings are ``RunConfig()``'s)."""

    sizes: tuple[int, ...] = (10_000, 30_000, 100_000, 300_000)
    #: (n_layer, n_embd) of the model-size axis; n_head stays the default's
    models: tuple[tuple[int, int], ...] = ((1, 32), (2, 64), (4, 128))
    #: training events of the model-size axis
    model_events: int = 100_000
    seed: int = 1234
    n_bootstrap: int = 50
    #: override the default's epochs (None: ``RunConfig().train.epochs``)
    epochs: int | None = None
    #: the validation split: this fraction of the training events, at least ``min_validation``
    validation_fraction: float = 0.02
    min_validation: int = 2000
    #: (n_layer, n_embd) points skipped on purpose (too costly here), with the reason in the report
    skipped: dict = field(default_factory=dict)

    def validation_events(self, n_train: int) -> int:
        return max(self.min_validation, int(round(self.validation_fraction * n_train)))


def point_name(n_train: int, n_layer: int, n_embd: int) -> str:
    return f"n{n_train}_L{n_layer}x{n_embd}"


def run_config(settings: ScalingSettings, n_train: int, n_layer: int, n_embd: int):
    """The default run config with this point's model size and a split of exactly ``n_train`` training
    events plus ``validation_events(n_train)`` validation events (no test split: the test set is apart)."""
    from eventlm.config import RunConfig

    n_val = settings.validation_events(n_train)
    config = RunConfig(seed=settings.seed).replace(
        model={"n_layer": n_layer, "n_embd": n_embd},
        split={"train": n_train / (n_train + n_val), "validation": n_val / (n_train + n_val), "test": 0.0},
    )
    if settings.epochs is not None:
        config = config.replace(train={"epochs": settings.epochs})
    return config


def _n_parameters(model_dir: Path) -> int:
    from eventlm.modeldir import ModelDir

    model, _, _ = ModelDir(model_dir).load()
    return int(sum(p.numel() for p in model.parameters()))


def train_point(pool: ak.Array, out: Path, settings: ScalingSettings, n_train: int, n_layer: int,
                n_embd: int, *, progress: bool = True) -> dict:
    """Train (or reuse) one model directory and calibrate it; returns what the training recorded."""
    from eventlm.apply import calibrate
    from eventlm.train import train

    n_events = n_train + settings.validation_events(n_train)
    if n_events > len(pool):
        raise ValueError(f"{point_name(n_train, n_layer, n_embd)} needs {n_events} pool events, the pool has {len(pool)}")
    info_path = out / "scaling_train.json"
    if (out / "best.pt").exists() and (out / "calibration.json").exists() and info_path.exists():
        log.info("reusing %s", out)
        if not calibration_is_current(out):
            log.info("recalibrating %s: its calibration.json is not the current default's rule", out.name)
            calibrate(out, pool[:n_events])
        return json.loads(info_path.read_text())
    events = pool[:n_events]
    config = run_config(settings, n_train, n_layer, n_embd)
    start = time.perf_counter()
    result = train(config, events, out, progress=progress)
    seconds = time.perf_counter() - start
    calibrate(out, events)
    info = {
        "n_train": n_train, "n_validation": n_events - n_train, "n_layer": n_layer, "n_embd": n_embd,
        "n_parameters": _n_parameters(out), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
        "epochs_max": config.train.epochs, "stopped_early": result.stopped_early,
        "best_val_loss": float(result.best_val_loss), "train_seconds": round(seconds, 1),
        "events_x_epochs_per_s": round(n_train * result.epochs_run / seconds, 1),
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    log.info("trained %s: %d epochs in %.0f s", out.name, result.epochs_run, seconds)
    return info


def calibration_is_current(model_dir: Path) -> bool:
    """Whether ``model_dir/calibration.json`` holds the current default ``anomaly_score``'s rule and
    numbers (:data:`eventlm.calibration.DEFAULT_Q`, ``DEFAULT_NLL_WEIGHT``). A model calibrated under an
    earlier default would put another score into the study's rows under the same name."""
    from eventlm.calibration import DEFAULT_NLL_WEIGHT, DEFAULT_Q, DefaultScore

    try:
        default = DefaultScore.from_dict(json.loads((Path(model_dir) / "calibration.json").read_text())["default"])
    except (OSError, ValueError, KeyError, TypeError):  # unreadable, no default block, or another rule
        return False
    return default.q == DEFAULT_Q and default.nll_weight == DEFAULT_NLL_WEIGHT


def calibration_fingerprint(model_dir: Path) -> str:
    """sha256 of ``calibration.json``: an evaluation is tied to the calibration as well as the weights."""
    import hashlib

    return hashlib.sha256((Path(model_dir) / "calibration.json").read_bytes()).hexdigest()


def _metrics(scores_b, scores_s, n_bootstrap: int, seed: int) -> dict:
    from eventlm.metrics import evaluate

    m = evaluate(scores_b, scores_s, working_points=WORKING_POINTS, n_bootstrap=n_bootstrap, seed=seed)
    keys = ("auc", *(f"eff_s@{wp:g}" for wp in WORKING_POINTS))
    return {k: m.values.get(k) for k in keys} | {f"{k}_err": m.errors.get(k) for k in keys}


def test_set_key(background: ak.Array, signals: dict[str, ak.Array]) -> str:
    """A short fingerprint of the test set (row keys of the background and every signal)."""
    import hashlib

    from eventlm.rows import row_keys

    digest = hashlib.sha256()
    for name, events in {"background": background, **signals}.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(row_keys(events)).tobytes())
    return digest.hexdigest()[:16]


def evaluate_point(model_dir: Path, background: ak.Array, signals: dict[str, ak.Array], settings: ScalingSettings,
                   test_key: str, points_dir: Path) -> dict:
    """Score the test set with one model (or reuse the cached evaluation of the same weights and test set)."""
    from eventlm.analysis.validation import score_all
    from eventlm.modeldir import ModelDir

    points_dir.mkdir(parents=True, exist_ok=True)
    path = points_dir / f"{model_dir.name}.json"
    weights = ModelDir(model_dir).weights_fingerprint()
    calibration = calibration_fingerprint(model_dir)
    if path.exists():
        cached = json.loads(path.read_text())
        if (cached.get("weights_sha256") == weights and cached.get("calibration_sha256") == calibration
                and cached.get("test_set") == test_key and cached.get("n_bootstrap") == settings.n_bootstrap):
            return cached
    scores = score_all(model_dir, {"background": background, **signals})
    b = scores["background"]
    out = {
        "weights_sha256": weights, "calibration_sha256": calibration, "test_set": test_key,
        "n_bootstrap": settings.n_bootstrap,
        "test_nll_per_event": float(np.mean(b["anomaly_score_nll"])),
        "test_nll_per_event_err": float(np.std(b["anomaly_score_nll"], ddof=1) / np.sqrt(len(b["anomaly_score_nll"]))),
        "signals": {
            name: {label: _metrics(b[col], scores[name][col], settings.n_bootstrap, settings.seed)
                   for col, label in SCORES.items()}
            for name in signals
        },
    }
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def ht_reference(background: ak.Array, signals: dict[str, ak.Array], settings: ScalingSettings) -> dict:
    """HT alone (the scalar jet pT sum): the one-number reference every model is compared with."""
    from eventlm.analysis.features import variables_of

    ht_b = np.asarray(variables_of(background)["ht"], dtype=np.float64)
    return {name: _metrics(ht_b, np.asarray(variables_of(ev)["ht"], dtype=np.float64), settings.n_bootstrap,
                           settings.seed)
            for name, ev in signals.items()}


def plan(settings: ScalingSettings) -> list[tuple[int, int, int]]:
    """Every (n_train, n_layer, n_embd) point of the study, the default model's sizes first."""
    from eventlm.config import ModelSpec

    default = (ModelSpec().n_layer, ModelSpec().n_embd)
    points = [(n, *default) for n in settings.sizes]
    points += [(settings.model_events, *m) for m in settings.models
               if m not in settings.skipped and (settings.model_events, *m) not in points]
    return points


def run_scaling(pool: ak.Array, background: ak.Array, signals: dict[str, ak.Array], out_dir, *,
                settings: ScalingSettings = ScalingSettings(), only: set[str] | None = None,
                pool_note: str = "", progress: bool = True) -> dict:
    """Train and evaluate every point (``only``: just these point names, no report), then write
    ``scaling.json`` and ``scaling.md`` (and return the result)."""
    out_dir = Path(out_dir)
    models_dir, points_dir = out_dir / "models", out_dir / "points"
    test_key = test_set_key(background, signals)
    points = []
    for n_train, n_layer, n_embd in plan(settings):
        name = point_name(n_train, n_layer, n_embd)
        if only is not None and name not in only:
            continue
        if n_train + settings.validation_events(n_train) > len(pool):
            log.warning("skipping %s: the pool has %d events", name, len(pool))
            continue
        model_dir = models_dir / name
        info = train_point(pool, model_dir, settings, n_train, n_layer, n_embd, progress=progress)
        evaluation = evaluate_point(model_dir, background, signals, settings, test_key, points_dir)
        points.append({"name": name, **info, **{k: v for k, v in evaluation.items() if k != "weights_sha256"},
                       "weights_sha256": evaluation["weights_sha256"]})
    if only is not None:
        return {"points": points}
    result = {
        "settings": {"sizes": list(settings.sizes), "models": [list(m) for m in settings.models],
                     "model_events": settings.model_events, "seed": settings.seed, "n_bootstrap": settings.n_bootstrap,
                     "epochs": settings.epochs, "validation_fraction": settings.validation_fraction,
                     "min_validation": settings.min_validation,
                     "skipped": {f"{k[0]}x{k[1]}": v for k, v in settings.skipped.items()}},
        "pool": {"events": len(pool), "note": pool_note},
        "test_set": {"background": len(background), "signals": {k: len(v) for k, v in signals.items()},
                     "key": test_key},
        "ht": ht_reference(background, signals, settings),
        "points": points,
    }
    result["markdown"] = markdown(result)
    (out_dir / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "scaling.md").write_text(result["markdown"])
    return result


# ----------------------------------------------------------------------------------------------------
# the report


def _fmt(metrics: dict, key: str, digits: int = 3) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    err = metrics.get(f"{key}_err")
    return f"{value:.{digits}f}" if err is None else f"{value:.{digits}f} ± {err:.{digits}f}"


def default_size(result: dict) -> tuple[int, int]:
    from eventlm.config import ModelSpec

    return ModelSpec().n_layer, ModelSpec().n_embd


def data_axis(result: dict) -> list[dict]:
    """The default-size points, by training events."""
    layer, embd = default_size(result)
    return sorted((p for p in result["points"] if (p["n_layer"], p["n_embd"]) == (layer, embd)),
                  key=lambda p: p["n_train"])


def model_axis(result: dict) -> list[dict]:
    """The points at ``model_events`` training events, by parameter count."""
    n = result["settings"]["model_events"]
    return sorted((p for p in result["points"] if p["n_train"] == n), key=lambda p: p["n_parameters"])


def markdown(result: dict) -> str:
    """The report: the training runs and, per axis, AUC and eps_S at eps_B = 1e-2 of every column of
    ``SCORES`` per signal, with HT alone."""
    scores = tuple(SCORES.values())
    signals = list(result["test_set"]["signals"])
    lines = [
        "# Scaling: detection against training events and model size",
        "",
        f"Test set (every model): {result['test_set']['background']} background events against "
        + ", ".join(f"{s} ({n})" for s, n in result["test_set"]["signals"].items())
        + f"; bootstrap errors ({result['settings']['n_bootstrap']} resamplings). Pool: {result['pool']['events']} "
        f"events{'; ' + result['pool']['note'] if result['pool']['note'] else ''}.",
        "",
        "## Training runs",
        "",
        "| model | n_layer x n_embd | parameters | training events | validation events | epochs (best) | "
        "training time [s] | events x epochs / s | test NLL / event |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in sorted(result["points"], key=lambda p: (p["n_parameters"], p["n_train"])):
        lines.append(
            f"| {p['name']} | {p['n_layer']} x {p['n_embd']} | {p['n_parameters']:,} | {p['n_train']:,} "
            f"| {p['n_validation']:,} | {p['epochs_run']} ({p['best_epoch']}) | {p['train_seconds']:.0f} "
            f"| {p['events_x_epochs_per_s']:.0f} | {p['test_nll_per_event']:.3f} ± {p['test_nll_per_event_err']:.3f} |"
        )
    for title, axis, col in (("Against training events (default model size)", data_axis(result), "n_train"),
                             (f"Against model size ({result['settings']['model_events']:,} training events)",
                              model_axis(result), "n_parameters")):
        if not axis:
            continue
        head = [f"{p[col]:,}" if col == "n_train" else f"{p['n_layer']}x{p['n_embd']}" for p in axis]
        for key, what in (("auc", "AUC"), ("eff_s@0.01", "eps_S at eps_B = 1e-2")):
            lines += ["", f"## {what}, {title.lower()}", "",
                      "| signal | score | " + " | ".join(head) + " | HT alone |",
                      "|---|---|" + "---:|" * (len(head) + 1)]
            for s in signals:
                for label in scores:
                    cells = [_fmt(p["signals"][s][label], key) for p in axis]
                    ht = _fmt(result["ht"][s], key) if label == scores[0] else ""
                    lines.append(f"| {s if label == scores[0] else ''} | {label} | " + " | ".join(cells)
                                 + f" | {ht} |")
            if key == "auc":
                lines.append("| test background | NLL / event | " + " | ".join(
                    f"{p['test_nll_per_event']:.3f} ± {p['test_nll_per_event_err']:.3f}" for p in axis) + " | |")
    if result["settings"]["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["settings"]["skipped"].items()) + "."]
    return "\n".join(lines) + "\n"
