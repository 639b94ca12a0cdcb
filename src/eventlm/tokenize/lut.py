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

Particle order inside an event (:func:`order_particles`): by ``cat_id`` ascending (jets, b-jets, e-,
e+, mu-, mu+, photons), then pT descending; ties keep their input order. At most ``max_particles``
particles are kept per event: the hardest ones (highest pT, whatever their kind), so a truncated event
loses its softest objects. The MET tokens are never truncated.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import awkward as ak
import numpy as np

from eventlm.errors import TokenizationError
from eventlm.events import PARTICLE_RECORD, Kind, energy_from_pt_eta
from eventlm.tokenize.base import Tokenizer, register

log = logging.getLogger(__name__)

#: cat_id (1-based) -> (kind, charge) and a short label.
CATEGORIES: dict[int, tuple[Kind, int, str]] = {
    1: (Kind.JET, 0, "jet"),
    2: (Kind.BJET, 0, "b-jet"),
    3: (Kind.ELECTRON, -1, "e-"),
    4: (Kind.ELECTRON, +1, "e+"),
    5: (Kind.MUON, -1, "mu-"),
    6: (Kind.MUON, +1, "mu+"),
    7: (Kind.PHOTON, 0, "photon"),
}
N_CATEGORIES = len(CATEGORIES)

#: (kind, charge + 1) -> cat_id; 0 marks a combination no category accepts.
_CAT_TABLE = np.zeros((len(Kind), 3), dtype=np.int64)
for _cat, (_kind, _charge, _) in CATEGORIES.items():
    _CAT_TABLE[int(_kind), _charge + 1] = _cat
#: cat_id -> kind / charge (index 0 unused).
_CAT_KIND = np.array([0] + [int(k) for k, _, _ in CATEGORIES.values()], dtype=np.int8)
_CAT_CHARGE = np.array([0] + [q for _, q, _ in CATEGORIES.values()], dtype=np.int8)

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
DEFAULT_MAX_PARTICLES = 18
TWO_PI = 2.0 * np.pi

#: How the pT and MET bins are laid out: ``quantile`` (equally populated, the paper's) or ``tail``.
BINNINGS = ("quantile", "tail")
#: The background quantile where the ``tail`` binning stops being quantile bins and turns logarithmic.
TAIL_QUANTILE = 0.9
#: Bulk bins (below the tail quantile) of the ``tail`` binning; the rest of ``n_pt`` / ``n_met`` bins
#: are log-spaced up to the reach, the last one an overflow bin.
TAIL_BULK_BINS = 3
#: Kinematic reach [GeV] of the tail bins (13 TeV collisions): above it sits the overflow bin.
PT_REACH = 3000.0
MET_REACH = 2000.0
#: Where phi is measured from: ``absolute`` (the detector's phi) or ``leading`` (the event rotated so
#: its highest-pT object sits at phi = 0; MET-phi rotates with it). The physics is invariant under a
#: rotation about the beam, so ``leading`` frees the tokens from a symmetry and keeps the angles
#: between objects (e.g. between MET and the leading jet) that do carry physics.
PHI_REFERENCES = ("absolute", "leading")


# --------------------------------------------------------------------------------------------------
# Shared, vectorized helpers (also used by the learned tokenizers)
# --------------------------------------------------------------------------------------------------


class FlatParticles:
    """The particles of a batch of events, flattened in token order and truncated.

    ``cat``, ``pt``, ``eta``, ``phi``: one entry per kept particle (numpy), grouped by event in event
    order; ``counts``: kept particles per event; ``event_index``: the event of each kept particle;
    ``source``: the particle's index inside its event in the input (so tokens map back to particles);
    ``n_truncated_events``: events that had more than ``max_particles``.

    The input-order arrays are in ``raw`` and ``order`` maps token order to them; the token-order
    arrays are gathered on first use (the look-up table bins ``raw`` and gathers only the tokens).
    """

    def __init__(self, raw: dict, order: np.ndarray, counts: np.ndarray, event_index: np.ndarray,
                 n_truncated_events: int):
        self.raw, self.order = raw, order
        self.counts, self.event_index = counts, event_index
        self.n_truncated_events = n_truncated_events

    @cached_property
    def cat(self) -> np.ndarray:
        return self.raw["cat"][self.order]

    @cached_property
    def pt(self) -> np.ndarray:
        return self.raw["pt"][self.order]

    @cached_property
    def eta(self) -> np.ndarray:
        return self.raw["eta"][self.order]

    @cached_property
    def phi(self) -> np.ndarray:
        return self.raw["phi"][self.order]

    @cached_property
    def source(self) -> np.ndarray:
        return self.raw["local"][self.order]

    @property
    def offsets(self) -> np.ndarray:
        out = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(self.counts, out=out[1:])
        return out


