"""Generation: sample token sequences from a causal model and decode them into events.

::

    from eventlm.sample import prepare_sampling, sample_events

    prepare_sampling("runs/causal", "data/background.csv.gz")   # once: writes runs/causal/sampling.npz
    events = sample_events("runs/causal", 10_000, seed=1)       # the event model, process "generated"

Tokens. :func:`sample_tokens` draws ``BOS t1 t2 ...`` one token at a time (temperature, top-k) and
masks every logit the token grammar forbids at that step, so a generated sequence is always one the
look-up-table tokenizer could have written:

- particle tokens in token order: kind category ascending, then pT bin non-increasing inside a kind;
  at most ``max_particles`` of them;
- then (tokenizers with MET tokens) one MET token and one MET-phi token;
- then EOS. PAD, MASK and BOS are never drawn, EOS only where the event may end.

Values. A token fixes bins, not values. :func:`decode_tokens` draws each value inside its bin from
the training distribution, by inverse-CDF sampling of per-bin empirical quantiles of the training
background (a :class:`SamplingTable`, ``sampling.npz`` in the model directory):

- pT and mass from the training particles of the same kind category and pT bin (the mass from
  ``E^2 - (pT cosh eta)^2``, so jets keep their mass), then E from pT, eta and that mass;
- |eta| from the particles of the same category and |eta| bin, with a random sign;
- phi from the particles of the same phi bin, MET and MET-phi from the events of their bins.

The quantiles run from the smallest to the largest training value of a bin, so a value never leaves
its bin, and an open-ended overflow bin yields at most the largest training value (never infinity).
A (category, bin) with fewer than 20 training particles (:data:`MIN_VALUES`) takes the values of the
bin over all categories (a kind's mass: over all its pT bins); a bin without any training value takes
the tokenizer's own representative value. Re-encoding decoded events gives back the sampled tokens
(pT values inside one (category, pT bin) run of an event are sorted, so the order holds too). With
phi measured from the leading object, the reference is the particle whose tokens say so (first of its
run in the event's top pT bin, middle phi bin): it is put at phi 0 and given the event's highest pT,
so every real background sequence survives decode -> encode exactly (tests/test_sample.py, all
62k bundled background events measured).

Randomness: one seed. The tokens come from a ``torch.Generator`` seeded with ``seed``; the values
from ``numpy.random.default_rng([seed, 2])``. Same model, seed and event count: the same events.
Generated events have process ``generated``, weight 1 and event ids ``first_id .. first_id + N - 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import torch
from torch.nn import functional as F

from eventlm.atomic import atomic_path
from eventlm.runtime import torch_threads
from eventlm.errors import EventlmError

log = logging.getLogger(__name__)

SAMPLING_FILE = "sampling.npz"  # eventlm.modeldir.SAMPLING
PROCESS = "generated"
#: Quantiles stored per bin (from the minimum to the maximum training value of the bin).
N_QUANTILES = 257
#: A bin with fewer training values than this takes the values of the same bin over all kinds.
MIN_VALUES = 20
#: Events per batch of the token sampler.
BATCH_EVENTS = 1024


class ModelKindError(EventlmError, ValueError):
    """A model directory that cannot do what was asked (e.g. sampling from a masked model)."""


# --------------------------------------------------------------------------------------------------
# the per-bin value tables


def _group_quantiles(values: np.ndarray, group: np.ndarray, n_groups: int, n_q: int,
                     min_values: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(n_groups, n_q) quantiles of ``values`` per group (NaN rows for groups with fewer than
    ``min_values`` values) and the counts."""
    probs = np.linspace(0.0, 1.0, n_q)
    out = np.full((n_groups, n_q), np.nan)
    order = np.argsort(group, kind="stable")
    g, v = group[order], values[order]
    bounds = np.searchsorted(g, np.arange(n_groups + 1))
    for k in range(n_groups):  # one iteration per bin, not per particle
        chunk = v[bounds[k]:bounds[k + 1]]
        if len(chunk) >= max(min_values, 1):
            out[k] = np.quantile(chunk, probs)
    return out, np.diff(bounds)


