"""The analysis config: one small TOML file per study (see ``analysis/*.toml`` and docs/analysis.md).

Relative paths in the file are resolved against the file's directory. Every table is optional except
``[inputs]`` and ``[regions]``; unknown keys are an error (a typo should not silently do nothing).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from eventlm.analysis.baselines import NAMES as BASELINE_NAMES
from eventlm.analysis.features import VARIABLES
from eventlm.metrics import WORKING_POINTS
from eventlm.analysis.regions import Region, SelectionError, flags_in, region_from_config
from eventlm.analysis.threshold import METHODS
from eventlm.errors import EventlmError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class AnalysisConfigError(EventlmError, ValueError):
    """An analysis config that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"
    title: str = ""  # plot and table title; defaults to the signal name
    lumi: float = 139.0  # fb^-1: every yield, histogram and figure is at this luminosity
    #: fb^-1 the stored event weights of a sample without a cross section correspond to (the Dark
    #: Machines CSV: data/MANIFEST.json); such weights are multiplied by lumi / weights_lumi
    weights_lumi: float = 1.0
    model: Path | None = None  # model directory; None: read an existing anomaly_score branch
    seed: int = 0
    #: a golden JSON of certified (run, luminosity block) ranges applied to data samples (coffea's
    #: LumiMask); None: no mask
    lumi_mask: Path | None = None


#: What a sample is: simulated background or signal, or collision data.
ROLES = ("background", "signal", "data")


@dataclass(frozen=True)
class SampleConfig:
    """One ``[samples.<name>]`` table: files of one simulated process (or of data) and how to normalise
    them (docs/analysis.md, "Samples and their normalisation").

    A simulated event with a ``cross_section`` weighs ``cross_section * k_factor * lumi * w / sum_w``
    (pb x fb^-1, times 1000), ``w`` its generator weight and ``sum_w`` the sum of the generator weights
    of the whole sample: ``sum_weights`` when given, else NanoAOD's ``Runs`` tree (``genEventSumw``) or
    the PHYSLITE bookkeeping of every file, else the sum over every event read (the results say which).
    Without a cross section the stored weights are kept, scaled by ``lumi / weights_lumi``. A data event
    weighs 1.
    """

    name: str
    files: tuple[Path, ...] = ()
    role: str = "background"
    process: str = ""  # process label (histograms, legends); default: the sample name
    cross_section: float | None = None  # pb
    k_factor: float = 1.0
    sum_weights: float | None = None  # the sample's sum of generator weights, when known better
    #: not a config key: the older [inputs] background keeps each event's stored process label
    keep_labels: bool = False

    @property
    def label(self) -> str:
        return self.process or self.name

    @property
    def is_mc(self) -> bool:
        return self.role != "data"


@dataclass(frozen=True)
class InputsConfig:
    background: tuple[Path, ...] = ()
    signals: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    #: "test": keep only the background events of the model's test split (split.json), rescaling
    #: their weights so the sample keeps its cross section; "all": use every background event.
    background_events: str = "test"
    max_events: int | None = None  # per input file (a quick look)
    #: a selection every sample's events must pass (after their normalisation: sum_w counts every
    #: generated event), in the language of the regions, trigger and filter bits included
    preselection: str = ""


#: Score columns a study can cut on (see eventlm.score), with their axis labels.
SCORE_LABELS = {
    "anomaly_score": "Anomaly score $-\\log p$(event) [nats]",
    "anomaly_score_calibrated": "Calibrated anomaly score $-\\log_{10} p_{bkg}$",
    "anomaly_score_mean": "Anomaly score (mean per-token NLL)",
    "anomaly_score_sum": "Anomaly score (summed per-token NLL)",
    "anomaly_score_max": "Anomaly score (largest per-token NLL)",
}
SCORES = tuple(SCORE_LABELS)
#: What [statistics] score may name: a score column, or one computed by the analysis from the background
#: (eventlm.analysis.transfer).
STATISTICS_SCORES = SCORES + ("anomaly_score_transferable", "anomaly_score_conditional")


