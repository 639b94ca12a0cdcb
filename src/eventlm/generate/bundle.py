"""Regenerate the samples bundled in ``data/`` and their manifest.

    python -m eventlm.generate.bundle --out data [--jobs 2] [--only fixture|background|signals]

(``make generate-samples``). Every file holds events that pass the analysis preselection (the Dark
Machines preselection and HT >= 300 GeV, >= 4 jets, >= 1 b-jet):

- ``fixture.csv.gz``: a few hundred events of every process for fast unit tests. Its process counts are
  fixed (not proportional to cross sections) but its weights are physical;
- ``background.csv.gz``: ttbar, ttbarHiggs, single_top and w_jets mixed by cross section x acceptance
  (the number of events of a process is proportional to sigma_i x A_i, both measured in the
  generation), shuffled with a seeded permutation; weight = sigma_i / N_generated,i x luminosity;
- ``<signal>.csv.gz``: one file per signal of the validation suite (``SIGNALS``): two with more objects
  than the background (``gluino_1000``, ``tttt_H500``) and five whose object count is the
  background's within one object but whose energy scale, MET or angular structure differ (a Z' and a
  W' decaying to tops, top squarks, t tbar + an invisibly decaying scalar, a pseudoscalar t tbar
  resonance). Each file's entry in the manifest has the equivalent ``eventlm generate`` command and
  a summary (mean object count, HT, MET, leading-jet pT; AUC of HT, MET and the object count alone
  against the bundled background).

How the background mixture is sized: a pilot (the fixture's background generation) estimates
sigma_i x A_i; each process is then generated with a surplus, sigma_i x A_i is measured again on the
full samples, and each process keeps its first N_i events with N_i proportional to it. The weight of a
process counts the Pythia events generated up to its last kept event (see
:mod:`eventlm.generate.pythia`), so the weights stay physical after the cut.

Event ids are unique across all bundled files: ``id = 10**7 * block + i`` with ``block = 10 * file_index +
process_index`` and ``i`` (< 10**7) the event's position in its process sample (before the shuffle).
The (file, process) pairs that occur give distinct blocks (:func:`id_blocks` checks it); from process
index 10 on, a block reaches past file index 9 and is still distinct because the files with index >= 3
hold one signal process each.
``MANIFEST.json`` and ``README.md`` record events, cross sections, acceptances, seeds, versions and
the command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.generate.pythia import PROCESSES

BACKGROUNDS = ("ttbar", "ttbarHiggs", "single_top", "w_jets")
#: The test signals bundled in data/, in the order of the process and file indices (the first two came first).
SIGNALS = tuple(p.name for p in PROCESSES.values() if p.signal and not p.validation)
#: The validation signals (the same families at other masses; never bundled): ``validation_signals`` makes them.
VALIDATION_SIGNALS = tuple(p.name for p in PROCESSES.values() if p.validation)
#: The signals in the fixture (it predates the others and stays as it is).
FIXTURE_SIGNALS = ("gluino_1000", "tttt_H500")
PROCESS_INDEX = {name: i for i, name in enumerate(BACKGROUNDS + SIGNALS)}
FILE_INDEX = {"fixture.csv.gz": 1, "background.csv.gz": 2, **{f"{p}.csv.gz": 3 + i for i, p in enumerate(SIGNALS)}}
FIXTURE_COUNTS = {"ttbar": 300, "ttbarHiggs": 20, "single_top": 40, "w_jets": 40, "gluino_1000": 100, "tttt_H500": 100}
SELECTION = "analysis"
DEFAULT_SEED = 20251122
DEFAULT_BACKGROUND_EVENTS = 62_000
MIN_BACKGROUND_EVENTS = 60_000
DEFAULT_SIGNAL_EVENTS = 5_200


def file_processes() -> dict[str, tuple[str, ...]]:
    """The processes each bundled file holds."""
    return {
        "fixture.csv.gz": tuple(FIXTURE_COUNTS),
        "background.csv.gz": BACKGROUNDS,
        **{f"{p}.csv.gz": (p,) for p in SIGNALS},
    }


def id_blocks() -> dict[tuple[str, str], int]:
    """``(file, process) -> block`` with ``event_id = 10**7 * block + i``; raises if two coincide."""
    blocks = {
        (f, p): 10 * FILE_INDEX[f] + PROCESS_INDEX[p] for f, processes in file_processes().items() for p in processes
    }
    if len(set(blocks.values())) != len(blocks):
        raise RuntimeError(f"event-id blocks collide: {blocks}")
    return blocks


def first_id(file_name: str, process: str) -> int:
    return 10**7 * id_blocks()[(file_name, process)]


def generate_command(process: str, n_events: int, seed: int, out: Path) -> str:
    """The ``eventlm generate`` command that writes the same file as the bundle (same events and bytes)."""
    name = f"{process}.csv.gz"
    return (f"eventlm generate {process} --events {n_events} --seed {seed} --select {SELECTION} "
            f"--first-id {first_id(name, process)} --out {out / name}")


def summarize(events: ak.Array) -> dict:
    """Mean object count, jets, b-jets, leptons, HT, MET and leading-jet pT [GeV] of a file's events."""
    from eventlm.analysis.features import variables_of

    v = variables_of(events)
    keys = ("n_particles", "n_jets", "n_bjets", "n_leptons", "ht", "met", "lead_jet_pt")
    return {f"mean_{k}": float(np.mean(v[k])) for k in keys} | {"events": len(events)}


