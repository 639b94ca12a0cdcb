"""A parametric ATLAS-like detector response, vectorized over events with awkward and numpy.

Input: the generator-level ("truth") record of a batch of events, one awkward record per particle::

    N * var * {pid: int, status: int, px, py, pz, E: float64 [GeV], mother_pid: int}

``status > 0`` marks final-state particles (Pythia's convention); intermediate particles (B and C
hadrons, tau leptons) are used for flavour labels. ``mother_pid`` is the PDG id of the first mother
(the hadron for a lepton from a hadron decay, the lepton itself for a showered lepton).
:func:`truth_record` builds such an array from flat columns, for tests and hand-made inputs.

Output: events in the event model (:mod:`eventlm.events`), without ``event_id``, ``process`` and
``weight`` (the caller adds them), plus the Dark Machines preselection mask. Every number of the model
is a field of :class:`DetectorParams`; ``docs/generator.md`` describes it with references. The steps:

1. visible final-state particles: everything with ``status > 0`` except neutrinos, neutralinos and dark matter,
   inside the calorimeter (|eta| < 4.9);
2. prompt electrons, muons and photons (first mother not a hadron); electrons are dressed with the
   prompt photons within Delta R < 0.1 (their calorimeter cluster); isolation: the scalar pT sum of the other visible
   particles within Delta R < 0.3 below a fraction of the object's pT; then an (eta-dependent)
   identification efficiency;
3. jets: anti-kT R = 0.4 (FastJet) on the visible particles minus muons (they leave the calorimeter)
   and minus the identified electrons and photons (with their dressing photons);
4. resolutions: every object's pT is smeared at fixed direction; its energy follows from the smeared
   pT and its mass (the jet mass scales with the jet energy);
5. b-tagging: jets within |eta| < 2.5 are labelled b, c, tau or light by Delta R < 0.3 matching to B
   hadrons, C hadrons (pT > 5 GeV) and tau leptons (pT > 10 GeV), in that priority, and tagged with
   the label's efficiency;
6. MET: the truth MET (vector sum of the invisible particles, as in Dark Machines) plus a Gaussian
   resolution term on each transverse component that grows with the square root of the visible
   scalar sum ET;
7. object thresholds of the Dark Machines format, particles ordered by pT, and the Dark Machines
   event preselection (a jet pT > 60 GeV, or an electron/muon pT > 25 GeV, or a photon pT > 25 GeV).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import awkward as ak
import numpy as np

from eventlm.events import Kind, energy_from_pt_eta, jagged_records, make_particles

#: |PDG id| of particles that leave no trace: neutrinos, the lightest neutralino, the gravitino and
#: Pythia's dark-matter fermion Xd (PDG 52, of the ``ttbar_S200_inv`` signal).
INVISIBLE_PIDS = (12, 14, 16, 52, 1000022, 1000039)
ELECTRON_MASS = 0.000511
MUON_MASS = 0.10566


@dataclass(frozen=True)
class DetectorParams:
    """Every parameter of the detector model (GeV, radians). Defaults: see ``docs/generator.md``."""

    calo_eta_max: float = 4.9
    # --- jets
    jet_radius: float = 0.4
    jet_cluster_pt_min: float = 15.0  # before smearing, so jets can migrate across the 20 GeV cut
    jet_pt_min: float = 20.0
    jet_eta_max: float = 2.8
    jet_res_noise: float = 3.0  # N [GeV]:        sigma/pT = N/pT (+) S/sqrt(pT) (+) C
    jet_res_stochastic: float = 0.75  # S [sqrt(GeV)]
    jet_res_constant: float = 0.04  # C
    # --- b-tagging (MV2c10 77 % working point, flat in pT)
    btag_eta_max: float = 2.5
    btag_match_dr: float = 0.3
    btag_hadron_pt_min: float = 5.0
    btag_tau_pt_min: float = 10.0
    btag_eff_b: float = 0.77
    btag_eff_c: float = 1 / 4.9
    btag_eff_tau: float = 1 / 14.0
    btag_eff_light: float = 1 / 110.0
    # --- electrons, muons, photons
    lepton_candidate_pt_min: float = 10.0
    dressing_dr: float = 0.1
    isolation_dr: float = 0.3
    isolation_particle_pt_min: float = 0.5
    lepton_isolation_max: float = 0.15  # sum pT in the cone / pT
    photon_isolation_max: float = 0.10
    # identification efficiencies: (|eta| upper edges, efficiencies); zero beyond the last edge
    electron_eff: tuple = ((1.5, 2.5), (0.95, 0.85))
    muon_eff: tuple = ((1.5, 2.7), (0.95, 0.85))
    photon_eff: tuple = ((1.5, 2.5), (0.95, 0.85))
    # e/gamma energy: sigma/E = S/sqrt(E) (+) C
    egamma_res_stochastic: float = 0.10
    egamma_res_constant: float = 0.007
    # muon pT: sigma/pT = a (+) b * pT, barrel (|eta| < 1.05) and end-cap
    muon_res_barrel: tuple = (0.02, 1.0e-4)
    muon_res_endcap: tuple = (0.03, 2.0e-4)
    muon_barrel_eta: float = 1.05
    lepton_pt_min: float = 15.0
    lepton_eta_max: float = 2.7
    photon_pt_min: float = 20.0
    photon_eta_max: float = 2.37
    # --- missing transverse momentum: sigma(MET_x) = sigma(MET_y) = k * sqrt(sum ET_visible)
    met_res_sqrt_sumet: float = 0.5
    # --- Dark Machines event preselection
    presel_jet_pt: float = 60.0
    presel_lepton_pt: float = 25.0
    presel_photon_pt: float = 25.0
    def as_dict(self) -> dict:
        return asdict(self)


def truth_record(pid, status, px, py, pz, E, mother_pid, counts) -> ak.Array:
    """The detector input from flat per-particle columns and per-event counts."""
    columns = {"pid": (pid, np.int64), "status": (status, np.int64), "px": (px, np.float64),
               "py": (py, np.float64), "pz": (pz, np.float64), "E": (E, np.float64),
               "mother_pid": (mother_pid, np.int64)}
    return jagged_records(columns, counts)


# ----------------------------------------------------------------------------------------------------
# small vectorized helpers


def _pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-9))  # pT = 0 gives |eta| ~ 25: outside every acceptance
    phi = np.arctan2(py, px)
    return pt, eta, phi


def _with_kinematics(particles: ak.Array) -> ak.Array:
    pt, eta, phi = _pt_eta_phi(particles.px, particles.py, particles.pz)
    return ak.with_field(ak.with_field(ak.with_field(particles, pt, "pt"), eta, "eta"), phi, "phi")


def _delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def _pairs(a: ak.Array, b: ak.Array) -> ak.Array:
    """``events * len(a) * len(b)`` pairs with their Delta R as field ``dr``."""
    pairs = ak.cartesian({"a": a, "b": b}, axis=1, nested=True)
    dr = np.hypot(pairs.a.eta - pairs.b.eta, _delta_phi(pairs.a.phi, pairs.b.phi))
    return ak.with_field(pairs, dr, "dr")


def _binned_efficiency(abs_eta: np.ndarray, table) -> np.ndarray:
    """Efficiency in |eta| bins: ``table = (upper edges, efficiencies)``, zero beyond the last edge."""
    edges, effs = table
    return np.concatenate([np.asarray(effs, dtype=float), [0.0]])[np.searchsorted(edges, abs_eta, side="right")]


def _is_hadron_with(apid, quark: int):
    """|PDG id| of a hadron whose heaviest quark is ``quark`` (mesons: hundreds digit, baryons: thousands)."""
    code = apid % 10000
    hadron = (apid > 100) & (apid < 1_000_000) & ((code // 10) % 10 != 0)  # no diquarks, no SUSY
    return hadron & (((code // 100) % 10 == quark) & (code < 1000) | ((code // 1000) % 10 == quark))


def is_b_hadron(apid):
    return _is_hadron_with(apid, 5)


def is_c_hadron(apid):
    return _is_hadron_with(apid, 4) & ~_is_hadron_with(apid, 5)


def _is_prompt(mother_pid):
    """Not from a hadron decay: the first mother is a parton, lepton, boson or a SUSY particle."""
    amother = abs(mother_pid)
    return (amother < 100) | (amother > 1_000_000)


# ----------------------------------------------------------------------------------------------------
# the model


def reconstruct(truth: ak.Array, rng: np.random.Generator, params: DetectorParams = DetectorParams()):
    """Reconstructed events of a batch of truth records.

    Returns ``(events, preselected)``: ``events`` is a record array with fields ``met``, ``met_phi`` and
    ``particles`` (event-model particles ordered by pT), ``preselected`` a boolean numpy mask of the
    Dark Machines event preselection. All random numbers come from ``rng`` in a fixed order, so a batch
    and a seed give the same events.
    """
    import fastjet  # the generate extra; imported here so the module loads without it

    p = params
    # Per-particle quantities on flat numpy arrays (one pass, no per-operation awkward overhead);
    # the jagged structure is rebuilt only for the few particle lists used below.
    truth = ak.to_packed(truth)
    n_events = len(truth)
    counts = ak.to_numpy(ak.num(truth, axis=1))
    flat = {f: ak.to_numpy(ak.flatten(truth[f])) for f in ("pid", "status", "px", "py", "pz", "E", "mother_pid")}
    event_of = np.repeat(np.arange(n_events), counts)
    pt, eta, phi = _pt_eta_phi(flat["px"], flat["py"], flat["pz"])
    apid = np.abs(flat["pid"])
    final = flat["status"] > 0
    invisible = final & np.isin(apid, INVISIBLE_PIDS)
    visible_mask = final & ~invisible & (np.abs(eta) < p.calo_eta_max)

    # --- truth MET from the invisible particles, plus the resolution term
    met_x = np.bincount(event_of[invisible], weights=flat["px"][invisible], minlength=n_events)
    met_y = np.bincount(event_of[invisible], weights=flat["py"][invisible], minlength=n_events)
    sum_et = np.bincount(event_of[visible_mask], weights=pt[visible_mask], minlength=n_events)
    sigma_met = p.met_res_sqrt_sumet * np.sqrt(sum_et)
    met_x = met_x + sigma_met * rng.standard_normal(n_events)
    met_y = met_y + sigma_met * rng.standard_normal(n_events)

    def jagged(mask, **extra):
        columns = {f: flat[f][mask] for f in ("pid", "px", "py", "pz", "E", "mother_pid")}
        columns.update(pt=pt[mask], eta=eta[mask], phi=phi[mask], **{k: v[mask] for k, v in extra.items()})
        return ak.unflatten(ak.zip(columns), np.bincount(event_of[mask], minlength=n_events))

    # ``index``: a particle's position in the flat truth record, its identity below
    visible = jagged(visible_mask, index=np.arange(len(apid)))
    vis_apid = abs(visible.pid)
    heavy = (is_b_hadron(apid) | is_c_hadron(apid)) & (pt > p.btag_hadron_pt_min) | (apid == 15) & (
        pt > p.btag_tau_pt_min
    )
    flavour = jagged(heavy, label=np.where(is_b_hadron(apid), 5, np.where(is_c_hadron(apid), 4, 15)))

    # --- electron, muon and photon candidates
    prompt_flat = _is_prompt(flat["mother_pid"])
    prompt = _is_prompt(visible.mother_pid)
    prompt_photons = visible[prompt & (vis_apid == 22)]
    electrons = visible[prompt & (vis_apid == 11)]
    muons = visible[prompt & (vis_apid == 13)]

    # dressing: prompt photons within dressing_dr of a prompt electron join its cluster
    ep = _pairs(electrons, prompt_photons)
    dressing = ep.dr < p.dressing_dr
    for c in ("px", "py", "pz", "E"):
        electrons = ak.with_field(electrons, electrons[c] + ak.sum(ak.where(dressing, ep.b[c], 0.0), axis=2), c)
    electrons = _with_kinematics(electrons)
    photon_used = ak.any(_pairs(prompt_photons, electrons).dr < p.dressing_dr, axis=2)
    photons = prompt_photons[~photon_used]
    dressing_photons = prompt_photons[photon_used]

    candidates = ak.concatenate([electrons, muons, photons], axis=1)
    candidates = candidates[candidates.pt > p.lepton_candidate_pt_min]

    # from here on: flat numpy columns per object, with the event each belongs to
    cand = _flat(candidates, ("pid", "pt", "eta", "phi", "index"))
    cand_event = np.repeat(np.arange(n_events), ak.to_numpy(ak.num(candidates, axis=1)))
    cand_apid = np.abs(cand["pid"])

    # isolation: scalar pT sum of the other visible particles (pT > 0.5 GeV) in the cone; an electron's
    # own dressing photons are part of it and excluded. Pairs: each candidate with every particle of
    # its event (flat index arithmetic: the particles of an event are contiguous).
    cone_mask = visible_mask & (pt > p.isolation_particle_pt_min)
    cone_index = np.flatnonzero(cone_mask)
    per_event = np.bincount(event_of[cone_mask], minlength=n_events)
    starts = np.concatenate([[0], np.cumsum(per_event)[:-1]])
    n_pairs = per_event[cand_event]
    pair_cand = np.repeat(np.arange(len(cand_apid)), n_pairs)
    pair_pos = np.arange(int(n_pairs.sum())) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
    other = cone_index[starts[cand_event][pair_cand] + pair_pos]
    dr = np.hypot(eta[other] - cand["eta"][pair_cand], _delta_phi(phi[other], cand["phi"][pair_cand]))
    own = (other == cand["index"][pair_cand]) | (
        (cand_apid[pair_cand] == 11) & (apid[other] == 22) & (dr < p.dressing_dr) & prompt_flat[other]
    )
    in_cone = (dr < p.isolation_dr) & ~own
    iso_sum = np.bincount(pair_cand[in_cone], weights=pt[other][in_cone], minlength=len(cand_apid))
    iso_max = np.where(cand_apid == 22, p.photon_isolation_max, p.lepton_isolation_max)
    isolated = iso_sum < iso_max * cand["pt"]
    abs_eta = np.abs(cand["eta"])
    eff = np.select(
        [cand_apid == 11, cand_apid == 13],
        [_binned_efficiency(abs_eta, p.electron_eff), _binned_efficiency(abs_eta, p.muon_eff)],
        _binned_efficiency(abs_eta, p.photon_eff),
    )
    identified = isolated & (rng.random(len(cand_apid)) < eff)
    obj = {k: v[identified] for k, v in cand.items()}
    obj_event = cand_event[identified]
    obj_apid = cand_apid[identified]

    # --- jet inputs: visible minus muons, minus identified electrons/photons and their dressing photons
    dressing_flat = _flat(dressing_photons, ("eta", "phi", "index"))
    dressing_event = np.repeat(np.arange(n_events), ak.to_numpy(ak.num(dressing_photons, axis=1)))
    removed = [obj["index"][obj_apid != 13]]
    is_e = obj_apid == 11
    if is_e.any() and len(dressing_event):
        # a dressing photon goes with an identified electron of its event within dressing_dr
        same = dressing_event[:, None] == obj_event[is_e][None, :]
        dr = np.hypot(dressing_flat["eta"][:, None] - obj["eta"][is_e][None, :],
                      _delta_phi(dressing_flat["phi"][:, None], obj["phi"][is_e][None, :]))
        removed.append(dressing_flat["index"][np.any(same & (dr < p.dressing_dr), axis=1)])
    keep_mask = visible_mask & (apid != 13)
    keep_mask[np.concatenate(removed)] = False
    inputs = jagged(keep_mask)
    vectors = ak.zip({"px": inputs.px, "py": inputs.py, "pz": inputs.pz, "E": inputs.E}, with_name="Momentum4D")
    cluster = fastjet.ClusterSequence(vectors, fastjet.JetDefinition(fastjet.antikt_algorithm, p.jet_radius))
    raw_jets = cluster.inclusive_jets(min_pt=p.jet_cluster_pt_min)
    jet_event = np.repeat(np.arange(n_events), ak.to_numpy(ak.num(raw_jets, axis=1)))
    jet = {c: ak.to_numpy(ak.flatten(raw_jets[c])).astype(np.float64) for c in ("px", "py", "pz", "E")}
    jet_pt, jet_eta, jet_phi = _pt_eta_phi(jet["px"], jet["py"], jet["pz"])
    # fastjet's order is not pT order: fix it before any random number is drawn per jet
    order = np.lexsort((-jet_pt, jet_event))
    jet = {c: v[order] for c, v in jet.items()}
    jet_pt, jet_eta, jet_phi, jet_event = jet_pt[order], jet_eta[order], jet_phi[order], jet_event[order]
    jet_mass = np.sqrt(np.maximum(jet["E"] ** 2 - jet["px"] ** 2 - jet["py"] ** 2 - jet["pz"] ** 2, 0.0))

    # --- resolutions (pT smeared at fixed direction; the jet mass scales with its energy)
    jet_sigma = np.sqrt((p.jet_res_noise / jet_pt) ** 2 + p.jet_res_stochastic**2 / jet_pt + p.jet_res_constant**2)
    jet_scale = np.maximum(1.0 + jet_sigma * rng.standard_normal(len(jet_pt)), 0.0)
    jet_pt_reco = jet_pt * jet_scale
    jet_E = energy_from_pt_eta(jet_pt_reco, jet_eta, jet_mass * jet_scale)

    obj_E_truth = obj["pt"] * np.cosh(obj["eta"])
    egamma_sigma = np.sqrt(p.egamma_res_stochastic**2 / np.maximum(obj_E_truth, 1e-9) + p.egamma_res_constant**2)
    barrel = np.abs(obj["eta"]) < p.muon_barrel_eta
    mu_a = np.where(barrel, p.muon_res_barrel[0], p.muon_res_endcap[0])
    mu_b = np.where(barrel, p.muon_res_barrel[1], p.muon_res_endcap[1])
    muon_sigma = np.sqrt(mu_a**2 + (mu_b * obj["pt"]) ** 2)
    obj_sigma = np.where(obj_apid == 13, muon_sigma, egamma_sigma)
    obj_pt_reco = obj["pt"] * np.maximum(1.0 + obj_sigma * rng.standard_normal(len(obj_apid)), 0.0)
    obj_mass = np.select([obj_apid == 11, obj_apid == 13], [ELECTRON_MASS, MUON_MASS], 0.0)
    obj_E = energy_from_pt_eta(obj_pt_reco, obj["eta"], obj_mass)

    # --- b-tagging: Delta R matching of the (pT-ordered) jets to heavy-flavour hadrons and taus
    jets_jagged = ak.unflatten(ak.zip({"eta": jet_eta, "phi": jet_phi}), np.bincount(jet_event, minlength=n_events))
    jf = _pairs(jets_jagged, flavour)
    near = jf.dr < p.btag_match_dr
    has_b = ak.to_numpy(ak.flatten(ak.any(near & (jf.b.label == 5), axis=2)))
    has_c = ak.to_numpy(ak.flatten(ak.any(near & (jf.b.label == 4), axis=2)))
    has_tau = ak.to_numpy(ak.flatten(ak.any(near & (jf.b.label == 15), axis=2)))
    tag_eff = np.select([has_b, has_c, has_tau], [p.btag_eff_b, p.btag_eff_c, p.btag_eff_tau], p.btag_eff_light)
    tag_eff = np.where(np.abs(jet_eta) < p.btag_eta_max, tag_eff, 0.0)
    btagged = rng.random(len(jet_pt)) < tag_eff

    # --- thresholds (on the float32 values the event model stores), particles ordered by pT
    jet_pt_reco, jet_eta, jet_E = (_f32(x) for x in (jet_pt_reco, jet_eta, jet_E))
    obj_pt_reco, obj_E = _f32(obj_pt_reco), _f32(obj_E)
    obj["eta"] = _f32(obj["eta"])
    jet_ok = (jet_pt_reco > p.jet_pt_min) & (np.abs(jet_eta) < p.jet_eta_max)
    obj_ok = np.where(
        obj_apid == 22,
        (obj_pt_reco > p.photon_pt_min) & (np.abs(obj["eta"]) < p.photon_eta_max),
        (obj_pt_reco > p.lepton_pt_min) & (np.abs(obj["eta"]) < p.lepton_eta_max),
    )
    obj_kind = np.select([obj_apid == 11, obj_apid == 13], [int(Kind.ELECTRON), int(Kind.MUON)], int(Kind.PHOTON))
    obj_charge = np.where(obj_apid == 22, 0, -np.sign(obj["pid"]))  # PDG +11/+13 are e-/mu-: charge -1
    columns = {
        "event": np.concatenate([jet_event[jet_ok], obj_event[obj_ok]]),
        "kind": np.concatenate([np.where(btagged, int(Kind.BJET), int(Kind.JET))[jet_ok], obj_kind[obj_ok]]),
        "charge": np.concatenate([np.zeros(int(jet_ok.sum()), dtype=np.int64), obj_charge[obj_ok]]),
        "pt": np.concatenate([jet_pt_reco[jet_ok], obj_pt_reco[obj_ok]]),
        "eta": np.concatenate([jet_eta[jet_ok], obj["eta"][obj_ok]]),
        "phi": np.concatenate([jet_phi[jet_ok], obj["phi"][obj_ok]]),
        "E": np.concatenate([jet_E[jet_ok], obj_E[obj_ok]]),
    }
    order = np.lexsort((-columns["pt"], columns["event"]))
    columns = {k: v[order] for k, v in columns.items()}
    particles = make_particles(
        columns["kind"], columns["charge"], columns["pt"], columns["eta"], columns["phi"], columns["E"],
        counts=np.bincount(columns["event"], minlength=n_events),
    )
    events = ak.zip(
        {
            "met": np.hypot(met_x, met_y).astype(np.float32),
            "met_phi": np.arctan2(met_y, met_x).astype(np.float32),
            "particles": particles,
        },
        depth_limit=1,
    )
    return events, darkmachines_preselection(events, params)


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def _flat(array: ak.Array, fields) -> dict[str, np.ndarray]:
    return {f: ak.to_numpy(ak.flatten(array[f])) for f in fields}


# ----------------------------------------------------------------------------------------------------
# event selections on event-model arrays


def darkmachines_preselection(events: ak.Array, params: DetectorParams = DetectorParams()) -> np.ndarray:
    """A jet (b-jets included) with pT > 60 GeV, or an electron/muon with pT > 25, or a photon pT > 25."""
    part = events.particles
    kind = part.kind
    jet = ((kind == int(Kind.JET)) | (kind == int(Kind.BJET))) & (part.pt > params.presel_jet_pt)
    lep = ((kind == int(Kind.ELECTRON)) | (kind == int(Kind.MUON))) & (part.pt > params.presel_lepton_pt)
    pho = (kind == int(Kind.PHOTON)) & (part.pt > params.presel_photon_pt)
    return ak.to_numpy(ak.any(jet | lep | pho, axis=1))


#: The analysis preselection of the bundled samples.
ANALYSIS_HT_MIN = 300.0
ANALYSIS_MIN_JETS = 4
ANALYSIS_MIN_BJETS = 1


def analysis_preselection(events: ak.Array) -> np.ndarray:
    """The Dark Machines preselection and HT >= 300 GeV, >= 4 jets (b-jets count), >= 1 b-jet.

    HT is the scalar pT sum of the jets and b-jets.
    """
    part = events.particles
    is_jet = (part.kind == int(Kind.JET)) | (part.kind == int(Kind.BJET))
    ht = ak.sum(ak.where(is_jet, part.pt, 0.0), axis=1)
    n_jets = ak.sum(is_jet, axis=1)
    n_b = ak.sum(part.kind == int(Kind.BJET), axis=1)
    mask = (ht >= ANALYSIS_HT_MIN) & (n_jets >= ANALYSIS_MIN_JETS) & (n_b >= ANALYSIS_MIN_BJETS)
    return ak.to_numpy(mask) & darkmachines_preselection(events)


SELECTIONS = {"darkmachines": darkmachines_preselection, "analysis": analysis_preselection}
