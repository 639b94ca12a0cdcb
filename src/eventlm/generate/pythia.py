"""Pythia 8 process cards and sharded, seeded batch generation through the detector model.

``generate(process, n_events, seed=...)`` returns ``n_events`` events that pass the chosen selection,
in the event model, with physical weights. The work is cut into shards, each with its own Pythia
instance and seeds derived from ``seed`` with :class:`numpy.random.SeedSequence`; the shard plan depends
only on ``n_events``, so the output is the same for any number of worker processes (``jobs``).

Weights: ``weight = sigma / N_generated * luminosity``, where ``sigma`` is Pythia's estimate of the
process cross section (``Info::sigmaGen``, converted from mb to pb) and ``N_generated`` is the number of
events Pythia produced up to and including the last kept event (events that failed the selection
count, events generated after the last kept one do not). Hence ``sum(weight) = sigma * acceptance *
luminosity`` with ``acceptance = n_events / N_generated``.

Pythia is imported only inside the functions that need it (the ``generate`` extra).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from importlib import resources

import awkward as ak
import numpy as np

from eventlm.errors import EventlmError
from eventlm.events import make_events, process_code
from eventlm.generate.detector import SELECTIONS, DetectorParams, reconstruct, truth_record

MB_TO_PB = 1.0e9
DEFAULT_LUMINOSITY = 10.0  # fb^-1, as the Dark Machines samples
INSTALL_HINT = "the event generator needs Pythia 8 and FastJet: pip install eventlm[generate]"

#: Settings every process shares: 13 TeV pp, hadronization on (Pythia's default), particles with
#: c*tau > 10 mm stable (the usual generator-level convention: K0S, Lambda, ... reach the detector).
COMMON_SETTINGS = (
    "Beams:idA = 2212",
    "Beams:idB = 2212",
    "Beams:eCM = 13000.",
    "HadronLevel:all = on",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10.",
    "Next:numberCount = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Init:showProcesses = off",
)


@dataclass(frozen=True)
class DecayCheck:
    """After init, BR(``pid`` -> ``products``) among the open channels is at least ``min_br``.

    ``products`` are PDG ids, sorted; ``mass`` (GeV), if given, is checked too (an SLHA file was read).
    """

    pid: int
    products: tuple[int, ...]
    min_br: float
    mass: float | None = None


@dataclass(frozen=True)
class Process:
    """A Pythia process card: a name (the Dark Machines one where it exists) and its settings."""

    name: str
    description: str
    settings: tuple[str, ...]
    signal: bool = False
    slha: str | None = None  # file name in eventlm/generate/data
    checks: tuple[DecayCheck, ...] = ()
    #: signals only: designed to have the background's object count (mean within one object) and to
    #: differ in energy scale, MET or angular structure instead
    background_multiplicity: bool = False
    #: signals only: a validation signal (chooses the score's design; never bundled in data/)
    validation: bool = False


#: H2 with its couplings to W, Z and the other Higgs bosons off: it decays to fermions only.
_H2_FERMIONS_ONLY = (
    "HiggsH2:coup2u = 1.",
    "HiggsH2:coup2W = 0.",
    "HiggsH2:coup2Z = 0.",
    "HiggsH2:coup2H1H1 = 0.",
    "HiggsH2:coup2A3A3 = 0.",
    "HiggsH2:coup2H1Z = 0.",
    "HiggsH2:coup2A3H1 = 0.",
    "HiggsH2:coup2HchgW = 0.",
    "HiggsH2:coup2Hchg = 0.",
    "HiggsA3:coup2H2Z = 0.",  # H2 -> Z A3 (A3 at 300 GeV by default)
)

#: Signal masses [GeV] of the test suite bundled in data/ (docs/generator.md, "Signals", says why these).
M_ZPRIME = 1500.0
M_WPRIME = 1500.0
M_STOP = 800.0
M_CHI_STOP = 100.0
M_MEDIATOR = 200.0
M_CHI_DM = 1.0
M_A3 = 750.0
#: Relative width of the A3, forced: Pythia's default A3 couplings open bosonic channels that give it a
#: width of 313 GeV (42 %) at 750 GeV, a shape no search targets; 4 % (30 GeV at 750 GeV) is the
#: tt-dominated width of a 2HDM pseudoscalar at tan(beta) ~ 1.
A3_RELATIVE_WIDTH = 0.04
W_A3 = A3_RELATIVE_WIDTH * M_A3
#: The A3's Breit-Wigner starts above the t tbar threshold, its only open channel [GeV].
A3_MIN_MASS = 350.0


def mediator_width(mass: float, m_chi: float = M_CHI_DM) -> float:
    """Width [GeV] of the scalar mediator for a coupling g = 1 to the dark-matter fermion: g^2 m / (8 pi)
    beta^3 (its b bbar, c cbar, tau tau widths through the top-like Yukawa couplings are < 0.01 GeV at
    200 GeV)."""
    return mass / (8 * math.pi) * (1 - 4 * m_chi**2 / mass**2) ** 1.5


W_MEDIATOR = mediator_width(M_MEDIATOR)


def _g(x: float) -> str:
    return f"{x:g}"


def _resonance(name: str, description: str, production: tuple[str, ...], pid: int, mass: float, decay: str,
               products: tuple[int, ...], *, shape: tuple[str, ...] = (), validation: bool = False) -> Process:
    """A signal card for one BSM resonance ``pid`` of ``mass`` [GeV], made by ``production``, with
    ``shape`` (width, mass window) and one open decay channel ``decay`` (an ``onIf...`` setting) to
    ``products``, checked at start-up; its object count is the background's (top-rich final states)."""
    return Process(
        name, description,
        (*production, f"{pid}:m0 = {_g(mass)}", *shape, f"{pid}:onMode = off", f"{pid}:{decay}"),
        signal=True,
        background_multiplicity=True,
        checks=(DecayCheck(pid, products, 1.0 - 1e-6, mass),),
        validation=validation,
    )


