"""ATLAS PHYSLITE (TTree ``CollectionTree``, or the RNTuple ``EventData``) mapped onto the event model.

PHYSLITE stores calibrated objects in MeV as ``AnalysisJetsAuxDyn.pt``-style branches (``:``
instead of ``.`` in an RNTuple). Only the branches the mapping needs are read, ``step_size`` entries
at a time; inside a coffea processor, :func:`from_nanoevents` applies the same mapping to
``PHYSLITESchema`` events. MeV become GeV here.

Selection (defaults; every number and working point is a field of :class:`PHYSLITEOptions`):

===========  ============================  ===================================================  ========
collection   kinematics                    identification / isolation                           kind
===========  ============================  ===================================================  ========
Jets         pT > 20 GeV, abs(eta) < 2.8   JVT for pT < 60 GeV, abs(eta) < 2.4: ``NNJvtPass``,  JET/BJET
                                           or ``Jvt`` > 0.5 in older files
Electrons    pT > 15 GeV, abs(eta) < 2.47  ``DFCommonElectronsLHMedium``, ptvarcone30/pT < 0.15  ELECTRON
Muons        pT > 15 GeV, abs(eta) < 2.5   ``quality & 3`` <= 1 (medium), ptvarcone30/pT < 0.15 MUON
Photons      pT > 20 GeV, abs(eta) < 2.37  ``DFCommonPhotonsIsEMTight``                         PHOTON
===========  ============================  ===================================================  ========

Then the overlap removal of :mod:`eventlm.io.selection` (ΔR < 0.4). A jet with abs(eta) < 2.5 is a
BJET when its DL1 discriminant ``log(pb / (fc pc + (1 - fc) pu))`` (scores of the
``BTagging_AntiKt4EMPFlow`` object its ``btaggingLink`` points to) exceeds the cut of the working
point: DL1dv01 (fc 0.018) where the file has it, else DL1r (fc 0.018), 77 % efficiency by default
(:data:`BTAG_WORKING_POINTS`). GN2 taggers need an explicit ``btag_cut`` and ``btag_fc``.

MET: ``MET_Core_AnalysisMET`` holds only the soft terms; the final MET needs ATLAS's METMaker and
the association map, which eventlm does not run. ``met`` is rebuilt as minus the vector sum of the
selected objects (after overlap removal) plus the track soft term ``PVSoftTrkCore``; with no
``MET_Core_AnalysisMET`` in the file, from the objects alone (one warning). ``weight`` is the first
``mcEventWeights`` (1 in data), ``event_id`` the ``eventNumber``; ``runNumber``, ``lumiBlock`` and
``mcChannelNumber`` are kept as the event fields ``run``, ``luminosityBlock``, ``mcChannelNumber``.
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
    Cut,
    checked_counts,
    plain_array,
    nanoevents_fields,
    build_events,
    candidates,
    constant_like,
    suspicion_reporter,
    met_from_objects,
    nanoevents_process,
    object_mask,
    overlap_removed_particles,
    warn_once,
)

log = logging.getLogger(__name__)

#: The event identity kept beside ``eventNumber`` (the ``event_id``): EventInfo field -> event field
#: (the names of the eventlm ntuple, shared with NanoAOD; ``mcChannelNumber`` keeps its own).
IDENTITY = {"runNumber": "run", "lumiBlock": "luminosityBlock", "mcChannelNumber": "mcChannelNumber"}

MEV = 1e-3
MUON_MASS = 0.1056584  # GeV: PHYSLITE muons carry no mass branch
#: tagger -> (fc, {efficiency %: cut on the discriminant}) (ATLAS FTAG, AntiKt4EMPFlow jets)
BTAG_WORKING_POINTS: dict[str, tuple[float, dict[int, float]]] = {
    "DL1dv01": (0.018, {60: 4.884, 70: 3.494, 77: 2.456, 85: 0.948}),
    "DL1r": (0.018, {60: 4.565, 70: 3.245, 77: 2.195, 85: 0.665}),
}
BTAG_MAX_ABS_ETA = 2.5
ELECTRON_IDS = {"loose": "DFCommonElectronsLHLoose", "loosebl": "DFCommonElectronsLHLooseBL",
                "medium": "DFCommonElectronsLHMedium", "tight": "DFCommonElectronsLHTight"}
MUON_QUALITY = {"tight": 0, "medium": 1, "loose": 2, "veryloose": 3}
PHOTON_IDS = {"loose": "DFCommonPhotonsIsEMLoose", "tight": "DFCommonPhotonsIsEMTight"}
JVT_MAX_PT, JVT_MAX_ABS_ETA, JVT_CUT = 60.0, 2.4, 0.5

#: PHYSLITE container -> the name coffea's PHYSLITESchema gives it (used inside eventlm too)
CONTAINERS = {"AnalysisJetsAuxDyn": "Jets", "AnalysisElectronsAuxDyn": "Electrons",
              "AnalysisMuonsAuxDyn": "Muons", "AnalysisPhotonsAuxDyn": "Photons",
              "EventInfoAuxDyn": "EventInfo", "EventInfoAux": "EventInfo",
              "MET_Core_AnalysisMETAuxDyn": "MET_Core_MET"}
OBJECTS: dict[str, Kind] = {"Jets": Kind.JET, "Electrons": Kind.ELECTRON, "Muons": Kind.MUON,
                            "Photons": Kind.PHOTON}
_REQUIRED = {"Jets": ("pt", "eta", "phi"), "Electrons": ("pt", "eta", "phi", "charge"),
             "Muons": ("pt", "eta", "phi", "charge"), "Photons": ("pt", "eta", "phi")}


@dataclass(frozen=True)
class PHYSLITEOptions:
    """How a PHYSLITE file is mapped (see the module docstring and docs/event-model.md).

    ``None`` (or ``False``) for an identification, isolation or ``overlap_dr`` switches it off;
    :meth:`kinematic_only` switches them all off.
    """

    process: str | None = None           #: label of every event (default: the file name)
    btag_tagger: str | None = None       #: "DL1dv01", "DL1r", "GN2v00", ... (default: DL1dv01 or DL1r)
    btag_wp: int = 77                    #: b-jet efficiency [%] of the working point (60, 70, 77, 85)
    btag_cut: float | None = None        #: a discriminant cut instead of the working point
    btag_fc: float | None = None         #: the c-fraction of the discriminant (default: the tagger's)
    jet: Cut = field(default_factory=lambda: Cut(20.0, 2.8))
    electron: Cut = field(default_factory=lambda: Cut(15.0, 2.47))
    muon: Cut = field(default_factory=lambda: Cut(15.0, 2.5))
    photon: Cut = field(default_factory=lambda: Cut(20.0, 2.37))
    jet_jvt: bool = True                 #: the jet vertex tagger for pT < 60 GeV, abs(eta) < 2.4
    electron_id: str | None = "medium"   #: likelihood "loose", "loosebl", "medium", "tight"
    electron_iso: float | None = 0.15    #: ptvarcone30 / pT below this
    muon_id: str | None = "medium"       #: quality "tight", "medium", "loose", "veryloose"
    muon_iso: float | None = 0.15        #: ptvarcone30 / pT below this
    photon_id: str | None = "tight"      #: isEM "loose" or "tight"
    overlap_dr: float | None = 0.4       #: ΔR of the overlap removal
    met_soft_term: str | None = "PVSoftTrkCore"  #: MET_Core_AnalysisMET term added to the objects

    @classmethod
    def kinematic_only(cls, **changes) -> PHYSLITEOptions:
        """Only the pT and eta cuts: no identification, isolation or overlap removal."""
        return cls(**{"jet_jvt": False, "electron_id": None, "electron_iso": None, "muon_id": None,
                      "muon_iso": None, "photon_id": None, "overlap_dr": None, **changes})

    def __post_init__(self):
        for name, value, allowed in (("electron_id", self.electron_id, ELECTRON_IDS),
                                     ("muon_id", self.muon_id, MUON_QUALITY),
                                     ("photon_id", self.photon_id, PHOTON_IDS)):
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} or None, not {value!r}")
        if self.btag_cut is None and self.btag_tagger not in (None, *BTAG_WORKING_POINTS):
            raise ValueError(f"no working points known for {self.btag_tagger}: pass btag_cut= and btag_fc=")
        if self.btag_cut is None and self.btag_wp not in (60, 70, 77, 85):
            raise ValueError(f"btag_wp must be 60, 70, 77 or 85 (% efficiency), not {self.btag_wp!r}")


def options_from(options: PHYSLITEOptions | None, legacy: dict) -> PHYSLITEOptions:
    """``options`` with ``process=`` applied (the one keyword NanoAOD and PHYSLITE share)."""
    options = options or PHYSLITEOptions()
    unknown = set(legacy) - {"process"}
    if unknown:
        raise TypeError(f"options {sorted(unknown)} do not apply to PHYSLITE (use physlite=PHYSLITEOptions(...))")
    return replace(options, **legacy) if legacy else options


class _Plan:
    """What to read and which requirements apply, from the fields a source holds."""

    def __init__(self, fields: dict[str, set[str]], btag_container: str | None, options: PHYSLITEOptions,
                 where: str, warn=log.warning, info=log.info):
        o = self.options = options
        self.where = where
        self.suspicious = suspicion_reporter(where, warn)
        self.present = [c for c in OBJECTS if set(_REQUIRED[c]) <= fields.get(c, set())]
        missing = [c for c in OBJECTS if c not in self.present]
        if missing:
            warn("%s: no %s collection (%s); read as empty", where, ", ".join(missing),
                 ", ".join(f"Analysis{c}AuxDyn.{f}" for c in missing for f in _REQUIRED[c]
                           if f not in fields.get(c, set())))
        skipped: list[str] = []
        self.read: dict[str, list[str]] = {c: [*_REQUIRED[c]] for c in self.present}
        for c in ("Jets", "Electrons", "Photons"):
            if c in self.present and "m" in fields[c]:
                self.read[c].append("m")
        self.requirements: dict[str, dict[str, str]] = {c: {} for c in OBJECTS}

        def need(coll, name, fld, wanted):
            if not wanted or coll not in self.present:
                return
            if fld and fld in fields[coll]:
                self.requirements[coll][name] = fld
                self.read[coll].append(fld)
            else:
                skipped.append(f"{name} (Analysis{coll}AuxDyn.{fld or 'ptvarcone30*'})")

        jets = fields.get("Jets", set())
        need("Jets", "jvt", "NNJvtPass" if "NNJvtPass" in jets else "Jvt", o.jet_jvt)
        need("Electrons", "electron_id", ELECTRON_IDS.get(o.electron_id), o.electron_id)
        need("Electrons", "electron_iso", _iso_field(fields.get("Electrons", set())), o.electron_iso is not None)
        need("Muons", "muon_id", "quality", o.muon_id)
        need("Muons", "muon_iso", _iso_field(fields.get("Muons", set())), o.muon_iso is not None)
        need("Photons", "photon_id", PHOTON_IDS.get(o.photon_id), o.photon_id)
        # b-tagging
        self.btag = None
        if "Jets" in self.present:
            btag_fields = fields.get("BTagging", set())
            tagger = o.btag_tagger or ("DL1dv01" if "DL1dv01_pb" in btag_fields else "DL1r")
            scores = [f"{tagger}_{p}" for p in ("pb", "pc", "pu")]
            if "btaggingLink" in jets and set(scores) <= btag_fields:
                fc, cuts = BTAG_WORKING_POINTS.get(tagger, (None, {}))
                fc = o.btag_fc if o.btag_fc is not None else fc
                cut = o.btag_cut if o.btag_cut is not None else cuts[o.btag_wp]
                if fc is None:
                    raise ValueError(f"{where}: btag_fc= is needed for the tagger {tagger}")
                self.btag = (tagger, fc, cut)
                self.read["Jets"].append("btaggingLink")
                self.read["BTagging"] = scores
                info("%s: b-jets are %s (%s) > %g (fc %g, %s)", where, tagger, btag_container, cut, fc,
                         "given cut" if o.btag_cut is not None else f"{o.btag_wp} % working point")
            else:
                skipped.append(f"b-tagging ({btag_container or 'BTagging_AntiKt4EMPFlow'}: {', '.join(scores)})")
        # MET soft term, weight, event number
        met_fields = fields.get("MET_Core_MET", set())
        self.soft = o.met_soft_term if o.met_soft_term and {"mpx", "mpy", "name"} <= met_fields else None
        if o.met_soft_term and self.soft is None:
            warn("%s: no MET_Core_AnalysisMET; met is computed from the selected objects alone", where)
        if self.soft:
            self.read["MET_Core_MET"] = ["mpx", "mpy", "name"]
        info = fields.get("EventInfo", set())
        self.read["EventInfo"] = [f for f in ("eventNumber", "mcEventWeights", *IDENTITY) if f in info]
        if skipped:
            warn("%s: not applied, the file lacks the branches: %s", where, "; ".join(skipped))

    def map(self, colls: dict[str, ak.Array], n: int, entry0: int, process: str) -> ak.Array:
        o = self.options
        parts: dict[str, tuple[ak.Array, ak.Array] | None] = {}
        for c, kind in OBJECTS.items():
            if c not in self.present:
                parts[c] = None
                continue
            rec = colls[c]
            pt = rec.pt * MEV
            if c == "Muons":
                mass = constant_like(pt, MUON_MASS, np.float32)
            else:
                mass = rec.m * MEV if "m" in self.read[c] else ak.zeros_like(pt)
            kinds = constant_like(pt, int(kind))
            if c == "Jets" and self.btag:
                kinds = ak.where(self._is_b(rec, colls["BTagging"], rec.eta), int(Kind.BJET), int(Kind.JET))
            charge = rec.charge if "charge" in self.read[c] else constant_like(pt, 0)
            cand = candidates(pt, rec.eta, rec.phi, mass, charge, kinds)
            cut = {"Jets": o.jet, "Electrons": o.electron, "Muons": o.muon, "Photons": o.photon}[c]
            parts[c] = (cand, object_mask(cand, cut, self._requirements(c, rec, pt), suspicious=self.suspicious))
        particles = overlap_removed_particles(parts, n, o.overlap_dr, jets="Jets", photons="Photons",
                                              leptons=("Electrons", "Muons"))
        soft_px = soft_py = None
        if self.soft:
            core = colls["MET_Core_MET"]
            is_soft = core.name == self.soft
            soft_px = ak.to_numpy(ak.sum(core.mpx[is_soft], axis=1)) * MEV
            soft_py = ak.to_numpy(ak.sum(core.mpy[is_soft], axis=1)) * MEV
        met, met_phi = met_from_objects(particles, soft_px, soft_py)
        info = colls.get("EventInfo")
        if info is not None and "eventNumber" in self.read["EventInfo"]:
            event_id = ak.to_numpy(info.eventNumber).astype(np.int64)
        else:
            event_id = np.arange(entry0, entry0 + n)
        if info is not None and "mcEventWeights" in self.read["EventInfo"]:
            weight = ak.to_numpy(ak.fill_none(ak.firsts(info.mcEventWeights, axis=1), 1.0)).astype(np.float64)
        else:
            weight = np.ones(n)
        extra = {"met_flavour": np.full(n, 3 if self.soft else 0, dtype=np.int8)}  # selection.MET_FLAVOURS
        for field, name in IDENTITY.items():  # the event identity, under the ntuple's names
            if info is not None and field in self.read["EventInfo"]:
                extra[name] = ak.to_numpy(info[field]).astype(np.uint32)
        return build_events(particles, event_id=event_id, weight=weight, process=process, met=met,
                            met_phi=met_phi, extra=extra)

    def _is_b(self, jets, btag, eta) -> ak.Array:
        """The b-tag decision of each jet, through its ``btaggingLink`` (an invalid link: not a b-jet)."""
        tagger, fc, cut = self.btag
        n_tags = ak.num(btag[f"{tagger}_pb"], axis=1)
        link = ak.values_astype(jets.btaggingLink, np.int64)
        index = ak.mask(link, link < n_tags[:, np.newaxis])
        pb, pc, pu = (btag[f"{tagger}_{p}"][index] for p in ("pb", "pc", "pu"))
        with np.errstate(divide="ignore", invalid="ignore"):
            discriminant = np.log(pb / (fc * pc + (1.0 - fc) * pu))
        return ak.fill_none(discriminant > cut, False) & (abs(eta) < BTAG_MAX_ABS_ETA)

    def _requirements(self, coll: str, rec: ak.Array, pt: ak.Array) -> dict[str, ak.Array]:
        o = self.options
        out = {}
        for name, fld in self.requirements[coll].items():
            values = rec[fld]
            if name == "jvt":
                central_soft = (pt < JVT_MAX_PT) & (abs(rec.eta) < JVT_MAX_ABS_ETA)
                passes = values != 0 if fld == "NNJvtPass" else values > JVT_CUT
                out[name] = ~central_soft | passes
            elif name in ("electron_id", "photon_id"):
                out[name] = values != 0
            elif name == "muon_id":  # xAOD::Muon::quality() is the two lowest bits (higher: other flags)
                out[name] = (values & 3) <= MUON_QUALITY[o.muon_id]
            else:  # isolation: ptvarcone30 / pT (both MeV)
                limit = o.electron_iso if coll == "Electrons" else o.muon_iso
                out[name] = values < limit * rec.pt
        return out


def _iso_field(fields: set[str]) -> str | None:
    """The track isolation cone of PHYSLITE leptons (its name changed between releases)."""
    cones = sorted(f for f in fields if f.startswith("ptvarcone30") and f.endswith("pt1000"))
    return cones[0] if cones else ("ptvarcone30" if "ptvarcone30" in fields else None)


# --------------------------------------------------------------------------------------------------
# uproot input


def _key_map(keys, sep: str) -> tuple[dict[str, dict[str, str]], str | None]:
    """``{collection: {field: branch}}`` of a CollectionTree / EventData, and the b-tag container."""
    out: dict[str, dict[str, str]] = {}
    btag = None
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        if sep not in name:
            continue
        container, fld = name.split(sep, 1)
        if fld == "btaggingLink.m_persIndex":  # a TTree's ElementLink is read by its sub-branch
            out.setdefault(CONTAINERS.get(container, container), {})["btaggingLink"] = key
            continue
        if not fld or sep in fld or "." in fld:
            continue
        if container in CONTAINERS:
            out.setdefault(CONTAINERS[container], {}).setdefault(fld, key)
        elif container.startswith("BTagging_AntiKt4EMPFlow") and container.endswith("AuxDyn"):
            if btag is None or container == "BTagging_AntiKt4EMPFlowAuxDyn":
                if btag != container:
                    out.pop("BTagging", None)
                btag = container
            if container == btag:
                out.setdefault("BTagging", {})[fld] = key
    return out, (btag.removesuffix("AuxDyn") if btag else None)


def iter_physlite(path, tree, *, step_size, options: PHYSLITEOptions | None = None, on_error: str = "raise",
                  report=None) -> Iterator[ak.Array]:
    """Yield the events of a PHYSLITE ``CollectionTree`` (or RNTuple ``EventData``) in steps."""
    from eventlm.io.selection import default_process
    from eventlm.io.uproot_patch import tree_keys

    options = options or PHYSLITEOptions()
    sep = ":" if "RNTuple" in type(tree).__name__ else "."
    keys, btag_container = _key_map(tree_keys(tree), sep)
    if not any(c in keys for c in OBJECTS):
        raise EventFormatError(path, "a PHYSLITE tree without AnalysisJets, AnalysisElectrons, AnalysisMuons "
                                     "or AnalysisPhotons")
    plan = _Plan({c: set(f) for c, f in keys.items()}, btag_container, options, str(path))
    process = options.process or default_process(path)
    branches = {(c, f): keys[c][f] for c, fs in plan.read.items() for f in fs}
    entry0 = 0
    for arrays in tree.iterate(sorted(set(branches.values())), step_size=step_size, library="ak"):
        n = len(arrays)
        colls = {}
        for c, fs in plan.read.items():
            if fs:
                if c != "EventInfo":
                    checked_counts(path, {branches[c, f]: arrays[branches[c, f]] for f in fs}, entry0)
                colls[c] = ak.zip({f: _link_index(arrays[branches[c, f]]) if f == "btaggingLink"
                                   else arrays[branches[c, f]] for f in fs}, depth_limit=None if c != "EventInfo" else 1)
        events = plan.map(colls, n, entry0, process)  # bad values: eventlm.sanity, in iter_events
        entry0 += n
        yield events


def _link_index(link: ak.Array) -> ak.Array:
    """The ``m_persIndex`` of an ElementLink branch (its record field names differ by format)."""
    if not link.fields:
        return link
    return link[next(f for f in link.fields if f.endswith("m_persIndex"))]


# --------------------------------------------------------------------------------------------------
# coffea input


def from_nanoevents(events, options: PHYSLITEOptions | None = None) -> ak.Array:
    """The event model from coffea ``PHYSLITESchema`` events, eager or virtual: what
    :func:`eventlm.io.nanoaod.from_nanoevents` is for NanoAOD (the file's mapping and selection)."""
    options = options or PHYSLITEOptions()
    names, fields = nanoevents_fields(events, (*OBJECTS, "EventInfo", "MET_Core_MET"))
    candidates_ = sorted(n for n in names if n.startswith("BTagging_AntiKt4EMPFlow"))
    container = "BTagging_AntiKt4EMPFlow" if "BTagging_AntiKt4EMPFlow" in names else (
        candidates_[0] if candidates_ else None)
    if container:
        fields["BTagging"] = set(events[container].fields)
    plan = _Plan(fields, container, options, "NanoEvents", warn=warn_once(("physlite", fields, options)),
                 info=warn_once(("physlite", fields, options), logging.INFO))
    colls = {}
    for c, fs in plan.read.items():
        if not fs:
            continue
        source = events[container] if c == "BTagging" else events[c]
        colls[c] = ak.zip({f: plain_array(source[f].m_persIndex if f == "btaggingLink" else source[f]) for f in fs},
                          depth_limit=None if c != "EventInfo" else 1)
    process = options.process or nanoevents_process(events)
    return plan.map(colls, len(events), 0, process)