@dataclass(frozen=True)
class ThresholdConfig:
    control_region: str = "CR"
    signal_region: str = "SR"
    #: the score column the threshold cuts on (and the score histograms show): "anomaly_score" (the
    #: default: -log p(event)), "anomaly_score_calibrated" (per object count, transfers CR -> SR),
    #: "anomaly_score_mean" (the paper's mean), "anomaly_score_sum" or "anomaly_score_max"
    score: str = "anomaly_score"
    method: str = "youden"
    background_efficiency: float = 0.01  # for method = "background_efficiency"
    #: "cross_section": signal enters the CR with its own weights; a number f: signal weights in the
    #: CR are rescaled so that signal = f x background (by weighted yield).
    signal_injection: str | float = "cross_section"


@dataclass(frozen=True)
class MetricsConfig:
    region: str = "all"  # where ROC curves and figures of merit are computed ("all": no selection)
    n_bootstrap: int = 100
    working_points: tuple[float, ...] = WORKING_POINTS


@dataclass(frozen=True)
class BaselinesConfig:
    names: tuple[str, ...] = BASELINE_NAMES
    n_objects: int = 10
    epochs: int = 20
    max_train_events: int = 50_000


@dataclass(frozen=True)
class HistogramsConfig:
    score_bins: int = 60
    #: [low, high] of the score histograms; None (the default): fitted to the analysed events' scores
    #: (their range, rounded outward to a round bin width; the results say which range was used)
    score_range: tuple[float, float] | None = None
    variables: tuple[str, ...] = ("n_jets", "n_bjets", "n_leptons", "ht", "met", "lead_jet_pt")


@dataclass(frozen=True)
class PlotConfig:
    #: the experiment whose samples these are ("ATLAS", "CMS", ...); "" (the default) claims none
    experiment: str = ""
    #: the text after it ("Internal"; mplhep writes "Simulation" before it for simulated events)
    label: str = "Simulation"
    com: float = 13.0  # TeV
    roc_style: str = "rejection"  # or "standard"


@dataclass(frozen=True)
class ExecutorConfig:
    """The ``[run]`` section: which coffea executor runs the processor, and with how many workers."""

    executor: str = "iterative"  # iterative | futures | dask
    workers: int = 2
    chunksize: int = 25_000
    scheduler: str | None = None  # address of a running dask scheduler (dask executor)


@dataclass(frozen=True)
class StatisticsConfig:
    """The ``[statistics]`` table: from the anomaly score to a background estimate and a limit
    (docs/statistics.md). Present in a config, it turns the chain on (``enabled``)."""

    enabled: bool = False
    #: the score of the background estimate and the fit: "anomaly_score_transferable" (calibrated in the
    #: cells of the region variables: its background efficiency transfers CR -> SR), its variant
    #: "anomaly_score_conditional", or any score column
    score: str = "anomaly_score_transferable"
    background_efficiency: float = 0.01  # the threshold keeps this fraction of the CR background
    #: a region between CR and SR where the ABCD non-closure is measured ("": none, no uncertainty)
    validation_region: str = ""
    closure_efficiencies: tuple[float, ...] = (0.1, 0.01)  # CR efficiencies of the closure table
    cells: str = "regions"  # "regions": the atoms of the regions; "counts": atoms x values of the count variables
    min_cell_events: int = 200  # least background events of a calibration cell