# The signal families, parametric in the mass: the test suite (data/) and the validation set are the same
# cards at different masses.


def tttt(mass: float, *, validation: bool = False) -> Process:
    """t tbar H2 with H2 -> t tbar (four tops); ``mass`` [GeV] above the t tbar threshold."""
    return Process(
        f"tttt_H{mass:.0f}",
        f"t tbar H2 with a {mass:.0f} GeV heavy neutral Higgs H2 -> t tbar (couplings to W, Z and Higgs bosons off)",
        (
            "Higgs:useBSM = on",
            "HiggsBSM:gg2H2ttbar = on",
            "HiggsBSM:qqbar2H2ttbar = on",
            f"35:m0 = {mass:.0f}.",
            *_H2_FERMIONS_ONLY,
        ),
        signal=True,
        checks=(DecayCheck(35, (-6, 6), 0.95, mass),),
        validation=validation,
    )


def zprime(mass: float, *, validation: bool = False) -> Process:
    """Sequential-SM Z' of ``mass`` [GeV] -> t tbar only."""
    return _resonance(
        f"zprime_{mass:.0f}",
        f"sequential-SM Z' of {mass:.0f} GeV (pure Z', no gamma*/Z interference) -> t tbar only",
        ("NewGaugeBoson:ffbar2gmZZprime = on", "Zprime:gmZmode = 3"),
        32, mass, "onIfAny = 6", (-6, 6), validation=validation,
    )


def wprime(mass: float, *, validation: bool = False) -> Process:
    """Sequential-SM W' of ``mass`` [GeV] -> t b only."""
    return _resonance(
        f"wprime_{mass:.0f}",
        f"sequential-SM W' of {mass:.0f} GeV -> t b only (W'+ -> t bbar, W'- -> tbar b)",
        ("NewGaugeBoson:ffbar2Wprime = on",),
        34, mass, "onIfAll = 5 6", (-5, 6), validation=validation,
    )