def _fill_empty(table: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows of ``table`` (..., n_q) that are NaN take the matching ``fallback`` row (broadcast)."""
    empty = np.isnan(table[..., 0])
    table = table.copy()
    table[empty] = np.broadcast_to(fallback, table.shape)[empty]
    return table


@dataclass
class SamplingTable:
    """Per-bin quantiles of the training values, the inverse CDFs that :func:`decode_tokens` samples.

    ``pt``, ``mass``: (n_cat, n_pt, Q); ``abseta``: (n_cat, n_eta, Q); ``phi``: (n_phi, Q);
    ``met``: (n_met, Q); ``met_phi``: (n_met_phi, Q); ``fingerprint``: the tokenizer's; ``weights``:
    the stamp of the model's weights it was made for (:meth:`eventlm.modeldir.ModelDir.stamp`).
    """

    pt: np.ndarray
    mass: np.ndarray
    abseta: np.ndarray
    phi: np.ndarray
    met: np.ndarray
    met_phi: np.ndarray
    fingerprint: str
    n_events: int
    weights: dict | None = None

    @classmethod
    def from_events(cls, tokenizer, events: ak.Array, n_quantiles: int = N_QUANTILES) -> SamplingTable:
        """Quantiles of ``events`` (the training background) in the bins of ``tokenizer``'s tokens."""
        lut = _require_lut(tokenizer)
        from eventlm.tokenize.particles import N_CATEGORIES, tokens_to_flat

        tokens = lut.encode(events)
        source = lut.particle_order(events)  # input index of the particle behind each particle token
        flat, counts = tokens_to_flat(tokens)
        n_events = len(counts)
        event_of = np.repeat(np.arange(n_events), counts)
        is_part = (flat >= 1) & (flat <= lut.n_particle_tokens)
        cat, cpt, ceta, cphi = (np.asarray(a) for a in lut.split_id(flat[is_part]))
        # the particles behind the particle tokens, in token order
        src = ak.to_numpy(ak.flatten(source)).astype(np.int64)
        pcounts = ak.to_numpy(ak.num(source)).astype(np.int64)
        p = ak.to_packed(events.particles)
        starts = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(p)))])[:-1]
        take = starts[np.repeat(np.arange(n_events), pcounts)] + src
        pt = ak.to_numpy(ak.flatten(p.pt)).astype(np.float64)[take]
        eta = ak.to_numpy(ak.flatten(p.eta)).astype(np.float64)[take]
        # phi in the tokenizer's frame (measured from the leading object for phi_reference="leading")
        from eventlm.tokenize.particles import rotate_phi

        reference = lut.phi_references(events)
        phi = rotate_phi(ak.to_numpy(ak.flatten(p.phi)).astype(np.float64)[take],
                         reference[np.repeat(np.arange(n_events), pcounts)])
        energy = ak.to_numpy(ak.flatten(p.E)).astype(np.float64)[take]
        mass = np.sqrt(np.maximum(energy**2 - (pt * np.cosh(eta)) ** 2, 0.0))
        q = n_quantiles
        n_pt, n_eta, n_phi = lut.n_pt, lut.n_eta, lut.n_phi
        # decode() gives each bin's own representative: the last resort for a bin without training values
        rep = _representatives(lut)

        pt_t, _ = _group_quantiles(pt, (cat - 1) * n_pt + cpt - 1, N_CATEGORIES * n_pt, q, MIN_VALUES)
        pt_pool, _ = _group_quantiles(pt, cpt - 1, n_pt, q)
        pt_pool = _fill_empty(pt_pool, rep["pt"][:, None])
        pt_t = _fill_empty(pt_t.reshape(N_CATEGORIES, n_pt, q), pt_pool[None])
        m_t, _ = _group_quantiles(mass, (cat - 1) * n_pt + cpt - 1, N_CATEGORIES * n_pt, q, MIN_VALUES)
        m_pool, _ = _group_quantiles(mass, cat - 1, N_CATEGORIES, q)  # a kind's mass over all its pT
        m_pool = _fill_empty(m_pool, np.zeros(q))
        m_t = _fill_empty(m_t.reshape(N_CATEGORIES, n_pt, q), m_pool[:, None, :])
        e_t, _ = _group_quantiles(np.abs(eta), (cat - 1) * n_eta + ceta - 1, N_CATEGORIES * n_eta, q, MIN_VALUES)
        e_pool, _ = _group_quantiles(np.abs(eta), ceta - 1, n_eta, q)
        e_pool = _fill_empty(e_pool, rep["abseta"][:, None])
        e_t = _fill_empty(e_t.reshape(N_CATEGORIES, n_eta, q), e_pool[None])
        f_t, _ = _group_quantiles(phi, cphi - 1, n_phi, q)
        f_t = _fill_empty(f_t, rep["phi"][:, None])
        met_t = np.zeros((0, q))
        mphi_t = np.zeros((0, q))
        if lut.met_tokens:
            first = lut.n_particle_tokens + 1
            is_met = (flat >= first) & (flat < first + lut.n_met)
            is_mphi = flat >= first + lut.n_met
            met = ak.to_numpy(events.met).astype(np.float64)
            met_phi = rotate_phi(ak.to_numpy(events.met_phi).astype(np.float64), reference)
            met_t, _ = _group_quantiles(met[event_of[is_met]], flat[is_met] - first, lut.n_met, q)
            met_t = _fill_empty(met_t, rep["met"][:, None])
            mphi_t, _ = _group_quantiles(met_phi[event_of[is_mphi]], flat[is_mphi] - first - lut.n_met,
                                         lut.n_met_phi, q)
            mphi_t = _fill_empty(mphi_t, rep["met_phi"][:, None])
        return cls(pt=pt_t, mass=m_t, abseta=e_t, phi=f_t, met=met_t, met_phi=mphi_t,
                   fingerprint=lut.fingerprint(), n_events=n_events)

    def save(self, path) -> Path:
        import json

        path = Path(path)
        with atomic_path(path) as tmp:
            np.savez_compressed(tmp, pt=self.pt, mass=self.mass, abseta=self.abseta, phi=self.phi,
                                met=self.met, met_phi=self.met_phi, fingerprint=np.array(self.fingerprint),
                                n_events=np.array(self.n_events), weights=np.array(json.dumps(self.weights)))
        return path

    @classmethod
    def load(cls, path, tokenizer=None) -> SamplingTable:
        import json

        import zipfile

        from eventlm.errors import ModelDirError

        path = Path(path)
        try:  # np.load refuses pickled (object) arrays: nothing in the file is executed
            with np.load(path) as f:
                weights = json.loads(str(f["weights"])) if "weights" in f.files else None
                table = cls(pt=f["pt"], mass=f["mass"], abseta=f["abseta"], phi=f["phi"], met=f["met"],
                            met_phi=f["met_phi"], fingerprint=str(f["fingerprint"]), n_events=int(f["n_events"]),
                            weights=weights)
            for name in ("pt", "mass", "abseta", "phi", "met", "met_phi"):
                if not np.isfinite(np.asarray(getattr(table, name), dtype=np.float64)).all():
                    raise ValueError(f"{name} holds a non-finite value")
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as err:
            reason = "a pickled object array, refused" if "allow_pickle" in str(err) else \
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            raise ModelDirError(f"{path}: not a sampling table ({reason}); rebuild it with --reference") from None
        if tokenizer is not None and tokenizer.fingerprint() != table.fingerprint:
            raise ModelKindError(f"{path}: made for another tokenizer (fingerprint {table.fingerprint}, the "
                                 f"model's is {tokenizer.fingerprint()}); rebuild it with --reference")
        return table


