"""The model card (``model_card.json`` in a model directory): how the training events were made.

``eventlm train`` writes it beside the weights; ``eventlm info MODEL`` prints it; ``eventlm score``
compares its reader options with the ones it is given (one warning line when they differ) and flags
every scored event outside the training phase space (column ``in_training_phase_space``)::

    {"eventlm_version": "0.4.0", "created": "2026-12-05T08:50:00Z",
     "inputs": ["background.csv.gz"],                       # file names (or "an event array")
     "reader": {"nanoaod": {...NanoAODOptions...}, "physlite": {...}},   # every option, defaults too
     "events": 62000, "sum_weights": 1.2e5, "weights_in_loss": false,
     "processes": {"ttbar": {"events": 52776, "sum_weights": 1.0e5}, ...},
     "phase_space": {"n_objects": [4, 19], "n_jets": [4, 15], "n_bjets": [1, 7], "n_leptons": [0, 4],
                     "n_photons": [0, 3], "ht": [300.1, 4128.5], "met": [0.2, 1210.9]}}

The phase space is the smallest box holding every training-input event: the preselection of the
bundled background (HT >= 300 GeV, >= 4 jets, >= 1 b-jet) shows as its lower edges. An event
outside the box in any variable is *out of domain*: the model has seen nothing like it, and its
score (and calibrated score) says nothing about how typical it is.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import asdict, is_dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.events import Kind

log = logging.getLogger(__name__)

CARD = "model_card.json"
#: The phase-space variables, in the order the card lists them.
VARIABLES = ("n_objects", "n_jets", "n_bjets", "n_leptons", "n_photons", "ht", "met")
#: The flag column ``eventlm score`` adds.
FLAG = "in_training_phase_space"


def phase_space_values(events: ak.Array) -> dict[str, np.ndarray]:
    """Per event: object counts (all, jets incl. b-jets, b-jets, leptons, photons), HT and MET."""
    kind = events.particles.kind
    is_jet = (kind == int(Kind.JET)) | (kind == int(Kind.BJET))
    is_lep = (kind == int(Kind.ELECTRON)) | (kind == int(Kind.MUON))
    return {
        "n_objects": ak.to_numpy(ak.num(kind, axis=1)).astype(np.int64),
        "n_jets": ak.to_numpy(ak.sum(is_jet, axis=1)).astype(np.int64),
        "n_bjets": ak.to_numpy(ak.sum(kind == int(Kind.BJET), axis=1)).astype(np.int64),
        "n_leptons": ak.to_numpy(ak.sum(is_lep, axis=1)).astype(np.int64),
        "n_photons": ak.to_numpy(ak.sum(kind == int(Kind.PHOTON), axis=1)).astype(np.int64),
        "ht": ak.to_numpy(ak.sum(events.particles.pt[is_jet], axis=1)).astype(np.float64),
        "met": ak.to_numpy(events.met).astype(np.float64),
    }


def as_plain(value):
    """Dataclasses, dicts and tuples as plain JSON values (the reader options in the card and in
    ``preprocess.json``)."""
    if is_dataclass(value):
        return {k: as_plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    return value


def reader_dict(reader: dict | None) -> dict:
    """The reader options as plain JSON (``{"nanoaod": {...}, "physlite": {...}}``), the readers'
    defaults filled in for a kind not given."""
    from eventlm.io.nanoaod import NanoAODOptions
    from eventlm.io.physlite import PHYSLITEOptions

    reader = dict(reader or {})
    full = {"nanoaod": reader.get("nanoaod") or NanoAODOptions(), "physlite": reader.get("physlite") or PHYSLITEOptions()}
    return {k: as_plain(v) for k, v in full.items()}


def make_card(events: ak.Array, *, inputs=None, reader: dict | None = None, weights_in_loss: bool = False) -> dict:
    """The card of a model trained on ``events`` (all the background it read, before the split)."""
    from eventlm._version import __version__
    from eventlm.io.root import string_labels

    values = phase_space_values(events)
    weight = ak.to_numpy(events.weight).astype(np.float64)
    labels = string_labels(events.process) if len(events) else np.zeros(0, dtype=object)
    processes = {}
    for name in sorted(set(labels.tolist())):
        sel = labels == name
        processes[str(name)] = {"events": int(sel.sum()), "sum_weights": float(weight[sel].sum())}
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return {
        "eventlm_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [Path(p).name for p in inputs] if inputs is not None else "an event array",
        "reader": reader_dict(reader),
        "events": int(len(events)),
        "sum_weights": float(weight.sum()),
        "weights_in_loss": bool(weights_in_loss),
        "processes": processes,
        "phase_space": {k: ([int(v.min()), int(v.max())] if v.dtype.kind == "i" else [float(v.min()), float(v.max())])
                        if len(v) else None for k, v in values.items()},
    }


def write_card(model_dir, card: dict) -> Path:
    from eventlm.atomic import write_json

    return write_json(Path(model_dir) / CARD, card)


def read_card(model_dir) -> dict | None:
    """The card of a model directory, or None (a directory trained before cards existed)."""
    path = Path(model_dir) / CARD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        from eventlm.errors import ModelDirError

        raise ModelDirError(f"{path}: not a readable model card ({err})") from None


def in_phase_space(card: dict | None, events: ak.Array) -> np.ndarray | None:
    """Per event: inside the card's training phase space (every variable within its range); None
    without a card."""
    if not card or not card.get("phase_space"):
        return None
    values = phase_space_values(events)
    inside = np.ones(len(events), dtype=bool)
    for name, bounds in card["phase_space"].items():
        if bounds is None or name not in values:
            continue
        inside &= (values[name] >= bounds[0]) & (values[name] <= bounds[1])
    return inside


def outside_description(card: dict) -> str:
    """The training phase space in one line (``n_jets 4-15, ht 300-4128 GeV, ...``)."""
    parts = []
    for name, (lo, hi) in (card.get("phase_space") or {}).items():
        unit = " GeV" if name in ("ht", "met") else ""
        parts.append(f"{name} {lo:g}-{hi:g}{unit}")
    return ", ".join(parts)


def reader_difference(card: dict | None, reader: dict | None) -> str | None:
    """One line saying how ``reader`` differs from the reader options the model was trained with
    (None when they agree, or the card does not say)."""
    if not card or "reader" not in card:
        return None
    trained, given = card["reader"] or {}, reader_dict(reader)
    diffs = []
    for kind in sorted(set(trained) | set(given)):
        a, b = trained.get(kind) or {}, given.get(kind) or {}
        for key in sorted(set(a) | set(b)):
            if key != "process" and a.get(key) != b.get(key):  # the label is not a selection
                diffs.append(f"{kind}.{key} {a.get(key, 'default')!r} -> {b.get(key, 'default')!r}")
    if not diffs:
        return None
    return "reader options differ from the model's training ones: " + "; ".join(diffs)


def format_card(card: dict, path) -> str:
    """The card as text (``eventlm info MODEL``)."""
    lines = [f"{path}: eventlm model (trained with eventlm {card.get('eventlm_version', '?')}, "
             f"{card.get('created', '?')})", ""]
    inputs = card.get("inputs")
    lines.append(f"training inputs: {', '.join(inputs) if isinstance(inputs, list) else inputs}")
    for kind, options in (card.get("reader") or {}).items():
        shown = ", ".join(f"{k}={v}" for k, v in options.items() if k != "process")
        lines.append(f"reader options ({kind}): {shown}")
    lines.append(f"events: {card.get('events')}, sum of weights {card.get('sum_weights', 0):.6g}; "
                 f"weights in the loss: {'yes' if card.get('weights_in_loss') else 'no'}")
    lines.append("")
    lines.append("process mix:")
    for name, p in (card.get("processes") or {}).items():
        lines.append(f"  {name:<20} {p['events']:>9} events  sum of weights {p['sum_weights']:.6g}")
    lines.append("")
    lines.append("training phase space (every input event inside; scored events outside it are flagged):")
    for name, bounds in (card.get("phase_space") or {}).items():
        if bounds is None:
            continue
        unit = " GeV" if name in ("ht", "met") else ""
        lines.append(f"  {name:<10} {bounds[0]:g} .. {bounds[1]:g}{unit}")
    return "\n".join(lines)