def ttbar_invisible(mass: float, *, validation: bool = False) -> Process:
    """t tbar + a scalar mediator of ``mass`` [GeV] decaying to two dark-matter fermions: t tbar + MET."""
    return Process(
        f"ttbar_S{mass:.0f}_inv",
        f"t tbar + a {mass:.0f} GeV scalar mediator (H2, top Yukawa coupling) decaying to a pair of "
        f"{M_CHI_DM:g} GeV dark-matter fermions (Pythia's Xd, PDG 52): t tbar + MET",
        (
            "Higgs:useBSM = on",
            "HiggsBSM:gg2H2ttbar = on",
            "HiggsBSM:qqbar2H2ttbar = on",
            f"35:m0 = {_g(mass)}",
            f"35:mWidth = {mediator_width(mass):.4f}",
            *_H2_FERMIONS_ONLY,
            f"52:m0 = {_g(M_CHI_DM)}",
            "52:mayDecay = off",
            "35:onMode = off",
            "35:addChannel = 1 1.0 101 52 -52",  # meMode 101: partial width = mWidth x BR above threshold
        ),
        signal=True,
        background_multiplicity=True,
        checks=(DecayCheck(35, (-52, 52), 1.0 - 1e-6, mass),),
        validation=validation,
    )


def a3_ttbar(mass: float, *, validation: bool = False) -> Process:
    """gg -> A3 -> t tbar, the A3's width forced to ``A3_RELATIVE_WIDTH`` x ``mass`` [GeV]."""
    width = A3_RELATIVE_WIDTH * mass
    return _resonance(
        f"A3_ttbar_{mass:.0f}",
        f"gg -> A3, a {mass:.0f} GeV pseudoscalar of width {width:.0f} GeV (Pythia's BSM A3), A3 -> t tbar only",
        ("Higgs:useBSM = on", "HiggsBSM:gg2A3 = on"),
        36, mass, "onIfMatch = 6 -6", (-6, 6),
        # the Breit-Wigner within 10 widths, above the t tbar threshold
        shape=(f"36:mWidth = {width:.4f}", "36:doForceWidth = on",
               f"36:mMin = {_g(max(mass - 10 * width, A3_MIN_MASS))}", f"36:mMax = {_g(mass + 10 * width)}"),
        validation=validation,
    )


#: The validation signal set: the families of the test suite at other masses. They are for choosing the
#: default score's design (issue 25) and are never bundled in data/ (``make validation-signals`` writes
#: them to generated/validation_signals/); the seven signals bundled in data/ are the test signals.
VALIDATION_CARDS = (
    zprime(1000.0, validation=True),
    wprime(2500.0, validation=True),
    tttt(400.0, validation=True),
    ttbar_invisible(100.0, validation=True),
    a3_ttbar(500.0, validation=True),
)