def _representatives(lut) -> dict[str, np.ndarray]:
    """The tokenizer's own value of every bin (through ``decode``), finite."""
    from eventlm.tokenize.particles import phi_centers

    out = {"pt": np.asarray(lut.pt_centers, dtype=np.float64),
           "abseta": np.asarray(lut.eta_centers, dtype=np.float64),
           "phi": phi_centers(lut.n_phi)}
    if lut.met_tokens:
        out["met"] = np.asarray(lut.met.centers, dtype=np.float64)
        out["met_phi"] = phi_centers(lut.n_met_phi)
    for name, v in out.items():  # an open-ended bin's representative could be inf: use its neighbour
        if not np.isfinite(v).all():
            good = np.isfinite(v)
            out[name] = np.where(good, v, v[good].max() if good.any() else 0.0)
    return out


def _require_lut(tokenizer):
    from eventlm.tokenize.lut import LUTTokenizer

    if not isinstance(tokenizer, LUTTokenizer):
        raise ModelKindError(f"sampling decodes look-up-table tokens; this model's tokenizer is {tokenizer.kind!r}")
    return tokenizer


def _inverse_cdf(table: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Linear interpolation of the quantile rows ``table`` (M, Q) at probabilities ``u`` (M,)."""
    n_q = table.shape[-1]
    x = u * (n_q - 1)
    i = np.minimum(x.astype(np.int64), n_q - 2)
    frac = x - i
    rows = np.arange(len(u))
    return table[rows, i] + frac * (table[rows, i + 1] - table[rows, i])


# --------------------------------------------------------------------------------------------------
# the model directory


def load_causal_model(model_dir, device="cpu"):
    """``(model, tokenizer, checkpoint)`` of a causal model directory; :class:`ModelKindError` otherwise."""
    from eventlm.modeldir import CLASSIFIER, ModelDir

    md = ModelDir(model_dir)
    if md.kind == CLASSIFIER:
        raise ModelKindError(f"{md.path} is a fine-tuned classifier (eventlm finetune), not a generative model")
    model, tokenizer, ckpt = md.load(device=device)
    if ckpt.get("objective") != "causal" or not model.config.causal:
        raise ModelKindError(
            f"{md.path}: trained with the {ckpt.get('objective')!r} objective; sampling needs a causal model "
            "(eventlm train --objective causal)"
        )
    _require_lut(tokenizer)
    return model, tokenizer, ckpt


def _training_events(md, reference) -> ak.Array:
    """The reference events, restricted to the model's training rows when ``split.json`` names them."""
    from eventlm.io import as_events

    events = as_events(reference)
    if md.has_split():
        train = md.select(events, "train")
        if len(train) > 0:
            log.info("sampling table from the %d training rows of %d reference events", len(train), len(events))
            return train
        log.warning("none of the reference events is in %s/split.json's training split: using all %d",
                    md.path, len(events))
    return events


def prepare_sampling(model_dir, reference, *, tokenizer=None) -> SamplingTable:
    """Build the :class:`SamplingTable` of ``model_dir`` from ``reference`` events and save it there
    (``sampling.npz``, stamped with the weights it was made for)."""
    from eventlm.modeldir import SAMPLING, ModelDir

    md = ModelDir(model_dir)
    if tokenizer is None:
        tokenizer = md.load_tokenizer()
    table = SamplingTable.from_events(tokenizer, _training_events(md, reference))
    table.weights = md.stamp()
    table.save(md.path / SAMPLING)
    return table


def load_sampling_table(model_dir, tokenizer, reference=None) -> SamplingTable:
    """The model's sampling table (made now from ``reference`` if given); one made for another tokenizer
    or other weights is refused in one line."""
    from eventlm.modeldir import SAMPLING, ModelDir

    md = ModelDir(model_dir)
    if reference is not None:
        return prepare_sampling(md.path, reference, tokenizer=tokenizer)
    path = md.path / SAMPLING
    if not path.exists():
        raise ModelKindError(f"{md.path} has no {SAMPLING}: pass --reference BACKGROUND once (the "
                             "background it was trained on) to store the per-bin training values")
    table = SamplingTable.load(path)
    md.check_stamp(path, table.weights)  # the weights first: a retrained model has another tokenizer too
    return SamplingTable.load(path, tokenizer)


# --------------------------------------------------------------------------------------------------
# tokens


class Grammar:
    """Which content id may follow which, for a look-up-table tokenizer (see the module docstring)."""

    def __init__(self, tokenizer):
        lut = _require_lut(tokenizer)
        special = lut.special
        self.vocab_size = lut.vocab_size
        self.eos = special.eos
        self.met_tokens = lut.met_tokens
        self.max_particles = lut.max_particles if lut.max_particles is not None else 64
        self.max_tokens = self.max_particles + lut.n_met_tokens  # content tokens; EOS comes after
        ids = np.arange(self.vocab_size)
        self.is_particle = torch.from_numpy((ids >= 1) & (ids <= lut.n_particle_tokens))
        cat = np.zeros(self.vocab_size, dtype=np.int64)
        cpt = np.zeros(self.vocab_size, dtype=np.int64)
        p = ids[self.is_particle.numpy()]
        c, b, _, _ = lut.split_id(p)
        cat[p], cpt[p] = c, b
        self.cat, self.cpt = torch.from_numpy(cat), torch.from_numpy(cpt)
        first = lut.n_particle_tokens + 1
        self.is_met = torch.from_numpy(lut.met_tokens & (ids >= first) & (ids < first + lut.n_met))
        self.is_met_phi = torch.from_numpy(lut.met_tokens & (ids >= first + lut.n_met) & (ids <= lut.n_content))
        self.is_eos = torch.from_numpy(ids == self.eos)

    def allowed(self, phase, last_cat, last_cpt, n_particles) -> torch.Tensor:
        """(B, V) bool: the ids each row may draw next. ``phase``: 0 particles, 1 after MET, 2 after MET-phi."""
        order_ok = (self.cat[None, :] > last_cat[:, None]) | (
            (self.cat[None, :] == last_cat[:, None]) & (self.cpt[None, :] <= last_cpt[:, None])
        )
        room = (n_particles < self.max_particles)[:, None]
        in_particles = (phase == 0)[:, None]
        ok = in_particles & room & self.is_particle[None, :] & order_ok
        if self.met_tokens:
            ok |= in_particles & self.is_met[None, :]
            ok |= (phase == 1)[:, None] & self.is_met_phi[None, :]
            ok |= (phase == 2)[:, None] & self.is_eos[None, :]
        else:
            ok |= in_particles & self.is_eos[None, :]
        return ok

    def advance(self, token, phase, last_cat, last_cpt, n_particles):
        part = self.is_particle[token]
        last_cat = torch.where(part, self.cat[token], last_cat)
        last_cpt = torch.where(part, self.cpt[token], last_cpt)
        n_particles = n_particles + part.long()
        phase = torch.where(self.is_met[token], torch.ones_like(phase), phase)
        phase = torch.where(self.is_met_phi[token], torch.full_like(phase, 2), phase)
        return phase, last_cat, last_cpt, n_particles


@torch.no_grad()
def sample_tokens(model, tokenizer, n_events: int, *, seed: int = 0, temperature: float = 1.0,
                  top_k: int | None = None, batch_events: int = BATCH_EVENTS, progress: bool = False):
    """``(flat content tokens, counts)`` of ``n_events`` sequences drawn from the causal ``model``.

    Every sequence follows :class:`Grammar`; the EOS is drawn but not returned.
    """
    if not model.config.causal:
        raise ModelKindError("sampling needs a model trained with the causal objective")
    if not 0 < temperature < float("inf"):  # nan and inf too
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top-k must be >= 1, got {top_k}")
    grammar = Grammar(tokenizer)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_events, desc="sampling", unit="event", dynamic_ncols=True, disable=None)  # None: not off a terminal
    chunks, counts = [], []
    for start in range(0, n_events, batch_events):
        b = min(batch_events, n_events - start)
        tok, cnt = _sample_batch(model, grammar, b, gen, temperature, top_k, device)
        chunks.append(tok)
        counts.append(cnt)
        if bar is not None:
            bar.update(b)
    if bar is not None:
        bar.close()
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(chunks), np.concatenate(counts)