@dataclass(frozen=True)
class AnalysisConfig:
    study: StudyConfig = StudyConfig()
    inputs: InputsConfig = InputsConfig()
    samples: tuple[SampleConfig, ...] = ()  # [samples.<name>]; () with [inputs] background / signals
    regions: tuple[Region, ...] = ()
    threshold: ThresholdConfig = ThresholdConfig()
    metrics: MetricsConfig = MetricsConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    histograms: HistogramsConfig = HistogramsConfig()
    plot: PlotConfig = PlotConfig()
    run: ExecutorConfig = ExecutorConfig()
    statistics: StatisticsConfig = StatisticsConfig()
    path: Path | None = None  # the file it was read from

    @property
    def title(self) -> str:
        return self.study.title or ", ".join(self.signals) or self.study.name

    @property
    def all_samples(self) -> tuple[SampleConfig, ...]:
        """The samples of the study: ``[samples.*]``, or those of the older ``[inputs] background`` and
        ``[inputs.signals]`` (one background sample keeping its files' process labels and stored weights,
        one signal sample per name, labelled with that name)."""
        if self.samples:
            return self.samples
        out = []
        if self.inputs.background:
            out.append(SampleConfig("background", self.inputs.background, role="background", keep_labels=True))
        for name, paths in self.inputs.signals.items():
            out.append(SampleConfig(name, paths, role="signal", process=name))
        return tuple(out)

    @property
    def signals(self) -> list[str]:
        """The signal process labels, in config order (one dataset and one set of metrics each)."""
        return list(dict.fromkeys(s.label for s in self.all_samples if s.role == "signal"))

    @property
    def has_data(self) -> bool:
        return any(s.role == "data" for s in self.all_samples)

    @property
    def flags(self) -> tuple[str, ...]:
        """The ``HLT_*``/``Flag_*`` bits the regions and the preselection use (read from NanoAOD)."""
        names = [f for r in self.regions for f in r.flags] + list(flags_in(self.inputs.preselection))
        return tuple(dict.fromkeys(names))

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        if name == "all":
            return Region("all")
        raise KeyError(name)

    def with_overrides(self, **sections) -> AnalysisConfig:
        """A copy with some fields of some sections replaced: ``with_overrides(run={"executor": "dask"})``."""
        changes = {}
        for section, values in sections.items():
            current = getattr(self, section)
            changes[section] = replace(current, **values) if isinstance(values, dict) else values
        return replace(self, **changes)


_SECTIONS = {
    "study": StudyConfig, "inputs": InputsConfig, "threshold": ThresholdConfig,
    "metrics": MetricsConfig, "baselines": BaselinesConfig, "histograms": HistogramsConfig,
    "plot": PlotConfig, "run": ExecutorConfig, "statistics": StatisticsConfig,
}