def _event_ids(events) -> np.ndarray:
    if "event_id" in ak.fields(events):
        return ak.to_numpy(events.event_id)
    return np.arange(len(events))


def _describe(events, event_index: np.ndarray, position: np.ndarray | None = None, limit: int = 10) -> str:
    ids = _event_ids(events)
    parts = []
    for k, i in enumerate(event_index[:limit]):
        where = f"event_id {ids[i]}"
        if position is not None:
            where += f" (particle {position[k]})"
        parts.append(where)
    more = len(event_index) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def order_particles(events: ak.Array, max_particles: int | None = DEFAULT_MAX_PARTICLES) -> FlatParticles:
    """Flatten ``events.particles`` in token order (cat_id, then pT descending) and truncate.

    Raises :class:`TokenizationError` for non-finite or negative kinematics and for (kind, charge)
    combinations outside :data:`CATEGORIES`, naming the events and particle positions.
    """
    particles = ak.to_packed(events.particles[["kind", "charge", "pt", "eta", "phi"]])
    counts = ak.to_numpy(ak.num(particles, axis=1)).astype(np.int64)
    n_events = len(counts)
    kind = ak.to_numpy(ak.flatten(particles.kind)).astype(np.int64)
    charge = ak.to_numpy(ak.flatten(particles.charge)).astype(np.int64)
    pt = ak.to_numpy(ak.flatten(particles.pt))
    eta = ak.to_numpy(ak.flatten(particles.eta))
    phi = ak.to_numpy(ak.flatten(particles.phi))
    event_index = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    starts = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    local = np.arange(len(pt), dtype=np.int64) - starts[event_index]

    finite = np.isfinite(pt) & np.isfinite(eta) & np.isfinite(phi) & (pt >= 0)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise TokenizationError(
            f"{len(bad)} particle(s) with non-finite or negative pt/eta/phi: "
            + _describe(events, event_index[bad], local[bad])
        )
    valid_kind = (kind >= 0) & (kind < len(Kind)) & (charge >= -1) & (charge <= 1)
    flat_table = _CAT_TABLE.ravel()
    if valid_kind.all():
        cat = flat_table[kind * 3 + charge + 1]
    else:
        cat = np.zeros(len(kind), dtype=np.int64)
        cat[valid_kind] = flat_table[kind[valid_kind] * 3 + charge[valid_kind] + 1]
    if not (cat > 0).all():
        bad = np.flatnonzero(cat == 0)
        pairs = sorted({(int(kind[b]), int(charge[b])) for b in bad[:100]})
        raise TokenizationError(
            f"{len(bad)} particle(s) with unknown (kind, charge) {pairs}: "
            + _describe(events, event_index[bad], local[bad])
        )

    # One int64 sort key: event (bits 35+), cat_id (bits 32-34), then pT descending. For pt >= 0 the
    # float32 bit pattern is monotonic, so its complement sorts pT descending. Input is already grouped
    # by event, so the stable sort only reorders inside events and keeps ties in input order.
    pt_bits = pt.astype(np.float32).view(np.uint32).astype(np.int64)
    key = (event_index << 35) | (cat << 32) | (0xFFFFFFFF - pt_bits)
    order = np.argsort(key, kind="stable")

    # The sort only moves particles inside their event, so slot j of the sorted array still belongs to
    # event_index[j] and is the local[j]-th particle of that event in token order.
    n_truncated = 0
    kept_counts = counts
    if max_particles is not None:
        n_truncated = int((counts > max_particles).sum())
        if n_truncated:
            # Keep the max_particles hardest objects of the event (whatever their kind), in token order.
            # As above, slot j of the pT-sorted array is the local[j]-th hardest particle of its event.
            by_pt = np.argsort((event_index << 32) | (0xFFFFFFFF - pt_bits), kind="stable")
            pt_rank = np.empty_like(local)
            pt_rank[by_pt] = local
            order = order[pt_rank[order] < max_particles]
            event_index = event_index[order]
            kept_counts = np.minimum(counts, max_particles)
    raw = {"cat": cat, "pt": pt, "eta": eta, "phi": phi, "local": local}
    return FlatParticles(raw, order, kept_counts, event_index, n_truncated)


