"""What the coffea processor gives back, read: per-event columns, process names, and the skims it wrote.

The processor (:mod:`eventlm.analysis.processor`) writes every chunk's scored events as a skim named by
:func:`skim_name`; :func:`read_skim_columns` reads them back in steps (only the small branches), and
:func:`columns_of` / :func:`process_names_of` / :func:`skims_of` take apart a processor output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

#: Event-level score branches (``eventlm.score.SCORE_COLUMNS`` without the per-token ``token_nll``);
#: any other ``anomaly_score*`` branch of a file is kept too.
SCORE_COLUMNS = ("anomaly_score", "anomaly_score_nll", "anomaly_score_mean", "anomaly_score_sum", "anomaly_score_calibrated",
                 "anomaly_score_max", "reco_accuracy", "log_likelihood")
#: Skim branches of the region flags: ``region_CR`` (``events.region.CR`` in NanoEvents).
REGION_PREFIX = "region_"


def skim_name(dataset: str, filename: str, start: int, stop: int) -> str:
    """``<dataset>_<10 hex of the input path's SHA-1>_<start>-<stop>.root``: unique per chunk, and the same
    on a retry (the retried chunk replaces its file)."""
    digest = hashlib.sha1(str(filename).encode()).hexdigest()[:10]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in dataset)
    return f"{safe}_{digest}_{int(start)}-{int(stop)}.root"


def columns_of(output: Mapping, dataset: str) -> dict[str, np.ndarray]:
    """The per-event columns of one dataset from a processor output, sorted by event id."""
    cols = {k: np.asarray(v.value) for k, v in output[dataset]["columns"].items()}
    order = np.argsort(cols["event"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def process_names_of(output: Mapping, dataset: str) -> dict[int, str]:
    """process_code -> name as seen by the processor in one dataset."""
    out = {}
    for item in output[dataset].get("process_names", ()):
        code, _, name = item.partition(":")
        out[int(code)] = name
    return out


def skims_of(output: Mapping, dataset: str) -> dict[str, int]:
    """``{skim file: events}`` of one dataset from a processor output (``skim_dir`` set), by file name."""
    return dict(sorted(output[dataset].get("skims", {}).items()))


def read_skim_columns(skims, *, step_size: int = 200_000, dataset: str = "") -> dict[str, np.ndarray]:
    """The per-event columns of skims (as :func:`columns_of` gives them), sorted by event id.

    ``skims``: ``{path: events}`` (:func:`skims_of`; the counts are checked) or a list of paths. Only
    the small branches are read (event, weight, process_code, the scores, the region flags), in steps of
    ``step_size`` events; the region flag ``region_CR`` is returned as ``in_CR``.
    """
    import uproot

    expected = dict(skims) if isinstance(skims, Mapping) else None
    paths = [str(p) for p in (expected or skims)]
    if not paths:
        raise ValueError(f"{dataset or 'skims'}: no skim files to read")
    with uproot.open(paths[0]) as f:
        keys = f["Events"].keys()
    wanted = ["event", "weight", "process_code"]
    wanted += [k for k in keys if k in SCORE_COLUMNS or k.startswith("anomaly_score") or k.startswith(REGION_PREFIX)]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in wanted}
    per_file: dict[str, int] = {}
    for arrays, report in uproot.iterate({p: "Events" for p in paths}, wanted, step_size=step_size,
                                         library="np", report=True):
        for k in wanted:
            parts[k].append(arrays[k])
        name = str(report.file_path)
        per_file[name] = per_file.get(name, 0) + len(arrays["event"])
    if expected is not None:
        for path, n in expected.items():
            if per_file.get(str(path), 0) != n:
                raise RuntimeError(f"{path}: the skim holds {per_file.get(str(path), 0)} events, "
                                   f"the processor wrote {n}")
    cols = {}
    for k, chunks in parts.items():
        name = "in_" + k[len(REGION_PREFIX):] if k.startswith(REGION_PREFIX) else k
        cols[name] = np.concatenate(chunks) if chunks else np.zeros(0)
    cols["event"] = cols["event"].astype(np.int64)
    cols["process_code"] = cols["process_code"].astype(np.int64)
    order = np.argsort(cols["event"], kind="stable")
    return {k: v[order] for k, v in cols.items()}