def _paths(value, base: Path, where: str) -> tuple[Path, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AnalysisConfigError(f"{where}: expected a path or a list of paths")
    return tuple((base / v).resolve() if not Path(v).is_absolute() else Path(v) for v in value)


def parse_config(data: dict, *, base: Path = Path("."), source: str = "<config>") -> AnalysisConfig:
    """Build and validate an :class:`AnalysisConfig` from a parsed TOML document."""
    unknown = set(data) - set(_SECTIONS) - {"regions", "samples"}
    if unknown:
        raise AnalysisConfigError(f"{source}: unknown tables {sorted(unknown)}")
    sections = {}
    for name, cls in _SECTIONS.items():
        table = dict(data.get(name, {}))
        known = {f.name for f in fields(cls)}
        bad = set(table) - known
        if bad:
            raise AnalysisConfigError(f"{source}: [{name}] has unknown keys {sorted(bad)} (known: {sorted(known)})")
        if name == "study" and table.get("model") is not None:
            table["model"] = _paths(table["model"], base, f"{source}: [study] model")[0]
        if name == "study" and table.get("lumi_mask") is not None:
            table["lumi_mask"] = _paths(table["lumi_mask"], base, f"{source}: [study] lumi_mask")[0]
        if name == "inputs":
            if "background" in table:
                table["background"] = _paths(table["background"], base, f"{source}: [inputs] background")
            signals = table.get("signals", {})
            if not isinstance(signals, dict):
                raise AnalysisConfigError(f"{source}: [inputs.signals] must be a table name = [paths]")
            for k in signals:
                _ascii_name(k, f"{source}: [inputs.signals] {k}")
            table["signals"] = {k: _paths(v, base, f"{source}: [inputs.signals] {k}") for k, v in signals.items()}
        if name == "statistics" and "statistics" in data:
            table.setdefault("enabled", True)
        for key in ("working_points", "names", "variables", "score_range", "closure_efficiencies"):
            if key in table:
                table[key] = tuple(table[key])
        sections[name] = cls(**table)
    try:
        regions = tuple(region_from_config(n, t) for n, t in data.get("regions", {}).items())
        for r in regions:
            r.validate(set(VARIABLES) | set(r.flags))
        preselection = sections["inputs"].preselection
        if not isinstance(preselection, str):
            raise AnalysisConfigError(f"{source}: [inputs] preselection must be a selection string")
        if preselection:
            Region("preselection", preselection).validate(set(VARIABLES) | set(flags_in(preselection)))
    except SelectionError as err:
        raise AnalysisConfigError(f"{source}: {err}") from None
    samples = _samples(data.get("samples", {}), base, source)
    if samples and (sections["inputs"].background or sections["inputs"].signals):
        raise AnalysisConfigError(f"{source}: give the inputs either as [samples.*] or as [inputs] background "
                                  "and [inputs.signals], not both")
    config = AnalysisConfig(regions=regions, samples=samples, **sections)
    _validate(config, source)
    return config


def _ascii_name(name: str, where: str) -> None:
    """A dataset name coffea can take (it hashes the names as ASCII): refused here, naming the key,
    rather than deep inside coffea's preprocessing."""
    if not name.isascii() or not name.isprintable():
        raise AnalysisConfigError(f"{where}: the sample name {name!r} must be printable ASCII (coffea's dataset "
                                  "names are); the process label may be anything (process = \"...\")")


def _samples(table, base: Path, source: str) -> tuple[SampleConfig, ...]:
    """The ``[samples.<name>]`` tables, checked key by key."""
    if not isinstance(table, dict):
        raise AnalysisConfigError(f"{source}: [samples] must hold tables [samples.<name>]")
    known = {f.name for f in fields(SampleConfig)} - {"name", "keep_labels"}
    out = []
    for name, entry in table.items():
        where = f"{source}: [samples.{name}]"
        _ascii_name(name, where)
        if not isinstance(entry, dict):
            raise AnalysisConfigError(f"{where} must be a table (files = [...], role = ..., cross_section = ...)")
        bad = set(entry) - known
        if bad:
            raise AnalysisConfigError(f"{where} has unknown keys {sorted(bad)} (known: {sorted(known)})")
        if "files" not in entry:
            raise AnalysisConfigError(f"{where}: files is missing")
        values = dict(entry, files=_paths(entry["files"], base, f"{where} files"))
        if not values["files"]:
            raise AnalysisConfigError(f"{where}: files is empty")
        role = values.get("role", "background")
        if role not in ROLES:
            raise AnalysisConfigError(f"{where}: role = {role!r} must be one of {', '.join(ROLES)}")
        if not isinstance(values.get("process", ""), str):
            raise AnalysisConfigError(f"{where}: process must be a string")
        for key, positive in (("cross_section", True), ("k_factor", True), ("sum_weights", False)):
            v = values.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                    (v <= 0 if positive else v == 0):
                raise AnalysisConfigError(f"{where}: {key} = {v!r} must be a {'positive' if positive else 'non-zero'} number")
            values[key] = float(v)
        if role == "data" and any(k in values for k in ("cross_section", "k_factor", "sum_weights")):
            raise AnalysisConfigError(f"{where}: a data sample has no cross_section, k_factor or sum_weights "
                                      "(its events weigh 1)")
        out.append(SampleConfig(name=name, **values))
    for s in out:
        if s.role != "data" and s.label in ("background", "data"):
            raise AnalysisConfigError(f"{source}: [samples.{s.name}] process {s.label!r} is reserved for the "
                                      "dataset names: choose another process label")
    labels = {}
    for s in out:  # one process label is one role: a label both signal and background would be drawn twice
        if labels.setdefault(s.label, s.role) != s.role:
            raise AnalysisConfigError(f"{source}: process {s.label!r} is both {labels[s.label]} and {s.role}")
    return tuple(out)


def _definition(region) -> tuple:
    """What a region selects, independent of its name and the selection's spacing."""
    import ast

    selection = ast.dump(ast.parse(region.selection, mode="eval")) if region.selection.strip() else ""
    return selection, sorted(region.minimum.items()), sorted(region.maximum.items())


def _validate(config: AnalysisConfig, source: str) -> None:
    names = {r.name for r in config.regions}
    if "all" in names:
        raise AnalysisConfigError(f"{source}: 'all' is reserved for the inclusive selection")
    t = config.threshold
    for key in ("control_region", "signal_region"):
        if getattr(t, key) not in names:
            raise AnalysisConfigError(f"{source}: [threshold] {key} = {getattr(t, key)!r} is not a region ({sorted(names)})")
    for r in config.regions:  # an empty [regions.X] would select every event without saying so
        if not r.selection.strip() and not r.minimum and not r.maximum:
            raise AnalysisConfigError(f"{source}: [regions.{r.name}] has no selection and no bounds: it would select "
                                      "every event (give selection = \"...\"; the inclusive selection is 'all')")
    cr, sr = config.region(t.control_region), config.region(t.signal_region)
    if _definition(cr) == _definition(sr):
        raise AnalysisConfigError(f"{source}: [threshold] control_region {cr.name!r} and signal_region {sr.name!r} "
                                  "select the same events: the threshold is chosen in the CR and applied in a "
                                  "different SR")
    if t.score not in SCORES:
        raise AnalysisConfigError(f"{source}: [threshold] score must be one of {SCORES}")
    if t.method not in METHODS:
        raise AnalysisConfigError(f"{source}: [threshold] method must be one of {METHODS}")
    st = config.statistics
    if st.score not in STATISTICS_SCORES:
        raise AnalysisConfigError(f"{source}: [statistics] score must be one of {STATISTICS_SCORES}")
    if st.validation_region and st.validation_region not in names:
        raise AnalysisConfigError(f"{source}: [statistics] validation_region = {st.validation_region!r} is not a "
                                  f"region ({sorted(names)})")
    if st.validation_region in (t.control_region, t.signal_region):
        raise AnalysisConfigError(f"{source}: [statistics] validation_region must differ from the CR and the SR")
    if st.cells not in ("counts", "regions"):
        raise AnalysisConfigError(f"{source}: [statistics] cells must be 'counts' or 'regions'")
    if isinstance(t.signal_injection, str) and t.signal_injection != "cross_section":
        raise AnalysisConfigError(f"{source}: [threshold] signal_injection must be 'cross_section' or a fraction")
    if config.metrics.region not in names | {"all"}:
        raise AnalysisConfigError(f"{source}: [metrics] region {config.metrics.region!r} is not a region")
    if config.inputs.background_events not in ("test", "all"):
        raise AnalysisConfigError(f"{source}: [inputs] background_events must be 'test' or 'all'")
    if config.run.executor not in ("iterative", "futures", "dask"):
        raise AnalysisConfigError(f"{source}: [run] executor must be iterative, futures or dask")
    for v in config.histograms.variables:
        if v not in VARIABLES:
            raise AnalysisConfigError(f"{source}: [histograms] unknown variable {v!r}")
    for b in config.baselines.names:
        if b not in BASELINE_NAMES:
            raise AnalysisConfigError(f"{source}: [baselines] unknown baseline {b!r}")
    if config.study.lumi <= 0 or config.study.weights_lumi <= 0:
        raise AnalysisConfigError(f"{source}: [study] lumi and weights_lumi must be positive")
    _validate_types(config, source)


#: Smallest values of the numeric keys: ``(section, key) -> (minimum, strict)``.
_RANGES = {
    ("metrics", "n_bootstrap"): (1, False), ("baselines", "n_objects"): (1, False),
    ("baselines", "epochs"): (1, False), ("baselines", "max_train_events"): (1, False),
    ("histograms", "score_bins"): (1, False), ("run", "workers"): (1, False), ("run", "chunksize"): (1, False),
    ("inputs", "max_events"): (1, False), ("plot", "com"): (0, True),
    ("statistics", "min_cell_events"): (1, False),
}


def _validate_types(config: AnalysisConfig, source: str) -> None:
    """Every scalar key has its declared type and range (``n_bootstrap = "five"`` is refused here,
    before any event is read, not deep inside the bootstrap)."""
    import typing

    def fail(section, key, value, expected):
        raise AnalysisConfigError(f"{source}: [{section}] {key} = {value!r} must be {expected}")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for section, cls in _SECTIONS.items():
        table = getattr(config, section)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            value, hint = getattr(table, f.name), hints[f.name]
            options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)
            if value is None and type(None) in options:
                continue
            if int in options and float not in options and not (isinstance(value, int) and not isinstance(value, bool)):
                fail(section, f.name, value, "an integer")
            if float in options and str not in options and not number(value):
                fail(section, f.name, value, "a number")
            if options == (str,) and not isinstance(value, str):
                fail(section, f.name, value, "a string")
            if typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (float,):
                if not all(number(v) for v in value):
                    fail(section, f.name, value, "a list of numbers")
            if typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (str,):
                if not all(isinstance(v, str) for v in value):
                    fail(section, f.name, value, "a list of strings")
            bound = _RANGES.get((section, f.name))
            if bound is not None and value is not None and (value < bound[0] or (bound[1] and value == bound[0])):
                fail(section, f.name, value, f"{'>' if bound[1] else '>='} {bound[0]}")
    t = config.threshold
    if not 0 < t.background_efficiency < 1:
        fail("threshold", "background_efficiency", t.background_efficiency, "in (0, 1)")
    if not isinstance(t.signal_injection, str) and not (number(t.signal_injection) and t.signal_injection > 0):
        fail("threshold", "signal_injection", t.signal_injection, "'cross_section' or a positive fraction")
    if not 0 < config.statistics.background_efficiency < 1:
        fail("statistics", "background_efficiency", config.statistics.background_efficiency, "in (0, 1)")
    if not all(0 < w < 1 for w in config.statistics.closure_efficiencies):
        fail("statistics", "closure_efficiencies", config.statistics.closure_efficiencies, "efficiencies in (0, 1)")
    if not all(0 < w < 1 for w in config.metrics.working_points):
        fail("metrics", "working_points", config.metrics.working_points, "background efficiencies in (0, 1)")
    score_range = config.histograms.score_range
    if score_range is not None and (len(score_range) != 2 or not all(number(v) for v in score_range)):
        fail("histograms", "score_range", score_range, "[low, high] (two numbers), or left out to fit the scores")
    lo, hi = score_range or (0.0, 1.0)
    if not lo < hi:
        fail("histograms", "score_range", config.histograms.score_range, "[low, high] with low < high")


def load_analysis_config(path) -> AnalysisConfig:
    """Read an analysis TOML file (relative paths resolve against its directory)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise AnalysisConfigError(f"{path}: {err}") from None
    try:
        config = parse_config(data, base=path.resolve().parent, source=str(path))
    except TypeError as err:  # a wrong type in a dataclass field
        raise AnalysisConfigError(f"{path}: {err}") from None
    return replace(config, path=path)
