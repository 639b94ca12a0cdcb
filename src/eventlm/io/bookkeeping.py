"""The sum of generator weights of a simulated sample, as the experiment's production recorded it.

A NanoAOD file carries it in its ``Runs`` tree (``genEventSumw``, spelled ``genEventSumw_`` in NanoAOD
v6 and older; one row per run, summed here); an ATLAS PHYSLITE (DAOD) file in its ``MetaData``
tree's ``CutBookkeepers``: the ``sumOfEventWeights`` of ``AllExecutedEvents`` on the input stream
``StreamAOD`` (its highest cycle). Both count every event the production generated, not only those
that a skim kept, so ``sigma * L * sum(w_selected) / sum_w`` is the yield of the selected events.

:func:`sum_of_weights` returns ``None`` for a file without such a record (an RNTuple NanoAOD, an
eventlm ntuple, a CSV, a skim that dropped the ``Runs`` tree): the caller then sums the weights of
the events it read and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from eventlm.errors import EventFormatError

#: Where each kind of record comes from, as the results quote it.
RUNS = "NanoAOD Runs tree (genEventSumw)"
CUTBOOKKEEPERS = "PHYSLITE CutBookkeepers (AllExecutedEvents)"


def sum_of_weights(path) -> tuple[float, str] | None:
    """``(sum of generator weights, source)`` recorded in one ROOT file, or ``None``."""
    path = Path(path)
    if not str(path).lower().endswith(".root"):
        return None
    import uproot

    try:
        f = uproot.open(path)
    except Exception as err:  # noqa: BLE001 - uproot raises many kinds for a broken file
        raise EventFormatError(path, f"cannot open: {err}") from None
    with f:
        keys = {k.split(";")[0] for k in f.keys(recursive=False)}
        if "Runs" in keys:
            return _runs(f["Runs"], path)
        if "MetaData" in keys:
            return _bookkeepers(f["MetaData"], path)
    return None


def _runs(tree, path) -> tuple[float, str] | None:
    names = set(getattr(tree, "keys", lambda: [])())
    for branch in ("genEventSumw", "genEventSumw_"):
        if branch in names:
            values = np.asarray(tree[branch].array(library="np"), dtype=np.float64)
            total = float(values.sum())
            if not np.isfinite(total):
                raise EventFormatError(path, f"Runs/{branch} is not finite ({total})")
            return total, RUNS
    return None  # a data file's Runs tree: no generator weights


def _bookkeepers(tree, path) -> tuple[float, str] | None:
    prefix = "CutBookkeepersAux./CutBookkeepersAux."
    needed = [prefix + k for k in ("name", "sumOfEventWeights", "inputStream", "cycle")]
    if not all(k in tree.keys() for k in needed):
        return None
    try:
        arrays = {k[len(prefix):]: tree[k].array(library="np") for k in needed}
    except Exception:  # noqa: BLE001 - a release whose bookkeeper layout uproot cannot read
        return None
    total = 0.0
    found = False
    for entry in range(len(arrays["name"])):  # one row per file merged into this one
        names = list(arrays["name"][entry])
        streams = list(arrays["inputStream"][entry])
        cycles = np.asarray(arrays["cycle"][entry])
        sums = np.asarray(arrays["sumOfEventWeights"][entry], dtype=np.float64)
        rows = [i for i, (n, s) in enumerate(zip(names, streams)) if n == "AllExecutedEvents" and s == "StreamAOD"]
        if rows:
            best = max(rows, key=lambda i: cycles[i])
            total += float(sums[best])
            found = True
    return (total, CUTBOOKKEEPERS) if found else None


__all__ = ["CUTBOOKKEEPERS", "RUNS", "sum_of_weights"]
