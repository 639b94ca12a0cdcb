"""What every tokenizer shares: the particle categories, the particle order, the binning of pT, |eta|,
phi and MET, and the assembly of token sequences. Pure awkward/numpy (never imports torch); every
step is vectorized (the particles are flattened once; there is no per-event Python loop).

Particle order inside an event (:func:`order_particles`): by ``cat_id`` ascending (jets, b-jets, e-,
e+, mu-, mu+, photons), then pT descending; ties keep their input order. At most ``max_particles``
particles are kept per event: the hardest ones (highest pT, whatever their kind), so a truncated event
loses its softest objects. The MET tokens are never truncated.

Used by :mod:`eventlm.tokenize.lut` (the look-up table) and :mod:`eventlm.tokenize.learned` (VQ-VAE
and graph tokenizers).
"""

from __future__ import annotations

import logging
from functools import cached_property

import awkward as ak
import numpy as np

from eventlm.errors import TokenizationError
from eventlm.events import PARTICLE_RECORD, Kind, energy_from_pt_eta

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
CAT_KIND = np.array([0] + [int(k) for k, _, _ in CATEGORIES.values()], dtype=np.int8)
CAT_CHARGE = np.array([0] + [q for _, q, _ in CATEGORIES.values()], dtype=np.int8)

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
# vectorized helpers
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
            "kind": CAT_KIND[cat],
            "charge": CAT_CHARGE[cat],
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