def quantile_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """The ``n_bins - 1`` inner edges that split ``values`` into equally populated bins."""
    if n_bins < 1:
        raise ValueError(f"need at least one bin, got {n_bins}")
    if len(values) == 0:
        raise TokenizationError("cannot fit quantile bins on zero values")
    return np.quantile(np.asarray(values, dtype=np.float64), np.arange(1, n_bins) / n_bins)


def tail_edges(values: np.ndarray, n_bins: int, reach: float, *, bulk_bins: int = TAIL_BULK_BINS,
               tail_quantile: float = TAIL_QUANTILE) -> np.ndarray:
    """The ``n_bins - 1`` inner edges of the ``tail`` binning.

    ``bulk_bins`` equally populated bins up to the background's ``tail_quantile``, then log-spaced bins
    from there to ``reach``, and one overflow bin above ``reach``. Quantile bins put every particle
    above the top quantile into one bin (a 1 TeV jet and a 200 GeV jet alike); these keep the tail
    resolved up to the kinematic reach while the bulk stays coarse.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        raise TokenizationError("cannot fit tail bins on zero values")
    n_tail = n_bins - bulk_bins - 1  # log-spaced bins between the tail quantile and the reach
    if n_tail < 1:
        return quantile_edges(values, n_bins)
    start = float(np.quantile(values, tail_quantile))
    bulk = np.quantile(values, tail_quantile * np.arange(1, bulk_bins + 1) / bulk_bins)  # ends at start
    reach = max(float(reach), 2.0 * start)
    tail = np.geomspace(start, reach, n_tail + 1)[1:]  # the last edge is the reach: overflow above
    return np.concatenate([bulk, tail])


def fit_edges(values: np.ndarray, n_bins: int, binning: str, reach: float) -> np.ndarray:
    """Inner edges of ``n_bins`` bins of ``values`` laid out as ``binning`` (see :data:`BINNINGS`)."""
    if binning == "tail":
        return tail_edges(values, n_bins, reach)
    return quantile_edges(values, n_bins)


def leading_phi(flat_phi: np.ndarray, flat_pt: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """phi of the highest-pT particle of each event (0 for an event without particles)."""
    n_events = len(counts)
    out = np.zeros(n_events)
    if len(flat_pt) == 0:
        return out
    starts = np.zeros(n_events + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    event_of = np.repeat(np.arange(n_events), counts)
    # the first position of each event's maximum pT: sort by (event, -pT) stably
    order = np.lexsort((-np.asarray(flat_pt, dtype=np.float64), event_of))
    has = counts > 0
    out[has] = np.asarray(flat_phi, dtype=np.float64)[order[starts[:-1][has]]]
    return out


def rotate_phi(phi: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``phi - reference`` wrapped into [-pi, pi)."""
    return np.mod(np.asarray(phi, dtype=np.float64) - reference + np.pi, TWO_PI) - np.pi