def compare(signal: ak.Array, background: ak.Array) -> dict:
    """Signal against background: difference of the mean object counts, AUC of single variables.

    The AUCs are unweighted (the bundled background is an unweighted draw from the physical mixture).
    """
    from eventlm.analysis.features import variables_of
    from eventlm.metrics import auc

    s, b = variables_of(signal), variables_of(background)
    out = {"delta_mean_n_particles": float(np.mean(s["n_particles"]) - np.mean(b["n_particles"]))}
    for k in ("ht", "met", "n_particles", "lead_jet_pt"):
        out[f"auc_{k}"] = auc(np.asarray(b[k]), np.asarray(s[k]))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions(recorded: dict | None = None) -> dict:
    """eventlm, pythia8mc and fastjet versions; without the generator (``--only summaries``): ``recorded``."""
    from importlib.metadata import PackageNotFoundError, version

    from eventlm._version import __version__

    try:
        return {"eventlm": __version__, "pythia8mc": version("pythia8mc"), "fastjet": version("fastjet")}
    except PackageNotFoundError:
        if recorded is None:
            raise
        return recorded


def _process_entry(sample, *, n_events: int | None = None) -> dict:
    return {
        "events": n_events if n_events is not None else sample.n_events,
        "sigma_pb": sample.sigma_pb,
        "sigma_err_pb": sample.sigma_err_pb,
        "acceptance": sample.acceptance,
        "n_generated": sample.n_generated,
        "weight": sample.weight,
        "seed": sample.seed,
        "first_id": sample.first_id,
        "cpu_s_pythia": round(sample.time_pythia, 1),
        "cpu_s_detector": round(sample.time_detector, 1),
        "n_generated_total": sample.n_generated_total,
    }


def _write(events: ak.Array, path: Path) -> None:
    """Write, read back and check that the file holds the same events, all passing the selection."""
    from eventlm.generate.detector import analysis_preselection
    from eventlm.io import read_events, write_events

    write_events(events, path)
    back = read_events(path)
    if len(back) != len(events) or not np.array_equal(ak.to_numpy(back.event_id), ak.to_numpy(events.event_id)):
        raise RuntimeError(f"{path}: read back {len(back)} events, wrote {len(events)}")
    failing = np.flatnonzero(~analysis_preselection(back))
    if len(failing):
        print(f"warning: {path}: {len(failing)} events fail the preselection after the CSV round trip",
              file=sys.stderr, flush=True)


def _pilot_from(manifest: Path) -> dict:
    """The per-process entries of the background recorded in another bundle's ``MANIFEST.json``."""
    try:
        processes = json.loads(Path(manifest).read_text())["files"]["background.csv.gz"]["processes"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"--pilot {manifest}: no background.csv.gz entry with processes ({err!r})") from None
    missing = [p for p in BACKGROUNDS if p not in processes]
    if missing:
        raise SystemExit(f"--pilot {manifest}: the background entry lacks {', '.join(missing)}")
    return processes


def _shuffled(events: ak.Array, seed: int) -> ak.Array:
    order = np.random.default_rng(seed).permutation(len(events))
    return ak.to_packed(events[order])