PROCESSES: dict[str, Process] = {
    p.name: p
    for p in (
        Process(
            "ttbar",
            "top-quark pairs, inclusive decays",
            ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
        ),
        Process(
            "ttbarHiggs",
            "t tbar H (SM Higgs, 125 GeV), inclusive decays",
            ("HiggsSM:gg2Httbar = on", "HiggsSM:qqbar2Httbar = on", "25:m0 = 125.0"),
        ),
        Process(
            "single_top",
            "single top, t-channel (qq -> tq via W) and s-channel (ffbar -> t bbar via W); no tW in Pythia 8.318",
            ("Top:qq2tq(t:W) = on", "Top:ffbar2tqbar(s:W) = on"),
        ),
        Process(
            "w_jets",
            "W + 1 parton (qqbar -> Wg, qg -> Wq) with pT-hat > 150 GeV, inclusive W decays",
            ("WeakBosonAndParton:qqbar2Wg = on", "WeakBosonAndParton:qg2Wq = on", "PhaseSpace:pTHatMin = 150."),
        ),
        Process(
            "gluino_1000",
            "gluino pairs, m(gluino) = 1 TeV, gluino -> t tbar neutralino1 (100 %), m(neutralino1) = 1 GeV",
            ("SUSY:gg2gluinogluino = on", "SUSY:qqbar2gluinogluino = on"),
            signal=True,
            slha="gluino_1000.slha",
            checks=(DecayCheck(1000021, (-6, 6, 1000022), 1.0 - 1e-6, 1000.0),),
        ),
        tttt(500.0),
        zprime(M_ZPRIME),
        wprime(M_WPRIME),
        Process(
            f"stop_{M_STOP:.0f}",
            f"top-squark pairs, m(stop1) = {M_STOP:.0f} GeV, stop1 -> t neutralino1 (100 %), "
            f"m(neutralino1) = {M_CHI_STOP:.0f} GeV",
            (
                "SUSY:gg2squarkantisquark = on",
                "SUSY:qqbar2squarkantisquark = on",
                "SUSY:idA = 1000006",
                "SUSY:idB = 1000006",
            ),
            signal=True,
            background_multiplicity=True,
            slha=f"stop_{M_STOP:.0f}.slha",
            checks=(DecayCheck(1000006, (6, 1000022), 1.0 - 1e-6, M_STOP),),
        ),
        ttbar_invisible(M_MEDIATOR),
        a3_ttbar(M_A3),
        *VALIDATION_CARDS,
    )
}

#: Names the issue or the Dark Machines set use that cannot be made here, with the reason.
UNAVAILABLE: dict[str, str] = {
    "wtop": (
        "process 'wtop' (tW, gb -> tW) is not available: Pythia 8.318 has no gb -> tW process. "
        "Use 'single_top' (t- and s-channel single top) instead; see docs/generator.md"
    ),
}


def get_process(name: str) -> Process:
    if name in UNAVAILABLE:
        raise EventlmError(UNAVAILABLE[name])
    try:
        return PROCESSES[name]
    except KeyError:
        raise EventlmError(f"unknown process {name!r}; available: {', '.join(PROCESSES)}") from None


def require_generator():
    """Import pythia8mc and fastjet, or raise a one-line :class:`EventlmError` naming the extra."""
    try:
        import fastjet  # noqa: F401
        import pythia8mc
    except ImportError as err:
        raise EventlmError(f"{INSTALL_HINT} ({err})") from None
    return pythia8mc


def process_settings(process: Process, pythia_seed: int) -> list[str]:
    """Every ``readString`` line of a process at a given Pythia seed."""
    settings = [*COMMON_SETTINGS, "Random:setSeed = on", f"Random:seed = {pythia_seed}", *process.settings]
    if process.slha:
        path = resources.files("eventlm.generate").joinpath("data", process.slha)
        settings.append(f"SLHA:file = {path}")
    return settings


def make_pythia(process: Process, pythia_seed: int, *, quiet: bool = True):
    """An initialized Pythia instance for ``process`` (its decay tables checked)."""
    pythia8 = require_generator()
    pythia = pythia8.Pythia("", False)
    lines = process_settings(process, pythia_seed)
    if quiet:
        lines += ["Print:quiet = on", "SLHA:verbose = 0"]
    for line in lines:
        if not pythia.readString(line):
            raise EventlmError(f"Pythia rejected the setting {line!r} of process {process.name!r}")
    if not pythia.init():
        raise EventlmError(f"Pythia failed to initialize process {process.name!r} (run with quiet=False to see why)")
    check_decays(pythia, process)
    return pythia


