"""Event-level variables (for regions and histograms) and fixed-length features (for the baselines).

Both take jagged per-particle arrays, so they serve the event model (``events.particles``) and a
NanoEvents chunk of an eventlm ntuple (``events.Particle``) alike. Jets include b-jets.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from eventlm.events import Kind

#: Event variables: name -> (axis label, default histogram binning (bins, lo, hi)).
VARIABLES: dict[str, tuple[str, tuple[int, float, float]]] = {
    "n_jets": ("Number of jets (incl. b-jets)", (21, -0.5, 20.5)),  # signals reach 20 jets
    "n_bjets": ("Number of b-jets", (8, -0.5, 7.5)),
    "n_leptons": ("Number of leptons (e, $\\mu$)", (6, -0.5, 5.5)),
    "n_electrons": ("Number of electrons", (5, -0.5, 4.5)),
    "n_muons": ("Number of muons", (5, -0.5, 4.5)),
    "n_photons": ("Number of photons", (5, -0.5, 4.5)),
    "n_particles": ("Number of objects", (21, -0.5, 20.5)),
    "ht": ("$H_T$ [GeV]", (40, 0.0, 4000.0)),
    "met": ("$E_T^{miss}$ [GeV]", (40, 0.0, 1000.0)),
    "met_phi": ("$\\phi(E_T^{miss})$", (32, -np.pi, np.pi)),
    "meff": ("$m_{eff}$ [GeV]", (40, 0.0, 5000.0)),
    "lead_jet_pt": ("Leading jet $p_T$ [GeV]", (40, 0.0, 1500.0)),
    "lead_lepton_pt": ("Leading lepton $p_T$ [GeV]", (40, 0.0, 800.0)),
}


def event_variables(kind, pt, met, met_phi) -> dict[str, np.ndarray]:
    """Per-event variables from jagged ``kind``/``pt`` and flat ``met``/``met_phi`` arrays.

    ``lead_*_pt`` is 0 for events without such an object; ``meff = HT + MET + sum lepton pT``.
    """
    kind = ak.values_astype(kind, np.int8)
    pt = ak.values_astype(pt, np.float64)
    is_jet = (kind == int(Kind.JET)) | (kind == int(Kind.BJET))
    is_lep = (kind == int(Kind.ELECTRON)) | (kind == int(Kind.MUON))
    jet_pt = pt[is_jet]
    lep_pt = pt[is_lep]
    met = np.asarray(ak.to_numpy(met), dtype=np.float64)
    ht = ak.to_numpy(ak.sum(jet_pt, axis=1)).astype(np.float64)
    values = {
        "n_jets": ak.to_numpy(ak.sum(is_jet, axis=1)),
        "n_bjets": ak.to_numpy(ak.sum(kind == int(Kind.BJET), axis=1)),
        "n_leptons": ak.to_numpy(ak.sum(is_lep, axis=1)),
        "n_electrons": ak.to_numpy(ak.sum(kind == int(Kind.ELECTRON), axis=1)),
        "n_muons": ak.to_numpy(ak.sum(kind == int(Kind.MUON), axis=1)),
        "n_photons": ak.to_numpy(ak.sum(kind == int(Kind.PHOTON), axis=1)),
        "n_particles": ak.to_numpy(ak.num(kind, axis=1)),
        "ht": ht,
        "met": met,
        "met_phi": np.asarray(ak.to_numpy(met_phi), dtype=np.float64),
        "meff": ht + met + ak.to_numpy(ak.sum(lep_pt, axis=1)),
        "lead_jet_pt": ak.to_numpy(ak.fill_none(ak.max(jet_pt, axis=1), 0.0)).astype(np.float64),
        "lead_lepton_pt": ak.to_numpy(ak.fill_none(ak.max(lep_pt, axis=1), 0.0)).astype(np.float64),
    }
    return {k: np.asarray(v).astype(np.float64 if k in ("ht", "met", "met_phi", "meff") else v.dtype)
            for k, v in values.items()}


def variables_of(events: ak.Array) -> dict[str, np.ndarray]:
    """:func:`event_variables` of an event-model array."""
    p = events.particles
    return event_variables(p.kind, p.pt, events.met, events.met_phi)


#: Number of object kinds in the one-hot encoding.
N_KINDS = len(Kind)
#: Features per object: kind one-hot, log pT, eta, sin phi, cos phi.
OBJECT_FEATURES = N_KINDS + 4


def fixed_features(events: ak.Array, n_objects: int = 10) -> np.ndarray:
    """Fixed-length event features for the baselines, shape ``(n_events, n_objects * 9 + 3)``.

    The first ``n_objects`` objects in descending pT, each as (kind one-hot, log pT, eta, sin phi,
    cos phi), zero-padded, then MET as (log MET, sin phi, cos phi). Not standardized: see
    :class:`Standardizer`, fitted on the training events only.
    """
    p = ak.to_packed(events.particles)  # pack before touching offsets (weaver-core padding bug)
    order = ak.argsort(p.pt, axis=1, ascending=False)
    p = p[order]
    p = ak.pad_none(p[:, :n_objects], n_objects, axis=1, clip=True)
    n = len(events)
    valid = ~ak.to_numpy(ak.is_none(p, axis=1))
    kind = ak.to_numpy(ak.fill_none(p.kind, 0)).astype(np.int64)
    pt = ak.to_numpy(ak.fill_none(p.pt, 1.0)).astype(np.float64)
    eta = ak.to_numpy(ak.fill_none(p.eta, 0.0)).astype(np.float64)
    phi = ak.to_numpy(ak.fill_none(p.phi, 0.0)).astype(np.float64)
    obj = np.zeros((n, n_objects, OBJECT_FEATURES), dtype=np.float64)
    onehot = np.eye(N_KINDS)[np.clip(kind, 0, N_KINDS - 1)]
    obj[..., :N_KINDS] = onehot
    obj[..., N_KINDS] = np.log(np.maximum(pt, 1e-3))
    obj[..., N_KINDS + 1] = eta
    obj[..., N_KINDS + 2] = np.sin(phi)
    obj[..., N_KINDS + 3] = np.cos(phi)
    obj[~valid] = 0.0
    met = np.asarray(ak.to_numpy(events.met), dtype=np.float64)
    met_phi = np.asarray(ak.to_numpy(events.met_phi), dtype=np.float64)
    met_feat = np.stack([np.log1p(np.maximum(met, 0.0)), np.sin(met_phi), np.cos(met_phi)], axis=1)
    return np.concatenate([obj.reshape(n, -1), met_feat], axis=1).astype(np.float32)


class Standardizer:
    """Per-column ``(x - mean) / std`` with statistics of the training events (std floored at 1e-6)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x = np.asarray(x, dtype=np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)
