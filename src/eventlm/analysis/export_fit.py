"""The statistical model for the experiments' fit tools: a ROOT file of shapes and a CMS Combine datacard.

``shapes.root`` (written with uproot) holds, per region (a directory), one two-bin histogram per
process at the study's luminosity (bin 1: below the anomaly threshold, bin 2: above; variances
``sum w^2``): ``background_below`` and ``background_above`` (the background split by bin, so that
Combine's rate parameters can float the two normalisations apart, as pyhf's shapefactor does), one per
signal, ``data_obs`` (the observations of the pyhf workspace), and in the SR the non-closure shifts
``background_above_abcd_nonclosureUp/Down``. ``datacard.txt`` is the Combine card of the same model::

    f_below   rateParam * background_below 1      (free: the CR's below-threshold count fixes it)
    f_above   rateParam * background_above 1      (free: the CR's above-threshold count)
    tau_SR    rateParam SR background_* 1         (free: the SR's below-threshold count)
    abcd_nonclosure shape (SR background_above)   autoMCStats (MC statistics, Barlow-Beeston lite)

one card per signal (``datacard_<signal>.txt``; a Combine card has one signal model). The pyhf JSON
(``workspace.json``) is the same model for pyhf. :func:`read_datacard` and :func:`read_shapes` read both
back (the tests check the round trip).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from eventlm.analysis.abcd import Counts

BELOW, ABOVE = "background_below", "background_above"
NONCLOSURE = "abcd_nonclosure"


def _hist(values, variances):
    import hist

    h = hist.Hist(hist.axis.Regular(2, 0.0, 2.0, name="threshold", label="0: below, 1: above the threshold"),
                  storage=hist.storage.Weight())
    h.view().value = np.asarray(values, np.float64)
    h.view().variance = np.asarray(variances, np.float64)
    return h


def write_shapes(path, background: Mapping[str, Counts], signals: Mapping[str, Mapping[str, Counts]],
                 observed: Mapping[str, list[float]], *, signal_region: str, nonclosure: float = 0.0) -> Path:
    """``shapes.root`` (see the module docstring); written under a temporary name, then renamed."""
    import uproot

    from eventlm.atomic import atomic_path

    with atomic_path(path) as tmp:
        with uproot.recreate(tmp) as f:
            for region, b in background.items():
                f[f"{region}/{BELOW}"] = _hist([b.below.value, 0.0], [b.below.error ** 2, 0.0])
                f[f"{region}/{ABOVE}"] = _hist([0.0, b.above.value], [0.0, b.above.error ** 2])
                if region == signal_region and nonclosure > 0:
                    for shift, factor in (("Up", 1 + nonclosure), ("Down", max(1 - nonclosure, 0.0))):
                        f[f"{region}/{ABOVE}_{NONCLOSURE}{shift}"] = _hist([0.0, b.above.value * factor],
                                                                           [0.0, (b.above.error * factor) ** 2])
                for name, per_region in signals.items():
                    s = per_region[region]
                    f[f"{region}/{name}"] = _hist([s.below.value, s.above.value], [s.below.error ** 2, s.above.error ** 2])
                obs = np.asarray(observed[region], np.float64)
                f[f"{region}/data_obs"] = _hist(obs, obs)
    return Path(path)


def datacard(signal: str, regions: list[str], background: Mapping[str, Counts], signals, observed, *,
             shapes: str, signal_region: str, nonclosure: float = 0.0) -> str:
    """The Combine datacard text for ``signal`` (see the module docstring)."""
    procs = [signal, BELOW, ABOVE]
    lines = [f"# eventlm: ABCD search for {signal} (docs/statistics.md); yields at the study's luminosity",
             "imax *", "jmax *", "kmax *", "-" * 60,
             f"shapes * * {shapes} $CHANNEL/$PROCESS $CHANNEL/$PROCESS_$SYSTEMATIC", "-" * 60,
             "bin " + " ".join(regions),
             "observation " + " ".join(f"{sum(observed[r]):.10g}" for r in regions), "-" * 60]
    bins, names, idx, rates = [], [], [], []
    for r in regions:
        values = {signal: signals[signal][r].below.value + signals[signal][r].above.value,
                  BELOW: background[r].below.value, ABOVE: background[r].above.value}
        for i, p in enumerate(procs):  # Combine's process index: 0 the signal, 1, 2 the backgrounds
            bins.append(r)
            names.append(p)
            idx.append(str(i))
            rates.append(f"{values[p]:.10g}")
    lines += ["bin " + " ".join(bins), "process " + " ".join(names), "process " + " ".join(idx),
              "rate " + " ".join(rates), "-" * 60]
    if nonclosure > 0:
        lines.append(f"{NONCLOSURE} shape " + " ".join("1" if (b == signal_region and n == ABOVE) else "-"
                                                       for b, n in zip(bins, names)))
    lines += [f"f_below rateParam * {BELOW} 1 [0,20]", f"f_above rateParam * {ABOVE} 1 [0,20]",
              f"tau_SR rateParam {signal_region} {BELOW} 1 [0,20]",
              f"tau_SR rateParam {signal_region} {ABOVE} 1 [0,20]",
              "* autoMCStats 0"]
    return "\n".join(lines) + "\n"


def write_datacards(out_dir, background, signals, observed, *, control_region: str, signal_region: str,
                    nonclosure: float = 0.0, shapes: str = "shapes.root") -> dict[str, Path]:
    """``shapes.root`` and one ``datacard_<signal>.txt`` per signal in ``out_dir``."""
    from eventlm.atomic import write_text

    out_dir = Path(out_dir)
    regions = [control_region, signal_region]
    write_shapes(out_dir / shapes, {r: background[r] for r in regions}, signals, observed,
                 signal_region=signal_region, nonclosure=nonclosure)
    files = {"shapes": out_dir / shapes}
    for signal in signals:
        text = datacard(signal, regions, background, signals, observed, shapes=shapes, signal_region=signal_region,
                        nonclosure=nonclosure)
        files[f"datacard_{signal}"] = write_text(out_dir / f"datacard_{signal}.txt", text)
    return files


def read_datacard(path) -> dict:
    """A datacard read back: ``{"bins", "observation", "processes": [(bin, process, index, rate)],
    "shapes": [...], "systematics": {name: (type, [entries])}, "rate_params": [(name, bin, process,
    value)], "auto_mc_stats"}``; a malformed card raises ``ValueError`` naming the line."""
    path = Path(path)
    out = {"bins": [], "observation": [], "processes": [], "shapes": [], "systematics": {}, "rate_params": [],
           "auto_mc_stats": None}
    rows: dict[str, list[list[str]]] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        words = line.split()
        key = words[0]
        try:
            if key in ("imax", "jmax", "kmax"):
                continue
            if key == "shapes":
                out["shapes"].append(words[1:])
            elif key in ("bin", "process", "rate", "observation"):
                rows.setdefault(key, []).append(words[1:])
            elif len(words) > 1 and words[1] == "rateParam":
                out["rate_params"].append((key, words[2], words[3], float(words[4])))
            elif len(words) > 1 and words[1] == "autoMCStats":
                out["auto_mc_stats"] = float(words[2])
            else:
                out["systematics"][key] = (words[1], words[2:])
        except (IndexError, ValueError) as err:
            raise ValueError(f"{path}:{number}: cannot read {raw!r} ({err})") from None
    try:
        out["bins"] = rows["bin"][0]
        out["observation"] = [float(x) for x in rows["observation"][0]]
        bins, (names, index), rates = rows["bin"][1], rows["process"], [float(x) for x in rows["rate"][0]]
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: incomplete datacard ({err})") from None
    if not (len(bins) == len(names) == len(index) == len(rates)):
        raise ValueError(f"{path}: the bin/process/rate lines have different lengths")
    out["processes"] = [(b, n, int(i), r) for b, n, i, r in zip(bins, names, index, rates)]
    for name, (kind, entries) in out["systematics"].items():
        if len(entries) != len(rates):
            raise ValueError(f"{path}: systematic {name} has {len(entries)} entries for {len(rates)} processes")
    return out


def read_shapes(path) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{region: {name: (values, variances)}}`` of a shapes file."""
    import uproot

    out: dict[str, dict] = {}
    with uproot.open(path) as f:
        for key in f.keys(recursive=True, cycle=False):
            obj = f[key]
            if hasattr(obj, "values") and "/" in key:
                region, name = key.split("/", 1)
                out.setdefault(region, {})[name] = (np.asarray(obj.values()), np.asarray(obj.variances()))
    return out


__all__ = ["datacard", "read_datacard", "read_shapes", "write_datacards", "write_shapes"]
