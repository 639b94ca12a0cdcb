"""The look-up-table tokenizer of the paper: one token per particle from binned (id, pT, |eta|, phi).

Pure awkward/numpy (never imports torch). Every step is vectorized: the particles are flattened once,
binned with ``np.searchsorted`` and unflattened; there is no per-event Python loop.

Token of a particle, with categories counted from 1::

    token = (cat_id - 1) * n_pt * n_eta * n_phi + (cat_pt - 1) * n_eta * n_phi + (cat_eta - 1) * n_phi + cat_phi

- ``cat_id``: 1 jet, 2 b-jet, 3 e-, 4 e+, 5 mu-, 6 mu+, 7 photon (:data:`CATEGORIES`);
- ``cat_pt``, ``cat_eta``: quantile bins of pT and |eta| fitted on the background training particles
  (``n_pt`` / ``n_eta`` bins holding equal fractions of them);
- ``cat_phi``: ``n_phi`` equal bins over [-pi, pi].

With 5 bins each this is the paper's ``(cat_id-1)*125 + (cat_pt-1)*25 + (cat_eta-1)*5 + cat_phi``
(tokens 1..875). With ``met_tokens=True`` every event ends with two MET tokens: MET in ``n_met``
quantile bins (876..880 by default) and MET-phi in ``n_met_phi`` equal bins (881..885).

The particle categories, order and binning are :mod:`eventlm.tokenize.particles`' (shared with the
learned tokenizers).
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import TokenizationError
from eventlm.tokenize.base import Tokenizer, register
from eventlm.tokenize.particles import (
    BINNINGS,
    CATEGORIES,
    DEFAULT_MAX_PARTICLES,
    N_CATEGORIES,
    PHI_REFERENCES,
    PT_REACH,
    MetBinning,
    assemble,
    bin_representatives,
    build_decoded,
    check_ids,
    decode_met_tokens,
    digitize,
    fit_edges,
    leading_phi,
    met_arrays,
    order_particles,
    phi_bin,
    phi_centers,
    quantile_edges,
    rotate_phi,
    tokens_to_flat,
    warn_truncated,
)


#: Named configurations (the hand-made variants of the talks). ``LUTTokenizer(preset=..., **overrides)``.
LUT_PRESETS: dict[str, dict] = {
    # the default: the bulk in quantile bins, then log-spaced bins up to the kinematic reach and an
    # overflow bin, for pT and MET; phi measured from the leading object (docs/tokenizers.md)
    "tail": dict(n_pt=16, n_eta=5, n_phi=5, n_met=16, n_met_phi=5, met_tokens=True, binning="tail",
                 phi_reference="leading"),
    "paper": dict(n_pt=5, n_eta=5, n_phi=5, n_met=5, n_met_phi=5, met_tokens=True),
    "no_met": dict(n_pt=5, n_eta=5, n_phi=5, n_met=5, n_met_phi=5, met_tokens=False),
    "coarse": dict(n_pt=3, n_eta=3, n_phi=4, n_met=3, n_met_phi=4, met_tokens=True),
    "fine": dict(n_pt=10, n_eta=8, n_phi=8, n_met=10, n_met_phi=8, met_tokens=True),
    "fine_pt": dict(n_pt=10, n_eta=5, n_phi=5, n_met=10, n_met_phi=5, met_tokens=True),
    "no_phi": dict(n_pt=5, n_eta=5, n_phi=1, n_met=5, n_met_phi=1, met_tokens=True),
}

DEFAULT_PRESET = "tail"


@register
class LUTTokenizer(Tokenizer):
    """Look-up table: binned (id, pT, |eta|, phi) per particle, plus optional MET / MET-phi tokens.

    ``LUTTokenizer(preset="paper", **overrides)``; see :data:`LUT_PRESETS` and the module docstring.
    """

    kind = "lut"

    def __init__(
        self,
        preset: str | None = DEFAULT_PRESET,
        *,
        n_pt: int | None = None,
        n_eta: int | None = None,
        n_phi: int | None = None,
        n_met: int | None = None,
        n_met_phi: int | None = None,
        met_tokens: bool | None = None,
        binning: str | None = None,
        phi_reference: str | None = None,
        max_particles: int | None = DEFAULT_MAX_PARTICLES,
    ):
        if preset is not None and preset not in LUT_PRESETS:
            raise ValueError(f"unknown LUT preset {preset!r}; choose from {sorted(LUT_PRESETS)}")
        base = dict(binning="quantile", phi_reference="absolute")
        base.update(LUT_PRESETS[preset or DEFAULT_PRESET])
        given = dict(n_pt=n_pt, n_eta=n_eta, n_phi=n_phi, n_met=n_met, n_met_phi=n_met_phi,
                     met_tokens=met_tokens, binning=binning, phi_reference=phi_reference)
        base.update({k: v for k, v in given.items() if v is not None})
        if base["binning"] not in BINNINGS:
            raise ValueError(f"unknown binning {base['binning']!r}; choose from {BINNINGS}")
        if base["phi_reference"] not in PHI_REFERENCES:
            raise ValueError(f"unknown phi_reference {base['phi_reference']!r}; choose from {PHI_REFERENCES}")
        self.preset = preset
        self.binning = str(base["binning"])
        self.phi_reference = str(base["phi_reference"])
        self.n_pt = int(base["n_pt"])
        self.n_eta = int(base["n_eta"])
        self.n_phi = int(base["n_phi"])
        self.met_tokens = bool(base["met_tokens"])
        for name in ("n_pt", "n_eta", "n_phi"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if max_particles is not None and max_particles < 1:
            raise ValueError("max_particles must be >= 1 or None")
        self.max_particles = max_particles
        self.met = MetBinning(base["n_met"], base["n_met_phi"], binning=self.binning)
        self.n_met_tokens = 2 if self.met_tokens else 0
        self.pt_edges: np.ndarray | None = None
        self.eta_edges: np.ndarray | None = None
        self.pt_centers: np.ndarray | None = None
        self.eta_centers: np.ndarray | None = None

    # ---- layout ----------------------------------------------------------------------------------
    @property
    def n_met(self) -> int:
        return self.met.n_met

    @property
    def n_met_phi(self) -> int:
        return self.met.n_met_phi

    @property
    def n_particle_tokens(self) -> int:
        return N_CATEGORIES * self.n_pt * self.n_eta * self.n_phi

    @property
    def n_content(self) -> int:
        return self.n_particle_tokens + (self.met.n_tokens if self.met_tokens else 0)

    @property
    def is_fitted(self) -> bool:
        return self.pt_edges is not None and self.eta_edges is not None and (
            not self.met_tokens or self.met.edges is not None
        )

    def token_id(self, cat_id, cat_pt, cat_eta, cat_phi):
        """The formula (all categories 1-based; works on scalars and numpy arrays)."""
        return (
            (np.asarray(cat_id) - 1) * self.n_pt * self.n_eta * self.n_phi
            + (np.asarray(cat_pt) - 1) * self.n_eta * self.n_phi
            + (np.asarray(cat_eta) - 1) * self.n_phi
            + np.asarray(cat_phi)
        )

    def split_id(self, token):
        """Inverse of :meth:`token_id` for particle tokens: (cat_id, cat_pt, cat_eta, cat_phi), 1-based."""
        t = np.asarray(token, dtype=np.int64) - 1
        cat_phi = t % self.n_phi + 1
        t //= self.n_phi
        cat_eta = t % self.n_eta + 1
        t //= self.n_eta
        cat_pt = t % self.n_pt + 1
        cat_id = t // self.n_pt + 1
        return cat_id, cat_pt, cat_eta, cat_phi

    def token_label(self, token: int) -> str:
        """Human-readable meaning of a content id, e.g. ``'jet pT2 |eta|1 phi4'`` or ``'MET3'``."""
        token = int(token)
        if 1 <= token <= self.n_particle_tokens:
            c, p, e, f = (int(x) for x in self.split_id(token))
            return f"{CATEGORIES[c][2]} pT{p} |eta|{e} phi{f}"
        first_met = self.n_particle_tokens + 1
        if self.met_tokens and first_met <= token < first_met + self.n_met:
            return f"MET{token - first_met + 1}"
        if self.met_tokens and first_met + self.n_met <= token <= self.n_content:
            return f"METphi{token - first_met - self.n_met + 1}"
        names = {0: "PAD", self.special.mask: "MASK", self.special.bos: "BOS", self.special.eos: "EOS"}
        return names.get(token, f"?{token}")

    # ---- fit / encode / decode -------------------------------------------------------------------
    def fit(self, events: ak.Array, **kwargs) -> LUTTokenizer:
        """Fit the pT and |eta| (and MET) quantile edges on background ``events``. Returns self."""
        if kwargs:
            raise TypeError(f"LUTTokenizer.fit takes no options, got {sorted(kwargs)}")
        flat = order_particles(events, max_particles=None)
        if len(flat.pt) == 0:
            raise TokenizationError("cannot fit the look-up table on events without particles")
        abseta = np.abs(flat.eta)
        self.pt_edges = fit_edges(flat.pt, self.n_pt, self.binning, PT_REACH)
        self.eta_edges = quantile_edges(abseta, self.n_eta)
        self.pt_centers = bin_representatives(flat.pt, digitize(flat.pt, self.pt_edges), self.n_pt, self.pt_edges)
        self.eta_centers = bin_representatives(abseta, digitize(abseta, self.eta_edges), self.n_eta, self.eta_edges)
        if self.met_tokens:
            met, _ = met_arrays(events)
            self.met.fit(met)
        return self

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise TokenizationError("the look-up table is not fitted: call fit(background_events) first")

    def encode(self, events: ak.Array) -> ak.Array:
        """Jagged int64 ids (``var * int64``): particles in token order, then MET and MET-phi tokens."""
        self._require_fitted()
        flat = order_particles(events, self.max_particles)
        warn_truncated(flat.n_truncated_events, len(flat.counts), self.max_particles)
        raw = flat.raw  # bin in input order, then gather only the tokens into token order
        phi, reference = raw["phi"], None
        if self.phi_reference == "leading":
            counts = ak.to_numpy(ak.num(events.particles, axis=1)).astype(np.int64)
            reference = self._leading_reference(events, raw, counts)
            phi = rotate_phi(raw["phi"], np.repeat(reference, counts))
        tokens = self.token_id(
            raw["cat"],
            digitize(raw["pt"], self.pt_edges),
            digitize(np.abs(raw["eta"]), self.eta_edges),
            phi_bin(phi, self.n_phi),
        )[flat.order]
        met_tokens = None
        if self.met_tokens:
            met, met_phi = met_arrays(events)
            if reference is not None:
                met_phi = rotate_phi(met_phi, reference)
            met_tokens = self.met.encode(met, met_phi, self.n_particle_tokens + 1)
        return assemble(tokens, flat.counts, met_tokens, flat.event_index)

    def _leading_reference(self, events, raw, counts) -> np.ndarray:
        reference = leading_phi(raw["phi"], raw["pt"], counts)
        if self.met_tokens and not counts.all():  # an event without particles: measured from its MET
            reference[counts == 0] = met_arrays(events[counts == 0])[1]
        return reference

    def phi_references(self, events: ak.Array) -> np.ndarray:
        """The angle each event's phi tokens are measured from: 0 (``absolute``) or its leading object's phi."""
        if self.phi_reference == "absolute":
            return np.zeros(len(events))
        flat = order_particles(events, max_particles=None)
        return self._leading_reference(events, flat.raw, ak.to_numpy(ak.num(events.particles, axis=1)))

    def particle_order(self, events: ak.Array) -> ak.Array:
        """For each event, the input index of the particle behind each particle token (after truncation)."""
        flat = order_particles(events, self.max_particles)
        return ak.unflatten(flat.source, flat.counts)

    def decode(self, tokens, *, specials: str = "raise") -> ak.Array:
        """Bin representatives of each token: ``{met, met_phi, particles}`` per event.

        pT and |eta| decode to the median of the training particles in their bin, phi to the bin
        centre (measured from the leading object when ``phi_reference='leading'``); eta comes back positive (the table keeps |eta| only) and E is massless
        (pT cosh eta). MET tokens decode to ``met``/``met_phi`` (NaN when the event has none). Ids
        outside 1..n_content raise :class:`TokenizationError` unless ``specials='drop'``.
        """
        self._require_fitted()
        flat, counts = tokens_to_flat(tokens)
        content = check_ids(flat, self.n_content, specials)
        event_of = np.repeat(np.arange(len(counts)), counts)
        is_particle = content & (flat <= self.n_particle_tokens)
        p = flat[is_particle]
        cat, cpt, ceta, cphi = self.split_id(p)
        pcounts = np.bincount(event_of[is_particle], minlength=len(counts))
        met = met_phi = None
        if self.met_tokens:
            met, met_phi = decode_met_tokens(
                flat, content, event_of, len(counts), self.n_particle_tokens + 1, self.met.centers, self.n_met_phi
            )
        return build_decoded(
            cat=cat, pt=self.pt_centers[cpt - 1], eta=self.eta_centers[ceta - 1],
            phi=phi_centers(self.n_phi)[cphi - 1], counts=pcounts, met=met, met_phi=met_phi,
        )

    # ---- persistence -----------------------------------------------------------------------------
    def get_params(self) -> dict:
        def lst(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "preset": self.preset,
            "n_pt": self.n_pt,
            "n_eta": self.n_eta,
            "n_phi": self.n_phi,
            "n_met": self.n_met,
            "n_met_phi": self.n_met_phi,
            "met_tokens": self.met_tokens,
            "binning": self.binning,
            "phi_reference": self.phi_reference,
            "max_particles": self.max_particles,
            "n_content": self.n_content,
            "pt_edges": lst(self.pt_edges),
            "eta_edges": lst(self.eta_edges),
            "pt_centers": lst(self.pt_centers),
            "eta_centers": lst(self.eta_centers),
            **self.met.params(),
        }

    @classmethod
    def from_params(cls, params: dict, directory: Path | None = None) -> LUTTokenizer:
        tok = cls(
            params.get("preset"),
            n_pt=params["n_pt"], n_eta=params["n_eta"], n_phi=params["n_phi"],
            n_met=params["n_met"], n_met_phi=params["n_met_phi"], met_tokens=params["met_tokens"],
            binning=params.get("binning", "quantile"), phi_reference=params.get("phi_reference", "absolute"),
            max_particles=params.get("max_particles", DEFAULT_MAX_PARTICLES),
        )

        def arr(name):
            v = params.get(name)
            if v is None:
                return None
            values = np.asarray(v, dtype=np.float64)
            if values.ndim != 1 or not np.isfinite(values).all():
                raise ValueError(f"{name} must be a list of finite numbers")
            if name.endswith("_edges") and np.any(np.diff(values) < 0):
                at = int(np.flatnonzero(np.diff(values) < 0)[0])
                raise ValueError(f"{name} must increase: {values[at]:g} is followed by {values[at + 1]:g}")
            return values

        tok.pt_edges, tok.eta_edges = arr("pt_edges"), arr("eta_edges")
        tok.pt_centers, tok.eta_centers = arr("pt_centers"), arr("eta_centers")
        tok.met.edges, tok.met.centers = arr("met_edges"), arr("met_centers")
        if "n_content" in params and params["n_content"] != tok.n_content:
            from eventlm.errors import CheckpointMismatchError

            raise CheckpointMismatchError(
                f"look-up table parameters give {tok.n_content} content ids, the file says {params['n_content']}"
            )
        return tok

    def __repr__(self) -> str:
        return (
            f"LUTTokenizer(n_pt={self.n_pt}, n_eta={self.n_eta}, n_phi={self.n_phi}, n_met={self.n_met}, "
            f"n_met_phi={self.n_met_phi}, met_tokens={self.met_tokens}, binning={self.binning!r}, "
            f"phi_reference={self.phi_reference!r}, max_particles={self.max_particles}, "
            f"vocab_size={self.vocab_size}, fitted={self.is_fitted})"
        )