def _sample_batch(model, grammar: Grammar, b: int, gen, temperature, top_k, device):
    bos = model.config.bos_id
    width = grammar.max_tokens + 1
    seq = torch.full((b, width + 1), bos, dtype=torch.long, device=device)  # BOS t1 .. (PAD-free)
    lengths = torch.zeros(b, dtype=torch.long, device=device)
    active = torch.arange(b, device=device)  # rows still without EOS
    phase = torch.zeros(b, dtype=torch.long)
    last_cat = torch.zeros(b, dtype=torch.long)
    last_cpt = torch.full((b,), 1 << 30, dtype=torch.long)
    n_part = torch.zeros(b, dtype=torch.long)
    for step in range(width):
        x = seq[active, : step + 1]  # (A, step + 1): BOS and the tokens so far
        where = torch.full((len(active),), step, dtype=torch.long, device=device)
        logits = model(x, torch.ones_like(x, dtype=torch.bool), where=where).float()  # (A, V)
        ok = grammar.allowed(phase[active.cpu()], last_cat[active.cpu()], last_cpt[active.cpu()],
                             n_part[active.cpu()]).to(device)
        if step == width - 1:  # the longest event: only EOS is left
            ok = grammar.is_eos[None, :].to(device).expand_as(ok)
        logits = logits.masked_fill(~ok, float("-inf")) / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=gen)[:, 0]  # (A,)
        seq[active, step + 1] = nxt
        a_cpu, n_cpu = active.cpu(), nxt.cpu()
        phase[a_cpu], last_cat[a_cpu], last_cpt[a_cpu], n_part[a_cpu] = grammar.advance(
            n_cpu, phase[a_cpu], last_cat[a_cpu], last_cpt[a_cpu], n_part[a_cpu])
        stop = nxt == grammar.eos
        lengths[active[stop]] = step
        active = active[~stop]
        if len(active) == 0:
            break
    body = seq[:, 1:].cpu().numpy()
    lengths = lengths.cpu().numpy()
    keep = np.arange(body.shape[1])[None, :] < lengths[:, None]
    return body[keep].astype(np.int64), lengths.astype(np.int64)