def decay_table(pythia, pid: int) -> list[tuple[float, tuple[int, ...]]]:
    """``[(branching ratio, products), ...]`` of the open channels of ``pid`` after init."""
    entry = pythia.particleData.particleDataEntryPtr(pid)
    table = []
    for i in range(entry.sizeChannels()):
        channel = entry.channel(i)
        if channel.onMode() > 0 and channel.bRatio() > 0:
            products = tuple(sorted(channel.product(j) for j in range(channel.multiplicity())))
            table.append((channel.bRatio(), products))
    return table


def check_decays(pythia, process: Process) -> None:
    """The signals' decays are what the cards promise (an SLHA table was taken, the channel is open)."""
    for check in process.checks:
        table = decay_table(pythia, check.pid)
        total = sum(b for b, _ in table)
        br = sum(b for b, prods in table if prods == tuple(sorted(check.products))) / total if total else 0.0
        mass = pythia.particleData.m0(check.pid)
        if br < check.min_br:
            raise EventlmError(
                f"process {process.name!r}: BR({check.pid} -> {' '.join(map(str, check.products))}) = {br:.4f} "
                f"< {check.min_br:g} after init; open channels {table}"
            )
        if check.mass is not None and abs(mass - check.mass) > 1e-6 * max(1.0, check.mass):
            raise EventlmError(f"process {process.name!r}: mass of {check.pid} is {mass} GeV, not {check.mass} GeV")


# ----------------------------------------------------------------------------------------------------
# Pythia batch -> detector input


def truth_from_batch(batch) -> ak.Array:
    """The detector's truth record from a ``Pythia.nextBatch`` array (all particles, all statuses)."""
    prt = batch["prt"]
    pid = prt["id"]
    mother_pid = pid[prt["mother1"]]  # entry 0 is the event system, so every index is valid
    mom = prt["p"]
    counts = ak.to_numpy(ak.num(pid, axis=1))
    flat = [ak.to_numpy(ak.flatten(x)) for x in (pid, prt["status"], mom["px"], mom["py"], mom["pz"], mom["e"], mother_pid)]
    return truth_record(*flat, counts=counts)


# ----------------------------------------------------------------------------------------------------
# shards


#: Shards: at least this many selected events each, and at most MAX_SHARDS of them.
MIN_SHARD_EVENTS = 250
MAX_SHARDS = 32