def digitize(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """1-based bin of each value given the inner ``edges`` (a value on an edge goes to the upper bin).

    Same result as ``np.searchsorted(edges, values, side="right") + 1`` with float64 edges. For the
    few edges of a look-up table one comparison pass per edge is ~3x faster than a binary search; on
    float32 values each edge is rounded *up* to float32, which keeps ``x >= edge`` exact.
    """
    values = np.asarray(values)
    edges = np.asarray(edges, dtype=np.float64)
    if len(edges) > 16 or values.dtype not in (np.float32, np.float64):
        return np.searchsorted(edges, values, side="right").astype(np.int64) + 1
    out = np.ones(values.shape, dtype=np.int64)
    for edge in edges:
        if values.dtype == np.float32:
            e32 = np.float32(edge)
            if float(e32) < edge:
                e32 = np.nextafter(e32, np.float32(np.inf))
            edge = e32
        out += values >= edge
    return out


def phi_bin(phi: np.ndarray, n_bins: int) -> np.ndarray:
    """1-based bin of phi in ``n_bins`` equal bins over [-pi, pi] (+pi -> last bin).

    Values beyond [-pi, pi] by more than float32 rounding (float32(pi) > pi) are wrapped first.
    """
    phi = np.asarray(phi, dtype=np.float64)
    outside = np.abs(phi) > np.pi + 1e-6
    if outside.any():
        phi = phi.copy()
        phi[outside] = np.mod(phi[outside] + np.pi, TWO_PI) - np.pi
    b = np.floor((phi + np.pi) * (n_bins / TWO_PI)).astype(np.int64)
    return np.clip(b, 0, n_bins - 1) + 1


def phi_centers(n_bins: int) -> np.ndarray:
    width = TWO_PI / n_bins
    return -np.pi + width * (np.arange(n_bins) + 0.5)



def decode_met_tokens(flat, content, event_of, n_events: int, first: int, met_centers, n_met_phi: int):
    """(met, met_phi) per event from its MET tokens: ids ``first .. first+n_met-1`` are MET bins, the
    next ``n_met_phi`` are MET-phi bins. Events without such a token get NaN."""
    n_met = len(met_centers)
    met = np.full(n_events, np.nan)
    met_phi = np.full(n_events, np.nan)
    is_met = content & (flat >= first) & (flat < first + n_met)
    is_mphi = content & (flat >= first + n_met)
    met[event_of[is_met]] = met_centers[flat[is_met] - first]
    met_phi[event_of[is_mphi]] = phi_centers(n_met_phi)[flat[is_mphi] - first - n_met]
    return met, met_phi

def bin_representatives(values: np.ndarray, bins: np.ndarray, n_bins: int, edges: np.ndarray) -> np.ndarray:
    """Median of the training ``values`` in each bin (midpoint of the edges for an empty bin)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(bins, kind="stable")
    sorted_bins, sorted_values = bins[order], values[order]
    bounds = np.searchsorted(sorted_bins, np.arange(1, n_bins + 2))
    out = np.empty(n_bins)
    # bounds of the outer bins: an empty tail or overflow bin (a tail bin beyond the training values)
    # gets a representative inside itself, never below its lower edge
    low = min(values.min(), edges[0]) if len(values) and len(edges) else (values.min() if len(values) else 0.0)
    high = values.max() if len(values) else 1.0
    if len(edges):
        high = max(high, edges[-1] * 1.25 if edges[-1] > 0 else edges[-1] + 1.0)
    lo_hi = np.concatenate([[low], edges, [high]])
    for b in range(n_bins):  # n_bins iterations, not per event
        chunk = sorted_values[bounds[b]:bounds[b + 1]]
        out[b] = np.median(chunk) if len(chunk) else 0.5 * (lo_hi[b] + lo_hi[b + 1])
    return out


def met_arrays(events: ak.Array) -> tuple[np.ndarray, np.ndarray]:
    met = ak.to_numpy(events.met).astype(np.float64)
    met_phi = ak.to_numpy(events.met_phi).astype(np.float64)
    bad = ~(np.isfinite(met) & np.isfinite(met_phi) & (met >= 0))
    if bad.any():
        idx = np.flatnonzero(bad)
        raise TokenizationError(f"{len(idx)} event(s) with non-finite or negative met/met_phi: "
                                + _describe(events, idx))
    return met, met_phi


def assemble(particle_tokens: np.ndarray, counts: np.ndarray, met_tokens: np.ndarray | None,
             event_index: np.ndarray | None = None) -> ak.Array:
    """Jagged ``var * int64`` tokens: each event's particle tokens followed by its MET tokens.

    ``met_tokens`` has shape (n_events, n_met_tokens) or is None; ``event_index`` (the event of each
    particle token) is recomputed from ``counts`` when not given.
    """
    particle_tokens = np.asarray(particle_tokens, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    if met_tokens is None or met_tokens.shape[1] == 0:
        return ak.unflatten(particle_tokens, counts)
    n_events, n_met = met_tokens.shape
    if event_index is None:
        event_index = np.repeat(np.arange(n_events, dtype=np.int64), counts)
    # every earlier event shifts a particle token by its n_met MET tokens
    flat = np.empty(len(particle_tokens) + n_events * n_met, dtype=np.int64)
    flat[np.arange(len(particle_tokens), dtype=np.int64) + n_met * event_index] = particle_tokens
    met_start = np.cumsum(counts) + n_met * np.arange(n_events, dtype=np.int64)  # after the particles
    for j in range(n_met):
        flat[met_start + j] = met_tokens[:, j]
    return ak.unflatten(flat, counts + n_met)


def tokens_to_flat(tokens) -> tuple[np.ndarray, np.ndarray]:
    """(flat int64 ids, counts) of a jagged token array (or a list of lists)."""
    tokens = ak.to_packed(ak.Array(tokens))
    counts = ak.to_numpy(ak.num(tokens, axis=1)).astype(np.int64)
    flat = ak.to_numpy(ak.flatten(tokens, axis=1)).astype(np.int64)
    return flat, counts


def build_decoded(
    *, cat, pt, eta, phi, counts, met=None, met_phi=None,
) -> ak.Array:
    """Decoded events: ``{met, met_phi, particles: var * Momentum4D[kind, charge, pt, eta, phi, E]}``."""
    cat = np.asarray(cat, dtype=np.int64)
    pt = np.asarray(pt, dtype=np.float32)
    eta = np.asarray(eta, dtype=np.float32)
    particles = ak.zip(
        {
            "kind": _CAT_KIND[cat],
            "charge": _CAT_CHARGE[cat],
            "pt": pt,
            "eta": eta,
            "phi": np.asarray(phi, dtype=np.float32),
            "E": energy_from_pt_eta(pt.astype(np.float64), eta.astype(np.float64)).astype(np.float32),
        },
        with_name=PARTICLE_RECORD,
    )
    n = len(counts)
    nan = np.full(n, np.nan, dtype=np.float32)
    return ak.zip(
        {
            "met": nan if met is None else np.asarray(met, dtype=np.float32),
            "met_phi": nan if met_phi is None else np.asarray(met_phi, dtype=np.float32),
            "particles": ak.unflatten(particles, counts),
        },
        depth_limit=1,
    )


def warn_truncated(n_truncated: int, n_events: int, max_particles: int | None) -> None:
    if n_truncated:
        log.warning(
            "%d of %d events have more than max_particles=%s particles; kept the %s highest-pT ones "
            "(in token order: cat_id, then pT descending)", n_truncated, n_events, max_particles, max_particles,
        )


class MetBinning:
    """MET in quantile bins and MET-phi in equal bins: two tokens after the particle tokens."""

    def __init__(self, n_met: int, n_met_phi: int, edges=None, centers=None, binning: str = "quantile"):
        self.n_met = int(n_met)
        self.n_met_phi = int(n_met_phi)
        self.binning = binning
        self.edges = None if edges is None else np.asarray(edges, dtype=np.float64)
        self.centers = None if centers is None else np.asarray(centers, dtype=np.float64)

    @property
    def n_tokens(self) -> int:
        return self.n_met + self.n_met_phi

    def fit(self, met: np.ndarray) -> None:
        self.edges = fit_edges(met, self.n_met, self.binning, MET_REACH)
        self.centers = bin_representatives(met, digitize(met, self.edges), self.n_met, self.edges)

    def encode(self, met, met_phi, first_id: int) -> np.ndarray:
        """(n_events, 2) ids: MET in first_id..first_id+n_met-1, then MET-phi after it."""
        return np.stack(
            [first_id - 1 + digitize(met, self.edges),
             first_id - 1 + self.n_met + phi_bin(met_phi, self.n_met_phi)],
            axis=1,
        )

    def params(self) -> dict:
        return {
            "met_edges": None if self.edges is None else self.edges.tolist(),
            "met_centers": None if self.centers is None else self.centers.tolist(),
        }


def check_ids(flat: np.ndarray, n_content: int, specials: str) -> np.ndarray:
    """Content mask of ``flat``; raises on ids outside 1..n_content unless ``specials='drop'``."""
    content = (flat >= 1) & (flat <= n_content)
    if not content.all() and specials != "drop":
        bad = np.unique(flat[~content])[:10]
        raise TokenizationError(
            f"cannot decode ids {bad.tolist()} (content ids are 1..{n_content}); pass specials='drop' "
            "to skip PAD/MASK/BOS/EOS"
        )
    return content


# --------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------


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
            return None if v is None else np.asarray(v, dtype=np.float64)

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