# --------------------------------------------------------------------------------------------------
# values


def _reference_leads(pt, p_event, cpt, cphi, run, run_start, n_events: int, lut):
    """``(pt, reference)``: the particle each event's phi tokens were measured from, made its hardest.

    With ``phi_reference="leading"`` an event's angles are measured from its hardest object, whose own
    phi token is therefore the middle bin, and which is the first particle of its (kind, pT bin) run in
    the event's highest pT bin. Decoding takes the first particle of the event that fits that description
    (any of them re-encodes the same), and gives it the event's highest drawn pT (exchanging values
    inside the top pT bin, then sorting each run again), strictly: a tie with an earlier particle is
    broken by one float32 step inside the bin. ``reference`` is -1 for an event with no such particle
    (a generated sequence that breaks the rule; no particle at all: the MET is the reference).
    """
    from eventlm.tokenize.particles import digitize, phi_bin

    middle = phi_bin(np.zeros(1), lut.n_phi)[0]
    top = np.zeros(n_events, dtype=np.int64)
    np.maximum.at(top, p_event, cpt)
    candidate = np.flatnonzero(run_start & (cpt == top[p_event]) & (cphi == middle))
    events_with, first = np.unique(p_event[candidate], return_index=True)
    reference = np.full(n_events, -1, dtype=np.int64)
    reference[events_with] = candidate[first]
    # the hardest particle of each event (ties: the first in token order, as the tokenizer picks it)
    by_pt = np.lexsort((-pt.astype(np.float64), p_event))
    starts = np.searchsorted(p_event[by_pt], np.arange(n_events))
    has_particles = np.bincount(p_event, minlength=n_events) > 0
    hardest = np.full(n_events, -1, dtype=np.int64)
    hardest[has_particles] = by_pt[starts[has_particles]]
    swap = (reference >= 0) & (hardest != reference)
    r, h = reference[swap], hardest[swap]
    pt = pt.copy()
    pt[r], pt[h] = pt[h], pt[r]  # both in the event's top pT bin: each value stays inside its bin
    pt = pt[np.lexsort((-pt, run))]  # runs sorted again; the reference is first of its run
    # a tie with another particle: one float32 step up for the reference (or down for the others)
    others_max = np.full(n_events, -np.inf, dtype=np.float64)
    not_ref = np.ones(len(pt), dtype=bool)
    not_ref[reference[reference >= 0]] = False
    np.maximum.at(others_max, p_event[not_ref], pt[not_ref].astype(np.float64))
    tied = np.flatnonzero((reference >= 0) & (others_max >= pt[np.maximum(reference, 0)]))
    if len(tied):
        r = reference[tied]
        up = np.nextafter(pt[r], np.float32(np.inf))
        fits = digitize(up, lut.pt_edges) == cpt[r]
        pt[r[fits]] = up[fits]
        for e, value in zip(tied[~fits], pt[r[~fits]]):  # at the top of its bin: the others step down
            k = np.flatnonzero((p_event == e) & (pt == value) & not_ref)
            pt[k] = np.nextafter(pt[k], np.float32(0))
    return pt, reference