def shard_sizes(n_events: int) -> list[int]:
    """How ``n_events`` are cut into shards; depends on ``n_events`` only (never on ``jobs``)."""
    if n_events <= 0:
        return []
    n_shards = max(1, min(MAX_SHARDS, n_events // MIN_SHARD_EVENTS))
    base, rest = divmod(n_events, n_shards)
    return [base + (i < rest) for i in range(n_shards)]


def shard_seeds(process: str, seed: int, n_shards: int) -> list[tuple[int, np.random.SeedSequence]]:
    """Per shard: Pythia's ``Random:seed`` (1..900000000) and the detector's SeedSequence.

    The process name enters the entropy, so two processes generated with the same seed are independent.
    """
    root = np.random.SeedSequence([int(seed), process_code(process)])
    out = []
    for child in root.spawn(n_shards):
        pythia_seed = 1 + int(child.generate_state(1, dtype=np.uint32)[0]) % 900_000_000
        out.append((pythia_seed, child.spawn(1)[0]))
    return out


@dataclass
class ShardResult:
    index: int
    events: ak.Array  # met, met_phi, particles
    gen_index: np.ndarray  # per kept event: events generated in this shard up to and including it
    n_generated: int
    n_accepted_pythia: int
    sigma_mb: float
    sigma_err_mb: float
    time_pythia: float
    time_detector: float


@dataclass(frozen=True)
class ShardTask:
    index: int
    process: str
    n_events: int
    pythia_seed: int
    detector_seed: np.random.SeedSequence
    selection: str
    params: DetectorParams


_PROGRESS = None  # a multiprocessing queue in worker processes, a callable in-process


def _init_worker(queue) -> None:
    global _PROGRESS
    _PROGRESS = queue.put


def _report(n: int) -> None:
    if _PROGRESS is not None and n:
        _PROGRESS(n)


def run_shard(task: ShardTask) -> ShardResult:
    """Generate until ``task.n_events`` events pass the selection; keep exactly that many."""
    process = get_process(task.process)
    select = SELECTIONS[task.selection]
    rng = np.random.default_rng(task.detector_seed)
    pythia = make_pythia(process, task.pythia_seed)
    kept, gen_index = [], []
    n_kept = n_generated = 0
    time_pythia = time_detector = 0.0
    acceptance = 0.5  # first guess, replaced by the running measurement
    while n_kept < task.n_events:
        need = task.n_events - n_kept
        size = int(min(400, max(20, math.ceil(1.15 * need / max(acceptance, 0.01)) + 5)))
        t0 = time.perf_counter()
        batch = pythia.nextBatch(size, 10.0)  # "skip" failed events, give up after 10x attempts
        t1 = time.perf_counter()
        reco, _ = reconstruct(truth_from_batch(batch), rng, task.params)
        passed = np.flatnonzero(select(reco))
        t2 = time.perf_counter()
        time_pythia += t1 - t0
        time_detector += t2 - t1
        n_batch = len(reco)
        if len(passed) > need:
            passed = passed[:need]
            n_used = int(passed[-1]) + 1  # events after the last kept one are not counted
        else:
            n_used = n_batch
        kept.append(reco[passed])
        gen_index.append(n_generated + passed + 1)
        n_generated += n_used
        n_kept += len(passed)
        acceptance = max(n_kept, 1) / n_generated
        _report(len(passed))
    info = pythia.infoPython()
    result = ShardResult(
        index=task.index,
        events=ak.to_packed(ak.concatenate(kept)),
        gen_index=np.concatenate(gen_index).astype(np.int64),
        n_generated=n_generated,
        n_accepted_pythia=int(info.nAccepted()),
        sigma_mb=float(info.sigmaGen()),
        sigma_err_mb=float(info.sigmaErr()),
        time_pythia=time_pythia,
        time_detector=time_detector,
    )
    return result


# ----------------------------------------------------------------------------------------------------
# the public entry point


@dataclass
class GeneratedSample:
    """Selected events of one process and how they were made."""

    process: str
    events: ak.Array  # the event model, weights included
    gen_index: np.ndarray  # per event: generated events up to and including it (cumulative, in order)
    sigma_pb: float
    sigma_err_pb: float
    luminosity_fb: float
    seed: int
    selection: str
    first_id: int = 0
    time_pythia: float = 0.0
    time_detector: float = 0.0
    n_generated_total: int = 0  # every event Pythia made, including the ones after the last kept
    extra: dict = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.events)

    @property
    def n_generated(self) -> int:
        """The weight's denominator: generated events up to and including the last kept one."""
        return int(self.gen_index[-1]) if len(self.gen_index) else 0

    @property
    def acceptance(self) -> float:
        return self.n_events / self.n_generated if self.n_generated else 0.0

    @property
    def weight(self) -> float:
        return self.sigma_pb * self.luminosity_fb * 1000.0 / self.n_generated if self.n_generated else 0.0

    def head(self, n: int, *, first_id: int | None = None) -> GeneratedSample:
        """The first ``n`` events with the weights recomputed for the shorter sample."""
        if not 0 < n <= self.n_events:
            raise ValueError(f"head({n}) of a sample with {self.n_events} events")
        out = replace(self, gen_index=self.gen_index[:n], first_id=self.first_id if first_id is None else first_id)
        out.events = _finish(self.events[:n], out)
        return out


def _finish(events: ak.Array, sample: GeneratedSample) -> ak.Array:
    """Event ids (``first_id`` + position) and weights of ``sample`` on reconstructed events."""
    n = len(events)
    return make_events(
        event_id=np.arange(sample.first_id, sample.first_id + n, dtype=np.int64),
        process=sample.process,
        weight=np.full(n, sample.weight),
        met=ak.to_numpy(events.met),
        met_phi=ak.to_numpy(events.met_phi),
        particles=events.particles,
    )


def generate(
    process: str,
    n_events: int,
    *,
    seed: int = 0,
    jobs: int = 1,
    luminosity: float = DEFAULT_LUMINOSITY,
    selection: str = "darkmachines",
    first_id: int = 0,
    params: DetectorParams = DetectorParams(),
    progress: bool = True,
) -> GeneratedSample:
    """Generate ``n_events`` events of ``process`` that pass ``selection`` ("darkmachines" or "analysis").

    Deterministic for ``(process, n_events, seed, selection, params)``; ``jobs`` only sets how many
    worker processes share the shards. ``luminosity`` is in fb^-1.
    """
    get_process(process)
    require_generator()
    if selection not in SELECTIONS:
        raise EventlmError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    if n_events <= 0:
        raise EventlmError(f"--events must be positive, got {n_events}")
    sizes = shard_sizes(n_events)
    seeds = shard_seeds(process, seed, len(sizes))
    tasks = [
        ShardTask(i, process, n, pythia_seed, det_seed, selection, params)
        for i, (n, (pythia_seed, det_seed)) in enumerate(zip(sizes, seeds))
    ]
    results = _run_tasks(tasks, jobs=max(1, min(jobs, len(tasks))), total=n_events, desc=process, progress=progress)
    results.sort(key=lambda r: r.index)

    offsets = np.cumsum([0] + [r.n_generated for r in results[:-1]])
    gen_index = np.concatenate([r.gen_index + off for r, off in zip(results, offsets)])
    accepted = np.array([r.n_accepted_pythia for r in results], dtype=float)
    sigma_mb = float(np.sum(accepted * [r.sigma_mb for r in results]) / accepted.sum())
    sigma_err_mb = float(np.sqrt(np.sum((accepted * [r.sigma_err_mb for r in results]) ** 2)) / accepted.sum())
    sample = GeneratedSample(
        process=process,
        events=ak.concatenate([r.events for r in results]),
        gen_index=gen_index,
        sigma_pb=sigma_mb * MB_TO_PB,
        sigma_err_pb=sigma_err_mb * MB_TO_PB,
        luminosity_fb=luminosity,
        seed=seed,
        selection=selection,
        first_id=first_id,
        time_pythia=sum(r.time_pythia for r in results),
        time_detector=sum(r.time_detector for r in results),
        n_generated_total=sum(r.n_generated for r in results),
    )
    sample.events = _finish(sample.events, sample)
    return sample


def _run_tasks(tasks: list[ShardTask], *, jobs: int, total: int, desc: str, progress: bool) -> list[ShardResult]:
    from tqdm.auto import tqdm

    global _PROGRESS
    bar = tqdm(total=total, desc=desc, unit="ev", disable=None if progress else True, dynamic_ncols=True)
    try:
        if jobs == 1:
            _PROGRESS = bar.update
            try:
                return [run_shard(t) for t in tasks]
            finally:
                _PROGRESS = None
        return _run_pool(tasks, jobs, bar)
    finally:
        bar.close()


def _run_pool(tasks: list[ShardTask], jobs: int, bar) -> list[ShardResult]:
    import multiprocessing as mp
    import queue as queue_module
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")  # no fork of a process that may hold threads (torch, tqdm)
    progress = ctx.Queue()
    results = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(progress,)) as pool:
        pending = {pool.submit(run_shard, t) for t in tasks}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                results.append(future.result())
            while True:
                try:
                    bar.update(progress.get_nowait())
                except queue_module.Empty:
                    break
    bar.update(bar.total - bar.n)  # progress messages still in flight when the last shard returned
    return results
