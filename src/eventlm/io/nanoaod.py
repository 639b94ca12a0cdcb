"""CMS NanoAOD-like ROOT files mapped onto the event model.

A ``.root`` file whose ``Events`` tree has ``Jet_pt`` and no ``Particle_pt`` is read here. The objects
are selected as in the Dark Machines format (arXiv:2105.14027):

==========  ============================  =====================================
collection  selection                     kind (charge)
==========  ============================  =====================================
Jet         pT > 20 GeV, abs(eta) < 2.8   BJET if b-tag score > ``btag_wp`` else JET (0)
Electron    pT > 15 GeV, abs(eta) < 2.7   ELECTRON (``Electron_charge``)
Muon        pT > 15 GeV, abs(eta) < 2.7   MUON (``Muon_charge``)
Photon      pT > 20 GeV, abs(eta) < 2.37  PHOTON (0)
==========  ============================  =====================================

``E`` comes from (pT, eta, mass) (mass 0 where a collection has no ``_mass`` branch); the particles
of an event are ordered by decreasing pT. ``met``/``met_phi`` are ``MET_pt``/``MET_phi``; the weight
is ``genWeight`` if present, else 1; ``event_id`` is the ``event`` branch (the entry number if
absent). Options (``read_events(..., process=..., btag_branch=..., btag_wp=...)``):

- ``process``: the label of every event (default: the file name without suffix);
- ``btag_branch``: default ``Jet_btagDeepFlavB`` (DeepJet);
- ``btag_wp``: default 0.3093, the DeepJet medium working point of CMS 2016 (legacy) data; pick
  the one of your data-taking period.

No trigger, identification or isolation requirement is applied; the file is read as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import Kind, energy_from_pt_eta, make_events

DEFAULT_BTAG_BRANCH = "Jet_btagDeepFlavB"
DEFAULT_BTAG_WP = 0.3093

#: collection -> (pt cut [GeV], |eta| cut, kind)
SELECTION: dict[str, tuple[float, float, Kind]] = {
    "Jet": (20.0, 2.8, Kind.JET),
    "Electron": (15.0, 2.7, Kind.ELECTRON),
    "Muon": (15.0, 2.7, Kind.MUON),
    "Photon": (20.0, 2.37, Kind.PHOTON),
}
_CHARGED = ("Electron", "Muon")


def default_process(path) -> str:
    name = Path(path).name
    stem = name[: -len(".root")] if name.lower().endswith(".root") else Path(name).stem
    return stem or "unknown"


def iter_nanoaod(
    path,
    tree,
    *,
    step_size: int,
    process: str | None = None,
    btag_branch: str = DEFAULT_BTAG_BRANCH,
    btag_wp: float = DEFAULT_BTAG_WP,
) -> Iterator[ak.Array]:
    """Yield NanoAOD events mapped to the event model, ``step_size`` entries at a time."""
    keys = set(tree.keys())
    process = process or default_process(path)
    needed = ["MET_pt", "MET_phi", btag_branch]
    for coll in SELECTION:
        needed += [f"{coll}_pt", f"{coll}_eta", f"{coll}_phi"]
    missing = [b for b in needed if b not in keys]
    if missing:
        raise EventFormatError(path, f"NanoAOD tree 'Events' lacks the branches {', '.join(missing)}")
    optional = [f"{c}_mass" for c in SELECTION] + [f"{c}_charge" for c in _CHARGED] + ["genWeight", "event"]
    branches = needed + [b for b in optional if b in keys]
    entry0 = 0
    for arrays in tree.iterate(branches, step_size=step_size, library="ak"):
        n = len(arrays)
        yield _map(arrays, n, entry0, process, btag_branch, btag_wp)
        entry0 += n


def _map(arrays: ak.Array, n: int, entry0: int, process: str, btag_branch: str, btag_wp: float) -> ak.Array:
    fields = arrays.fields
    pieces = []
    for coll, (pt_cut, eta_cut, kind) in SELECTION.items():
        pt, eta, phi = arrays[f"{coll}_pt"], arrays[f"{coll}_eta"], arrays[f"{coll}_phi"]
        mass = arrays[f"{coll}_mass"] if f"{coll}_mass" in fields else ak.zeros_like(pt)
        keep = (pt > pt_cut) & (abs(eta) < eta_cut)
        if coll == "Jet":
            kinds = ak.where(arrays[btag_branch] > btag_wp, int(Kind.BJET), int(Kind.JET))
        else:
            kinds = ak.values_astype(ak.zeros_like(pt), np.int8) + int(kind)
        charge = arrays[f"{coll}_charge"] if coll in _CHARGED and f"{coll}_charge" in fields else ak.zeros_like(pt)
        pieces.append(ak.to_packed(ak.zip({
            "kind": ak.values_astype(kinds, np.int8)[keep],
            "charge": ak.values_astype(charge, np.int8)[keep],
            "pt": ak.values_astype(pt[keep], np.float32),
            "eta": ak.values_astype(eta[keep], np.float32),
            "phi": ak.values_astype(phi[keep], np.float32),
            "E": ak.values_astype(energy_from_pt_eta(pt[keep], eta[keep], mass[keep]), np.float32),
        })))
    particles = ak.concatenate(pieces, axis=1)
    particles = ak.to_packed(particles[ak.argsort(particles.pt, axis=1, ascending=False, stable=True)])
    weight = ak.to_numpy(arrays.genWeight).astype(np.float64) if "genWeight" in fields else np.ones(n)
    event_id = (
        ak.to_numpy(arrays.event).astype(np.int64) if "event" in fields else np.arange(entry0, entry0 + n)
    )
    return make_events(
        event_id=event_id,
        process=process,
        weight=weight,
        met=ak.to_numpy(arrays.MET_pt),
        met_phi=ak.to_numpy(arrays.MET_phi),
        particles=particles,
    )