def decode_tokens(flat: np.ndarray, counts: np.ndarray, tokenizer, table: SamplingTable, *, seed: int = 0,
                  first_id: int = 0, process: str = PROCESS) -> ak.Array:
    """Events in the event model from content tokens (see the module docstring for the values)."""
    from eventlm.events import energy_from_pt_eta, make_events, make_particles
    from eventlm.tokenize.particles import CAT_CHARGE, CAT_KIND

    lut = _require_lut(tokenizer)
    flat = np.asarray(flat, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    rng = np.random.default_rng([int(seed), 2])
    n_events = len(counts)
    event_of = np.repeat(np.arange(n_events), counts)
    is_part = (flat >= 1) & (flat <= lut.n_particle_tokens)
    bad = ~is_part & ~((flat > lut.n_particle_tokens) & (flat <= lut.n_content))
    if bad.any():
        raise ModelKindError(f"cannot decode ids {np.unique(flat[bad])[:10].tolist()} "
                             f"(content ids are 1..{lut.n_content})")
    p_event = event_of[is_part]
    cat, cpt, ceta, cphi = (np.asarray(a, dtype=np.int64) for a in lut.split_id(flat[is_part]))
    n = len(cat)
    u = rng.random((6, n))
    pt = _inverse_cdf(table.pt[cat - 1, cpt - 1], u[0])
    mass = _inverse_cdf(table.mass[cat - 1, cpt - 1], u[1])
    abseta = _inverse_cdf(table.abseta[cat - 1, ceta - 1], u[2])
    eta = np.where(u[3] < 0.5, -abseta, abseta)
    phi = _inverse_cdf(table.phi[cphi - 1], u[4])
    # token order needs pT descending inside each (event, category, pT bin) run: sort the drawn (pT, mass)
    # pairs inside their run (they are exchangeable there), leaving eta and phi with their tokens
    key = (p_event * 64 + cat) * 4096 + cpt
    run_start = np.concatenate([[True], key[1:] != key[:-1]]) if n else np.zeros(0, dtype=bool)
    run = np.cumsum(run_start) - 1
    order = np.lexsort((-pt, run))  # runs stay in place, pT descending inside each
    pt, mass = pt[order].astype(np.float32), mass[order]
    leading = getattr(lut, "phi_reference", "absolute") == "leading"
    reference = np.full(n_events, -1, dtype=np.int64)
    if leading and n:
        pt, reference = _reference_leads(pt, p_event, cpt, cphi, run, run_start, n_events, lut)
    eta, phi = eta.astype(np.float32), phi.astype(np.float32)
    energy = energy_from_pt_eta(pt.astype(np.float64), eta.astype(np.float64), mass)
    pcounts = np.bincount(p_event, minlength=n_events)
    particles = make_particles(CAT_KIND[cat], CAT_CHARGE[cat], pt, eta, phi, energy, pcounts)
    met = np.zeros(n_events)
    met_phi = np.zeros(n_events)
    if lut.met_tokens:
        first = lut.n_particle_tokens + 1
        is_met = (flat >= first) & (flat < first + lut.n_met)
        is_mphi = flat >= first + lut.n_met
        um = rng.random((2, n_events))
        met[event_of[is_met]] = _inverse_cdf(table.met[flat[is_met] - first], um[0, event_of[is_met]])
        met_phi[event_of[is_mphi]] = _inverse_cdf(table.met_phi[flat[is_mphi] - first - lut.n_met],
                                                  um[1, event_of[is_mphi]])
    if leading:
        # the tokens fix the angles to the reference object only: it sits at phi 0, and every event is
        # turned by a uniform angle (the physics is invariant under it), so the detector phi of
        # generated events is uniform
        from eventlm.tokenize.particles import rotate_phi

        phi = phi.astype(np.float64)
        has = reference >= 0
        phi[reference[has]] = 0.0
        turn = rng.uniform(-np.pi, np.pi, n_events)
        particles = ak.with_field(particles, ak.values_astype(ak.unflatten(
            rotate_phi(phi, -turn[p_event]), pcounts), np.float32), "phi")
        met_phi = rotate_phi(met_phi, -turn)
    return make_events(
        event_id=np.arange(first_id, first_id + n_events, dtype=np.int64),
        process=process,
        weight=np.ones(n_events),
        met=met,
        met_phi=met_phi,
        particles=particles,
    )


def sample_events(model_dir, n_events: int, *, seed: int = 0, temperature: float = 1.0, top_k: int | None = None,
                  reference=None, device="cpu", first_id: int = 0, progress: bool = False,
                  threads: int = 1) -> ak.Array:
    """``n_events`` generated events of the causal model in ``model_dir`` (the event model)."""
    model, tokenizer, _ = load_causal_model(model_dir, device=device)
    table = load_sampling_table(model_dir, tokenizer, reference)
    with torch_threads(threads, device):
        flat, counts = sample_tokens(model, tokenizer, n_events, seed=seed, temperature=temperature, top_k=top_k,
                                     progress=progress)
    return decode_tokens(flat, counts, tokenizer, table, seed=seed, first_id=first_id)