class Bundle:
    def __init__(self, out: Path, *, seed: int, jobs: int, command: str, luminosity: float = 10.0):
        self.out = out
        self.seed = seed
        self.jobs = jobs
        self.command = command
        self.luminosity = luminosity
        self.manifest_path = out / "MANIFEST.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.exists() else {}
        self.manifest.setdefault("files", {})

    def _generate(self, process: str, n: int, seed: int, file_name: str):
        from eventlm.generate.pythia import generate

        return generate(
            process, n, seed=seed, jobs=self.jobs, luminosity=self.luminosity, selection=SELECTION,
            first_id=first_id(file_name, process),
        )

    def _record(self, file_name: str, events: ak.Array, processes: dict, note: str) -> None:
        path = self.out / file_name
        self.manifest["files"][file_name] = {
            "events": len(events),
            "sha256": _sha256(path),
            "bytes": path.stat().st_size,
            "note": note,
            "versions": _versions(),
            "processes": processes,
        }
        self._save()

    def _save(self) -> None:
        from eventlm.generate.detector import DetectorParams

        self.manifest.update(
            {
                "command": self.command,
                "seed": self.seed,
                "selection": "Dark Machines preselection + HT >= 300 GeV, >= 4 jets (b-jets count), >= 1 b-jet",
                "luminosity_fb": self.luminosity,
                "weights": "sigma_i / N_generated,i * luminosity (N_generated,i: Pythia events up to the last kept one)",
                "versions": _versions(self.manifest.get("versions")),
                "detector": DetectorParams().as_dict(),
            }
        )
        self.manifest["files"] = dict(sorted(self.manifest["files"].items()))
        self.manifest_path.write_text(json.dumps(self.manifest, indent=2) + "\n")
        (self.out / "README.md").write_text(readme(self.manifest))

    # ------------------------------------------------------------------------------------------------
    def fixture(self) -> dict:
        """The fixture; returns its per-process entries (the pilot of the background mixture)."""
        name = "fixture.csv.gz"
        seed = self.seed + 1  # not the main samples' seed: the fixture's events are not in them
        samples = {p: self._generate(p, n, seed, name) for p, n in FIXTURE_COUNTS.items()}
        background = _shuffled(ak.concatenate([samples[p].events for p in BACKGROUNDS]), seed)
        events = ak.concatenate([background, *(samples[p].events for p in FIXTURE_SIGNALS)])
        _write(events, self.out / name)
        entries = {p: _process_entry(s) for p, s in samples.items()}
        self._record(name, events, entries, "shuffled background, then gluino_1000, then tttt_H500; "
                     "fixed process counts, physical weights")
        return entries

    def background(self, n_total: int = DEFAULT_BACKGROUND_EVENTS, pilot_manifest: Path | None = None) -> None:
        """The background mixture; ``pilot_manifest``: a ``MANIFEST.json`` whose ``background.csv.gz``
        entry measured sigma_i x A_i (e.g. ``data/MANIFEST.json``) instead of this folder's fixture: its
        larger samples need a smaller surplus (fewer events generated and then dropped)."""
        name = "background.csv.gz"
        if pilot_manifest is not None:
            pilot = _pilot_from(pilot_manifest)
        else:
            pilot = self.manifest["files"].get("fixture.csv.gz", {}).get("processes") or self.fixture()
        rate = {p: pilot[p]["sigma_pb"] * pilot[p]["acceptance"] for p in BACKGROUNDS}
        total_rate = sum(rate.values())
        targets = {}
        for p in BACKGROUNDS:
            surplus = 1.0 + 2.5 / math.sqrt(max(pilot[p]["events"], 1))
            targets[p] = math.ceil(n_total * rate[p] / total_rate * surplus) + 20
        print(f"background targets (with surplus): {targets}", flush=True)
        samples = {p: self._generate(p, targets[p], self.seed, name) for p in BACKGROUNDS}
        # measured sigma x acceptance of the full samples sets the mixture
        rate = {p: s.sigma_pb * s.acceptance for p, s in samples.items()}
        total_rate = sum(rate.values())
        fraction = {p: rate[p] / total_rate for p in BACKGROUNDS}
        n_final = min([n_total] + [math.floor(samples[p].n_events / fraction[p]) for p in BACKGROUNDS])
        if n_final < MIN_BACKGROUND_EVENTS:
            print(f"warning: only {n_final} background events after mixing", file=sys.stderr)
        counts = {p: max(1, round(n_final * fraction[p])) for p in BACKGROUNDS}
        counts = {p: min(c, samples[p].n_events) for p, c in counts.items()}
        kept = {p: samples[p].head(counts[p]) for p in BACKGROUNDS}
        events = _shuffled(ak.concatenate([kept[p].events for p in BACKGROUNDS]), self.seed)
        _write(events, self.out / name)
        entries = {p: _process_entry(kept[p]) for p in BACKGROUNDS}
        for p in BACKGROUNDS:  # the full sample's numbers too: they measured sigma x A
            entries[p]["generated_sample"] = {
                "events": samples[p].n_events, "n_generated": samples[p].n_generated,
                "acceptance": samples[p].acceptance, "fraction": fraction[p],
            }
        note = "mixed by sigma x acceptance, shuffled (seeded permutation)"
        if pilot_manifest is not None:
            note += f"; sigma x acceptance first estimated from {pilot_manifest}"
        self._record(name, events, entries, note)

    def signals(self, n_events: int = DEFAULT_SIGNAL_EVENTS, only: tuple[str, ...] = SIGNALS) -> None:
        for p in only:
            name = f"{p}.csv.gz"
            sample = self._generate(p, n_events, self.seed, name)
            _write(sample.events, self.out / name)
            entry = _process_entry(sample)
            entry["command"] = generate_command(p, n_events, self.seed, self.out)
            self._record(name, sample.events, {p: entry}, "one signal process")
        self.summaries()

    def summaries(self) -> None:
        """Summaries of every file in the manifest, signals compared with the background."""
        from eventlm.io import read_events

        background_path = self.out / "background.csv.gz"
        background = read_events(background_path) if background_path.exists() else None
        for name, entry in self.manifest["files"].items():
            events = background if name == "background.csv.gz" else read_events(self.out / name)
            entry["summary"] = summarize(events)
            if background is not None and name not in ("background.csv.gz", "fixture.csv.gz"):
                entry["summary"] |= compare(events, background)
        self._save()


