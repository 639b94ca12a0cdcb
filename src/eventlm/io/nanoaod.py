"""CMS NanoAOD (Run 2 and Run 3, v9 to v15; TTree or RNTuple) mapped onto the event model.

A ``.root`` file whose ``Events`` (TTree or RNTuple) has NanoAOD collections (``Jet_pt``,
``Muon_pt``, ... and no ``Particle_pt``) is read here, ``step_size`` entries at a time. Inside a coffea
processor, :func:`from_nanoevents` applies the same mapping to ``NanoAODSchema`` events.

Selection (defaults; every number and working point is a field of :class:`NanoAODOptions`):

==========  ==============================  ============================================  ========
collection  kinematics                      identification / isolation                    kind
==========  ==============================  ============================================  ========
Jet         pT > 20 GeV, abs(eta) < 2.8     ``Jet_jetId`` tight (bit 1); a file without   JET/BJET
                                            it is an error unless ``jet_id=None``
Electron    pT > 15 GeV, abs(eta) < 2.7     ``Electron_cutBased`` >= 3 (medium)           ELECTRON
Muon        pT > 15 GeV, abs(eta) < 2.7     ``Muon_mediumId``, ``Muon_pfRelIso04_all`` <  MUON
                                            0.25 (loose PF isolation)
Photon      pT > 20 GeV, abs(eta) < 2.37    ``Photon_cutBased`` >= 2 (medium)             PHOTON
==========  ==============================  ============================================  ========

Then overlap removal (ΔR < 0.4, :func:`eventlm.io.selection.overlap_removal`): photons near a
lepton and jets near a lepton or photon are dropped. A jet is a BJET when the b-tag branch exceeds
the working point and lies inside the tracker (abs(eta) < 2.5; 2.4 for the 2016 eras;
``btag_eta``): by default DeepJet (``Jet_btagDeepFlavB``) medium of 2018 UL for Run 2 files and
ParticleNet (``Jet_btagPNetB``, DeepJet where a file lacks it) medium of 2022 for Run 3 files (a
file is Run 3 when it has ``Jet_btagPNetB`` or the ``Rho_*`` branches of NanoAOD v10 and later);
:data:`BTAG_WORKING_POINTS` holds the other periods.

``met``/``met_phi`` come from ``MET`` (Run 2) or ``PuppiMET`` (Run 3) by default, whichever the file
has (said in the log); without either they are computed from the selected objects (with a warning).
``weight`` is ``genWeight`` (1 if absent), ``event_id`` the ``event`` branch (the entry number if
absent). A collection a slimmed file lacks is empty, with one warning naming it; a lepton or photon
identification branch it lacks leaves that requirement out, with one warning; a missing ``Jet_jetId``
is an error unless the jet ID is switched off (``jet_id=None``, ``--jet-id none``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import Kind
from eventlm.io.selection import (
    checked_counts,
    default_process,
    SUSPICIOUS_REJECTS,
    Cut,
    plain_array,
    nanoevents_fields,
    nanoevents_process,
    warn_once,
    candidates,
    constant_like,
    suspicion_reporter,
    met_from_objects,
    object_mask,
    overlap_removed_particles,
)

log = logging.getLogger(__name__)

#: b-tag working points per data-taking period: era -> {branch: {"loose", "medium", "tight"}}
#: (CMS BTV recommendations: DeepJet for the Run 2 ultra-legacy eras, DeepJet and ParticleNet
#: for 2022-2023). Check the values for your analysis; pass ``btag_wp=<number>`` for others.
BTAG_WORKING_POINTS: dict[str, dict[str, dict[str, float]]] = {
    "2016preVFP": {"Jet_btagDeepFlavB": {"loose": 0.0508, "medium": 0.2598, "tight": 0.6502}},
    "2016postVFP": {"Jet_btagDeepFlavB": {"loose": 0.0480, "medium": 0.2489, "tight": 0.6377}},
    "2017": {"Jet_btagDeepFlavB": {"loose": 0.0532, "medium": 0.3040, "tight": 0.7476}},
    "2018": {"Jet_btagDeepFlavB": {"loose": 0.0490, "medium": 0.2783, "tight": 0.7100}},
    "2022": {"Jet_btagPNetB": {"loose": 0.0470, "medium": 0.2450, "tight": 0.6734},
             "Jet_btagDeepFlavB": {"loose": 0.0583, "medium": 0.3086, "tight": 0.7183}},
    "2022EE": {"Jet_btagPNetB": {"loose": 0.0499, "medium": 0.2605, "tight": 0.6915},
               "Jet_btagDeepFlavB": {"loose": 0.0614, "medium": 0.3196, "tight": 0.7300}},
    "2023": {"Jet_btagPNetB": {"loose": 0.0358, "medium": 0.1917, "tight": 0.6172},
             "Jet_btagDeepFlavB": {"loose": 0.0479, "medium": 0.2431, "tight": 0.6553}},
    "2023BPix": {"Jet_btagPNetB": {"loose": 0.0359, "medium": 0.1919, "tight": 0.6133},
                 "Jet_btagDeepFlavB": {"loose": 0.0480, "medium": 0.2435, "tight": 0.6563}},
}
#: The era whose working point a file gets when none is given, per LHC Run.
DEFAULT_BTAG_ERA = {2: "2018", 3: "2022"}
#: The b-tag branches per Run when none is given, the first the file has is used.
DEFAULT_BTAG_BRANCH = {2: ("Jet_btagDeepFlavB",), 3: ("Jet_btagPNetB", "Jet_btagDeepFlavB")}
#: The event identity kept beside ``event`` (as ``event_id``): run and luminosity block, exactly.
IDENTITY = ("run", "luminosityBlock")
#: MET collections in order of preference, per Run.
MET_PREFERENCE = {2: ("MET", "PuppiMET"), 3: ("PuppiMET", "MET")}

JET_ID_BITS = {"tight": 2, "tightlepveto": 4}
ELECTRON_ID_LEVELS = {"veto": 1, "loose": 2, "medium": 3, "tight": 4}
MUON_IDS = ("loose", "medium", "tight")
PHOTON_ID_LEVELS = {"loose": 1, "medium": 2, "tight": 3}
PHOTON_ID_BITS = {"loose": 1, "medium": 2, "tight": 4}

COLLECTIONS: dict[str, Kind] = {"Jet": Kind.JET, "Electron": Kind.ELECTRON, "Muon": Kind.MUON,
                                "Photon": Kind.PHOTON}
_REQUIRED = {"Jet": ("pt", "eta", "phi"), "Electron": ("pt", "eta", "phi", "charge"),
             "Muon": ("pt", "eta", "phi", "charge"), "Photon": ("pt", "eta", "phi")}


@dataclass(frozen=True)
class NanoAODOptions:
    """How a NanoAOD file is mapped (see the module docstring and docs/event-model.md).

    ``None`` for an identification, isolation or ``overlap_dr`` switches that step off;
    :meth:`kinematic_only` switches them all off.
    """

    process: str | None = None          #: label of every event (default: the file name)
    met: str | None = None              #: "MET" or "PuppiMET" (default: by Run, from the file)
    btag_branch: str | None = None      #: e.g. "Jet_btagDeepFlavB" (default: by Run)
    btag_wp: float | str = "medium"     #: a cut value, or "loose"/"medium"/"tight" of ``btag_era``
    btag_era: str | None = None         #: a key of BTAG_WORKING_POINTS (default: by Run)
    #: |eta| below which a jet can be b-tagged (the tracker): default 2.4 for the 2016 eras, else 2.5
    btag_eta: float | None = None
    jet: Cut = field(default_factory=lambda: Cut(20.0, 2.8))
    electron: Cut = field(default_factory=lambda: Cut(15.0, 2.7))
    muon: Cut = field(default_factory=lambda: Cut(15.0, 2.7))
    photon: Cut = field(default_factory=lambda: Cut(20.0, 2.37))
    jet_id: str | None = "tight"        #: "tight" or "tightlepveto" (bits of Jet_jetId)
    electron_id: str | None = "medium"  #: Electron_cutBased: "veto", "loose", "medium", "tight"
    electron_iso: float | None = None   #: Electron_pfRelIso03_all below this (cutBased has one)
    muon_id: str | None = "medium"      #: Muon_{loose,medium,tight}Id
    muon_iso: float | None = 0.25       #: Muon_pfRelIso04_all below this (0.25 loose, 0.15 tight)
    photon_id: str | None = "medium"    #: Photon_cutBased (or the bitmap of older files)
    overlap_dr: float | None = 0.4      #: ΔR of the overlap removal
    #: trigger and MET-filter bits to keep as boolean event fields (``HLT_*``, ``Flag_*`` branches):
    #: for preselections and regions; a name the file lacks is an error
    flags: tuple[str, ...] = ()

    @classmethod
    def kinematic_only(cls, **changes) -> NanoAODOptions:
        """Only the pT and eta cuts: no identification, isolation or overlap removal."""
        return cls(**{"jet_id": None, "electron_id": None, "muon_id": None, "muon_iso": None,
                      "photon_id": None, "overlap_dr": None, **changes})

    def __post_init__(self):
        for name, value, allowed in (("jet_id", self.jet_id, JET_ID_BITS),
                                     ("electron_id", self.electron_id, ELECTRON_ID_LEVELS),
                                     ("muon_id", self.muon_id, MUON_IDS),
                                     ("photon_id", self.photon_id, PHOTON_ID_LEVELS)):
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} or None, not {value!r}")
        if self.met is not None and self.met not in ("MET", "PuppiMET"):
            raise ValueError(f"met must be 'MET' or 'PuppiMET', not {self.met!r}")
        if self.btag_era is not None and self.btag_era not in BTAG_WORKING_POINTS:
            raise ValueError(f"btag_era must be one of {', '.join(BTAG_WORKING_POINTS)}, not {self.btag_era!r}")
        if isinstance(self.btag_wp, str) and self.btag_wp not in ("loose", "medium", "tight"):
            raise ValueError(f"btag_wp must be a number or loose/medium/tight, not {self.btag_wp!r}")


def options_from(options: NanoAODOptions | None, legacy: dict) -> NanoAODOptions:
    """``options`` updated by the keywords ``process=``, ``btag_branch=``, ``btag_wp=``, ``met=``."""
    options = options or NanoAODOptions()
    unknown = set(legacy) - {"process", "btag_branch", "btag_wp", "btag_era", "met"}
    if unknown:
        raise TypeError(f"unknown NanoAOD options {sorted(unknown)} (use nanoaod=NanoAODOptions(...))")
    return replace(options, **legacy) if legacy else options


def is_nanoaod(keys) -> bool:
    """A NanoAOD ``Events``: any of the mapped collections or a MET, and no eventlm ``Particle_pt``."""
    keys = set(keys)
    return "Particle_pt" not in keys and any(
        f"{c}_pt" in keys for c in (*COLLECTIONS, "MET", "PuppiMET"))


# --------------------------------------------------------------------------------------------------
# the plan: what a file (or a NanoEvents array) holds, decided once, with its warnings


class _Plan:
    """Which fields to read and which requirements apply, from the fields a source holds."""

    def __init__(self, fields: dict[str, set[str]], top: set[str], options: NanoAODOptions, where: str,
                 warn=log.warning, info=log.info):
        o = self.options = options
        self.where = where
        self.suspicious = suspicion_reporter(where, warn)
        self.warn, self.btag_unfilled = warn, False
        self.top = [b for b in ("event", "genWeight", *IDENTITY) if b in top]
        missing_flags = [b for b in o.flags if b not in top]
        if missing_flags:
            raise EventFormatError(where, f"no {', '.join(missing_flags)} branch (flags asked for; the file has "
                                          f"{sum(1 for b in top if b.startswith(('HLT_', 'Flag_')))} HLT_/Flag_ branches)")
        self.top += list(o.flags)
        self.present = [c for c in COLLECTIONS if set(_REQUIRED[c]) <= fields.get(c, set())]
        missing = [c for c in COLLECTIONS if c not in self.present]
        if missing:
            warn("%s: no %s collection (%s); read as empty", where, ", ".join(missing),
                 ", ".join(f"{c}_{f}" for c in missing for f in _REQUIRED[c] if f not in fields.get(c, set())))
        jet_fields = fields.get("Jet", set())
        # Run 3 NanoAOD (v10 and later) renamed fixedGridRho* to Rho_*, v12 added ParticleNet b-tagging
        self.run = 3 if "btagPNetB" in jet_fields or fields.get("Rho") else 2
        skipped: list[str] = []
        # MET
        if o.met is not None:
            if not {"pt", "phi"} <= fields.get(o.met, set()):
                raise EventFormatError(where, f"met={o.met!r} but there is no {o.met}_pt, {o.met}_phi")
            self.met = o.met
        else:
            self.met = next((m for m in MET_PREFERENCE[self.run] if {"pt", "phi"} <= fields.get(m, set())), None)
        if self.met is None:
            warn("%s: no MET or PuppiMET; met is computed from the selected objects", where)
        else:
            info("%s: met from %s_pt, %s_phi (Run %d file)", where, self.met, self.met, self.run)
        # b-tag
        self.btag_field = self.btag_cut = None
        if "Jet" in self.present:
            defaults = DEFAULT_BTAG_BRANCH[self.run]
            branch = o.btag_branch or next(
                (b for b in defaults if b.removeprefix("Jet_") in jet_fields), defaults[0])
            era = o.btag_era or DEFAULT_BTAG_ERA[self.run]
            self.btag_eta = o.btag_eta if o.btag_eta is not None else (2.4 if era.startswith("2016") else 2.5)
            if isinstance(o.btag_wp, str):
                table = BTAG_WORKING_POINTS[era]
                if branch not in table:
                    raise EventFormatError(where, f"no {o.btag_wp} working point of {branch} for {era} "
                                                  f"(known: {', '.join(table)}); pass btag_wp=<number>")
                cut = table[branch][o.btag_wp]
            else:
                cut = float(o.btag_wp)
            if branch.removeprefix("Jet_") in jet_fields:
                self.btag_field, self.btag_cut = branch.removeprefix("Jet_"), cut
                info("%s: b-jets are %s > %g (%s)", where, branch, cut,
                         f"{o.btag_wp} working point of {era}" if isinstance(o.btag_wp, str) else "given cut")
            else:
                skipped.append(f"b-tagging ({branch})")
        # identification and isolation
        self.requirements: dict[str, dict[str, str]] = {c: {} for c in COLLECTIONS}

        def need(coll, req_name, fld, wanted):
            if not wanted or coll not in self.present:
                return
            if fld in fields.get(coll, set()):
                self.requirements[coll][req_name] = fld
            else:
                skipped.append(f"{req_name} ({coll}_{fld})")

        if o.jet_id and "Jet" in self.present and "jetId" not in fields.get("Jet", set()):
            # NanoAOD v15 dropped Jet_jetId: jets without ID would silently include noise and fakes
            raise EventFormatError(where, "no Jet_jetId branch (NanoAOD v15 dropped it): compute the jet ID with "
                                          "the JME recipe and store it as Jet_jetId, or read without jet ID "
                                          "(--jet-id none, NanoAODOptions(jet_id=None))")
        need("Jet", "jet_id", "jetId", o.jet_id)
        need("Electron", "electron_id", "cutBased", o.electron_id)
        need("Electron", "electron_iso", "pfRelIso03_all", o.electron_iso is not None)
        need("Muon", "muon_id", f"{o.muon_id}Id", o.muon_id)
        need("Muon", "muon_iso", "pfRelIso04_all", o.muon_iso is not None)
        if o.photon_id and "Photon" in self.present:
            if "cutBased" in fields["Photon"]:
                self.requirements["Photon"]["photon_id"] = "cutBased"
            elif "cutBasedBitmap" in fields["Photon"]:
                self.requirements["Photon"]["photon_id"] = "cutBasedBitmap"
            else:
                skipped.append("photon_id (Photon_cutBased)")
        if skipped:
            warn("%s: not applied, the file lacks the branches: %s", where, "; ".join(skipped))
        # what to read
        self.read: dict[str, list[str]] = {}
        for c in self.present:
            wanted = [*_REQUIRED[c], *(["mass"] if "mass" in fields[c] else []),
                      *self.requirements[c].values()]
            if c == "Jet" and self.btag_field:
                wanted.append(self.btag_field)
            self.read[c] = list(dict.fromkeys(wanted))
        if self.met:
            self.read[self.met] = ["pt", "phi"]

    def branches(self) -> list[str]:
        return [*self.top, *(f"{c}_{f}" for c, fs in self.read.items() for f in fs)]

    # ----------------------------------------------------------------------------------------------

    def map(self, colls: dict[str, ak.Array], top: dict[str, ak.Array], n: int, entry0: int,
            process: str) -> ak.Array:
        """The event model from the collections (records with the fields of :attr:`read`)."""
        o = self.options
        parts: dict[str, tuple[ak.Array, ak.Array] | None] = {}
        for c, kind in COLLECTIONS.items():
            if c not in self.present:
                parts[c] = None
                continue
            rec = colls[c]
            mass = rec.mass if "mass" in self.read[c] else ak.zeros_like(rec.pt)
            if c == "Jet" and self.btag_field:
                score = rec[self.btag_field]
                # b-tagging needs tracks: only inside the tracker acceptance
                tagged = (score > self.btag_cut) & (abs(rec.eta) < self.btag_eta)
                kinds = ak.where(tagged, int(Kind.BJET), int(Kind.JET))
                n_jets = int(ak.sum(ak.num(score, axis=1)))
                if n_jets >= SUSPICIOUS_REJECTS and not ak.any(score >= 0) and not self.btag_unfilled:
                    self.btag_unfilled = True  # e.g. DeepJet in the 2015 Open Data NanoAOD (-3000)
                    self.warn("%s: Jet_%s is below 0 for all %d jets (not filled): no b-jets; choose "
                              "another btag_branch", self.where, self.btag_field, n_jets)
            else:
                kinds = constant_like(rec.pt, int(kind))
            charge = rec.charge if "charge" in self.read[c] else constant_like(rec.pt, 0)
            cand = candidates(rec.pt, rec.eta, rec.phi, mass, charge, kinds)
            parts[c] = (cand, object_mask(cand, getattr(o, c.lower()), self._requirements(c, rec),
                                          suspicious=self.suspicious))
        particles = overlap_removed_particles(parts, n, o.overlap_dr, jets="Jet", photons="Photon",
                                              leptons=("Electron", "Muon"))
        if self.met:
            met = ak.to_numpy(colls[self.met].pt)
            met_phi = ak.to_numpy(colls[self.met].phi)
        else:
            met, met_phi = met_from_objects(particles)
        event_id = ak.to_numpy(top["event"]).astype(np.int64) if "event" in top else np.arange(entry0, entry0 + n)
        weight = ak.to_numpy(top["genWeight"]).astype(np.float64) if "genWeight" in top else np.ones(n)
        from eventlm.io.selection import build_events

        extra = {b: ak.to_numpy(top[b]).astype(np.uint32) for b in IDENTITY if b in top}
        extra["met_flavour"] = np.full(n, {"MET": 1, "PuppiMET": 2}.get(self.met, 0), dtype=np.int8)
        extra.update({b: ak.to_numpy(top[b]).astype(bool) for b in o.flags})
        return build_events(particles, event_id=event_id, weight=weight, process=process, met=met,
                            met_phi=met_phi, extra=extra)

    def _requirements(self, coll: str, rec: ak.Array) -> dict[str, ak.Array]:
        o = self.options
        out = {}
        for name, fld in self.requirements[coll].items():
            values = rec[fld]
            if name == "jet_id":
                out[name] = (values & JET_ID_BITS[o.jet_id]) != 0
            elif name == "electron_id":
                out[name] = values >= ELECTRON_ID_LEVELS[o.electron_id]
            elif name == "electron_iso":
                out[name] = values < o.electron_iso
            elif name == "muon_id":
                out[name] = values != 0
            elif name == "muon_iso":
                out[name] = values < o.muon_iso
            elif fld == "cutBasedBitmap":
                out[name] = (values & PHOTON_ID_BITS[o.photon_id]) != 0
            else:
                out[name] = values >= PHOTON_ID_LEVELS[o.photon_id]
        return out


def _fields_from_keys(keys) -> tuple[dict[str, set[str]], set[str]]:
    fields: dict[str, set[str]] = {}
    top = set()
    for key in keys:
        if key.startswith("_") or "." in key or "/" in key:
            continue
        top.add(key)
        if "_" in key:
            coll, fld = key.split("_", 1)
            fields.setdefault(coll, set()).add(fld)
    return fields, top


def iter_nanoaod(
    path, tree, *, step_size, options: NanoAODOptions | None = None, on_error: str = "raise", report=None,
) -> Iterator[ak.Array]:
    """Yield the events of a NanoAOD ``Events`` (TTree or RNTuple), ``step_size`` entries at a time."""
    from eventlm.io.uproot_patch import tree_keys

    options = options or NanoAODOptions()
    fields, top = _fields_from_keys(tree_keys(tree))
    plan = _Plan(fields, top, options, str(path))
    process = options.process or default_process(path)
    branches = plan.branches()
    entry0 = 0
    if not branches:  # nothing the mapping uses: still one (empty-object) event per entry
        n_total = tree.num_entries
        step = step_size if isinstance(step_size, int) else 100_000
        for start in range(0, n_total, step):
            n = min(step, n_total - start)
            yield plan.map({}, {}, n, start, process)
        return
    for arrays in tree.iterate(branches, step_size=step_size, library="ak"):
        n = len(arrays)
        for c, fs in plan.read.items():
            checked_counts(path, {f"{c}_{f}": arrays[f"{c}_{f}"] for f in fs}, entry0)
        colls = {c: ak.zip({f: arrays[f"{c}_{f}"] for f in fs}) for c, fs in plan.read.items()}
        # bad values (NaN MET, impossible charges, ...) are judged by eventlm.sanity in iter_events
        events = plan.map(colls, {b: arrays[b] for b in plan.top}, n, entry0, process)
        entry0 += n
        yield events


def from_nanoevents(events, options: NanoAODOptions | None = None) -> ak.Array:
    """The event model from coffea ``NanoAODSchema`` events (eager or virtual mode).

    The same mapping and selection as :func:`eventlm.io.read_events` on the file, so the events are
    identical. Warnings about missing collections are given once per process and kind of input.
    """
    options = options or NanoAODOptions()
    names, fields = nanoevents_fields(events, (*COLLECTIONS, "MET", "PuppiMET", "Rho"))
    def flag(name):  # NanoAODSchema nests HLT_X as events.HLT.X
        head, _, tail = name.partition("_")
        return events[head][tail] if head in names and tail in events[head].fields else None

    top = {b for b in ("event", "genWeight", *IDENTITY) if b in names}
    top |= {b for b in options.flags if flag(b) is not None}
    plan = _Plan(fields, top, options, "NanoEvents", warn=warn_once(("nanoaod", fields, options)),
                 info=warn_once(("nanoaod", fields, options), logging.INFO))
    colls = {c: ak.zip({f: plain_array(events[c][f]) for f in fs}) for c, fs in plan.read.items()}
    process = options.process or nanoevents_process(events)
    values = {b: plain_array(events[b] if b in names else flag(b)) for b in plan.top}
    return plan.map(colls, values, len(events), 0, process)