# ----------------------------------------------------------------------------------------------------
# the validation signals (not bundled)

VALIDATION_OUT = Path("generated/validation_signals")
VALIDATION_SEED = 20261205
VALIDATION_EVENTS = 3000
#: Event-id blocks of the validation signals: ``VALIDATION_BLOCK + i``, past every block of the bundle.
VALIDATION_BLOCK = 500


def validation_signals(out: Path, *, n_events: int = VALIDATION_EVENTS, seed: int = VALIDATION_SEED, jobs: int = 2,
                       reference: Path | None = Path("data/background.csv.gz"),
                       only: tuple[str, ...] = VALIDATION_SIGNALS) -> dict:
    """Generate the validation signals into ``out`` (``<name>.csv.gz`` + ``MANIFEST.json``).

    The same selection as the bundle (``SELECTION``); each file's manifest entry has its process
    numbers, the ``eventlm generate`` command that writes the same file alone, and (where ``reference``,
    the bundled background, exists) a summary against it: mean object count, HT, MET, AUC of HT, MET
    and the object count alone. A file whose manifest entry matches (events, seed) and whose SHA-256
    matches is kept (a rerun after an interruption generates only what is missing).
    """
    from eventlm.generate.pythia import generate
    from eventlm.io import read_events

    if block_clash := set(range(VALIDATION_BLOCK, VALIDATION_BLOCK + len(VALIDATION_SIGNALS))) & set(id_blocks().values()):
        raise RuntimeError(f"validation event-id blocks collide with the bundle's: {sorted(block_clash)}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "MANIFEST.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}
    manifest.update({"seed": seed, "selection": SELECTION, "luminosity_fb": 10.0,
                     "what": "validation signals: the test signals' families at other masses, never bundled"})
    files = manifest.setdefault("files", {})
    background = read_events(reference) if reference is not None and Path(reference).exists() else None
    for p in only:
        name = f"{p}.csv.gz"
        entry = files.get(name, {})
        if (out / name).exists() and entry.get("events") == n_events and entry.get("seed") == seed \
                and entry.get("sha256") == _sha256(out / name):
            print(f"{name}: kept ({n_events} events)", flush=True)
            continue
        first = 10**7 * (VALIDATION_BLOCK + VALIDATION_SIGNALS.index(p))
        sample = generate(p, n_events, seed=seed, jobs=jobs, selection=SELECTION, first_id=first)
        _write(sample.events, out / name)
        info = _process_entry(sample)
        info["command"] = (f"eventlm generate {p} --events {n_events} --seed {seed} --select {SELECTION} "
                           f"--first-id {first} --out {out / name}")
        summary = summarize(sample.events)
        if background is not None:
            summary |= compare(sample.events, background) | {"reference": str(reference)}
        files[name] = {"events": n_events, "seed": seed, "sha256": _sha256(out / name), "versions": _versions(),
                       "processes": {p: info}, "summary": summary}
        path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        print(f"{name}: {n_events} events, acceptance {sample.acceptance:.3f}, "
              f"AUC(HT) {summary.get('auc_ht', float('nan')):.3f}", flush=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def readme(manifest: dict) -> str:
    lines = [
        "# Bundled samples",
        "",
        "Generated by eventlm's Pythia 8 + FastJet generator and its parametric ATLAS-like detector model",
        "(`docs/generator.md`), 13 TeV pp, in the Dark Machines CSV format (MeV). Regenerate with",
        "",
        "```",
        manifest.get("command", "python -m eventlm.generate.bundle --out data"),
        "```",
        "",
        f"Selection: {manifest.get('selection', '')}. Weights: {manifest.get('weights', '')}, luminosity "
        f"{manifest.get('luminosity_fb')} fb^-1, so the weights of a process sum to sigma x acceptance x "
        "luminosity (expected events).",
        "Event ids are unique across all files: `10^7 * block + i` with `block = 10 * file_index + process_index`",
        "and `i` the event's position in its process sample (before the shuffle).",
        "file_index: " + ", ".join(f"{i} {f.removesuffix('.csv.gz')}" for f, i in FILE_INDEX.items()) + ".",
        "process_index: " + ", ".join(f"{i} {p}" for p, i in PROCESS_INDEX.items()) + ".",
        "The blocks that occur are distinct (a block >= 100, as 10 * 9 + 10, cannot meet a background block:",
        "the files from index 3 on hold one signal each); `first_id` in `MANIFEST.json` is `10^7 * block`.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()) + f"; master seed "
        f"{manifest.get('seed')} (the fixture uses seed + 1).",
        "",
        "| file | process | events | sigma [pb] | acceptance | N generated | weight | MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for file_name, entry in manifest.get("files", {}).items():
        for i, (process, info) in enumerate(entry["processes"].items()):
            size = f"{entry['bytes'] / 1e6:.1f}" if i == 0 else ""
            lines.append(
                f"| {file_name if i == 0 else ''} | {process} | {info['events']} | {info['sigma_pb']:.4g} "
                f"| {info['acceptance']:.4f} | {info['n_generated']} | {info['weight']:.4g} | {size} |"
            )
        lines.append(f"| | **total** | **{entry['events']}** | | | | | |")
    lines += ["", *summary_table(manifest)]
    pending = [p for p in SIGNALS if f"{p}.csv.gz" not in manifest.get("files", {})]
    if pending and len(pending) < len(SIGNALS):  # a folder with no signal at all (a background alone) is complete
        lines += ["", "Signal cards of the suite not generated into this folder yet: " + ", ".join(pending)
                  + ". Make them with",
                  "`python -m eventlm.generate.bundle --out data --signal NAME` (repeatable)."]
    lines += [
        "",
        "Background mixing: the number of events of a process is proportional to sigma x acceptance measured",
        "in the generation; the fixture has fixed process counts (all processes present) with physical weights.",
        "`MANIFEST.json` has every number, the detector parameters and SHA-256 of each file.",
        "",
    ]
    return "\n".join(lines)


#: How each signal differs from the background (docs/generator.md, "Signals").
SIGNAL_NOTES = {
    "gluino_1000": "more objects, HT, MET",
    "tttt_H500": "more objects",
    "zprime_1500": "energy scale, boosted tops",
    "wprime_1500": "energy scale, fewer objects",
    "stop_800": "MET, energy scale",
    "ttbar_S200_inv": "MET",
    "A3_ttbar_750": "energy scale, t tbar mass",
}


def summary_table(manifest: dict) -> list[str]:
    """Markdown table: per signal file, its events, sigma, acceptance and how it differs from the background."""
    files = manifest.get("files", {})
    bkg = files.get("background.csv.gz", {}).get("summary")
    if not bkg:
        return []
    lines = [
        "Signals against the background (means over the file's events; AUC of one variable alone, signal vs",
        "the bundled background, unweighted; Delta n: signal's mean object count minus the background's):",
        "",
        "| file | differs in | events | sigma [pb] | acceptance | mean objects | Delta n | mean HT | mean MET "
        "| mean lead-jet pT | AUC HT | AUC MET | AUC n objects |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| background.csv.gz | | {bkg['events']} | | | {bkg['mean_n_particles']:.2f} | 0 | {bkg['mean_ht']:.0f} "
        f"| {bkg['mean_met']:.0f} | {bkg['mean_lead_jet_pt']:.0f} | | | |",
    ]
    for name, entry in files.items():
        summary = entry.get("summary", {})
        if "delta_mean_n_particles" not in summary:
            continue
        (process, info), = entry["processes"].items()
        lines.append(
            f"| {name} | {SIGNAL_NOTES.get(process, '')} | {entry['events']} | {info['sigma_pb']:.3g} "
            f"| {info['acceptance']:.3f} | {summary['mean_n_particles']:.2f} | {summary['delta_mean_n_particles']:+.2f} "
            f"| {summary['mean_ht']:.0f} "
            f"| {summary['mean_met']:.0f} | {summary['mean_lead_jet_pt']:.0f} | {summary['auc_ht']:.3f} "
            f"| {summary['auc_met']:.3f} | {summary['auc_n_particles']:.3f} |"
        )
    commands = [info["command"] for entry in files.values() for info in entry["processes"].values()
                if "command" in info]
    lines += ["", "HT, MET and pT in GeV."]
    if commands:
        lines += ["", "`eventlm generate` commands that write each of these signal files alone (the same bytes):", ""]
        lines += [f"- `{command}`" for command in commands]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eventlm.generate.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=None,
                        help=f"master seed (default {DEFAULT_SEED}; --only validation: {VALIDATION_SEED})")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=("fixture", "background", "signals", "summaries", "validation"),
                        action="append",
                        help="regenerate only these files (repeatable; summaries: only recompute the manifest's "
                        "summaries; validation: the validation signals, not part of the bundle, into --out, "
                        f"default seed {VALIDATION_SEED}); default: fixture, background, signals")
    parser.add_argument("--signal", choices=SIGNALS + VALIDATION_SIGNALS, action="append",
                        help="generate only these signals (repeatable; implies --only signals unless --only "
                        "validation); default: all")
    parser.add_argument("--reference", type=Path, default=Path("data/background.csv.gz"),
                        help="--only validation: the background the signals' summaries compare with")
    parser.add_argument("--background-events", type=int, default=DEFAULT_BACKGROUND_EVENTS)
    parser.add_argument("--signal-events", type=int, default=None,
                        help=f"events per signal (default {DEFAULT_SIGNAL_EVENTS}; validation: {VALIDATION_EVENTS})")
    parser.add_argument("--pilot", type=Path, default=None,
                        help="a MANIFEST.json whose background entry estimates sigma x acceptance (e.g. "
                        "data/MANIFEST.json) instead of the fixture in --out")
    args = parser.parse_args(argv)
    if args.only and "validation" in args.only:
        if len(args.only) > 1:
            parser.error("--only validation writes the validation signals alone (another --out than the bundle)")
        start = time.perf_counter()
        if bad := [p for p in args.signal or () if p not in VALIDATION_SIGNALS]:
            parser.error(f"--only validation: {', '.join(bad)} not a validation signal ({', '.join(VALIDATION_SIGNALS)})")
        validation_signals(args.out, n_events=args.signal_events or VALIDATION_EVENTS,
                           seed=VALIDATION_SEED if args.seed is None else args.seed, jobs=args.jobs,
                           reference=args.reference, only=tuple(args.signal or VALIDATION_SIGNALS))
        print(f"done in {time.perf_counter() - start:.0f} s -> {args.out}", flush=True)
        return 0
    args.signal_events = args.signal_events or DEFAULT_SIGNAL_EVENTS
    args.seed = DEFAULT_SEED if args.seed is None else args.seed
    if bad := [p for p in args.signal or () if p not in SIGNALS]:
        parser.error(f"{', '.join(bad)}: a validation signal, generated with --only validation")
    args.out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m eventlm.generate.bundle --out {args.out} --seed {args.seed} --jobs {args.jobs} "
               f"--background-events {args.background_events} --signal-events {args.signal_events}")
    if args.pilot is not None:
        command += f" --pilot {args.pilot}"
    bundle = Bundle(args.out, seed=args.seed, jobs=args.jobs, command=command)
    stages = args.only or (["signals"] if args.signal else ["fixture", "background", "signals"])
    start = time.perf_counter()
    if "fixture" in stages:
        bundle.fixture()
    if "background" in stages:
        bundle.background(args.background_events, args.pilot)
    if "signals" in stages:
        bundle.signals(args.signal_events, tuple(args.signal or SIGNALS))
    elif "summaries" in stages:
        bundle.summaries()
    print(f"done in {time.perf_counter() - start:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
