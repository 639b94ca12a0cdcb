"""What the learned tokenizers (VQ-VAE, graph) share: the vector quantizer, the per-particle features,
and :class:`LearnedTokenizer` (training loop with a validation split, early stopping, dead-code
restarts, tqdm, one ``seed``, ``device``; batched encoding; weights saved beside the JSON; the look-up
table's MET bins). The models themselves are :mod:`eventlm.tokenize.vqvae` and
:mod:`eventlm.tokenize.graph`.

A particle (after :func:`eventlm.tokenize.particles.order_particles`' ordering and ``max_particles``
truncation) becomes the feature vector

    [one-hot cat_id (7), (log pT - mu) / sigma, eta / 2.5, sin phi, cos phi]   (+ event context, optional)

Id layout: ``1..codebook_size`` codebook tokens, then (``met_tokens=True``) the look-up table's MET
bins: ``codebook_size + 1 .. codebook_size + n_met`` (MET bins, fitted on background) and
``.. + n_met_phi`` (MET-phi, equal bins); then MASK, BOS, EOS as in :mod:`eventlm.tokenize.base`.
``decode`` turns a token into the decoder's output for its code (the code's representative particle).
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import math
import pickle
import zipfile
from pathlib import Path

import awkward as ak
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eventlm.atomic import write_bytes
from eventlm.errors import CheckpointMismatchError, TokenizationError
from eventlm.runtime import resolve_device
from eventlm.tokenize.base import Tokenizer
from eventlm.tokenize.particles import (
    DEFAULT_MAX_PARTICLES,
    N_CATEGORIES,
    FlatParticles,
    MetBinning,
    assemble,
    build_decoded,
    check_ids,
    met_arrays,
    order_particles,
    tokens_to_flat,
    warn_truncated,
)

log = logging.getLogger(__name__)

ETA_SCALE = 2.5
#: Training batches between two dead-code restarts (and one at the end of every epoch).
RESTART_EVERY = 20
#: Layout of the per-particle target vector every learned tokenizer reconstructs.
N_KIN = 4  # scaled log pT, eta, sin phi, cos phi
N_PARTICLE_FEATURES = N_CATEGORIES + N_KIN


def mlp(n_in: int, hidden: int, n_out: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with a straight-through gradient.

    ``loss = |sg[z] - e|^2 + beta |z - sg[e]|^2`` (codebook + commitment); the output is
    ``z + sg[e - z]`` so gradients reach the encoder unchanged.
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.n_codes, self.dim, self.beta = n_codes, dim, beta
        self.codebook = nn.Parameter(torch.empty(n_codes, dim).uniform_(-1.0 / n_codes, 1.0 / n_codes))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of ``z`` (M, D) -> (M,)."""
        dist = (z * z).sum(1, keepdim=True) - 2.0 * z @ self.codebook.T + (self.codebook * self.codebook).sum(1)
        return dist.argmin(1)

    def forward(self, z: torch.Tensor):
        idx = self.nearest(z)  # (M,)
        e = self.codebook[idx]  # (M, D)
        loss = F.mse_loss(e, z.detach()) + self.beta * F.mse_loss(z, e.detach())
        return z + (e - z).detach(), idx, loss

    @torch.no_grad()
    def restart(self, dead: torch.Tensor, pool: torch.Tensor, generator: torch.Generator) -> int:
        """Move the ``dead`` codes (bool mask) onto random rows of ``pool`` (recent encoder outputs)."""
        n_dead = int(dead.sum())
        if n_dead == 0 or len(pool) == 0:
            return 0
        pick = torch.randint(len(pool), (n_dead,), generator=generator).to(pool.device)
        noise = torch.randn(n_dead, self.dim, generator=generator).to(pool.device) * 1e-3
        self.codebook[dead] = pool[pick] + noise
        return n_dead


def particle_features(flat: FlatParticles, logpt_mean: float, logpt_std: float) -> np.ndarray:
    """(P, N_PARTICLE_FEATURES) float32: one-hot cat_id, scaled log pT, eta, sin phi, cos phi."""
    x = np.zeros((len(flat.pt), N_PARTICLE_FEATURES), dtype=np.float32)
    x[np.arange(len(flat.pt)), flat.cat - 1] = 1.0
    x[:, N_CATEGORIES] = (np.log(np.maximum(flat.pt, 1e-3)) - logpt_mean) / logpt_std
    x[:, N_CATEGORIES + 1] = flat.eta / ETA_SCALE
    x[:, N_CATEGORIES + 2] = np.sin(flat.phi)
    x[:, N_CATEGORIES + 3] = np.cos(flat.phi)
    return x


def event_context(flat: FlatParticles) -> np.ndarray:
    """(P, 2) per particle: scaled log(1 + HT) of its event and its event's multiplicity / 10."""
    ht = np.bincount(np.repeat(np.arange(len(flat.counts)), flat.counts), weights=flat.pt,
                     minlength=len(flat.counts))
    per_event = np.stack([(np.log1p(ht) - 6.0) / 1.0, flat.counts / 10.0], axis=1).astype(np.float32)
    return np.repeat(per_event, flat.counts, axis=0)


def reconstruction_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the particle category + MSE of the kinematics (+ any extra targets)."""
    ce = F.cross_entropy(out[:, :N_CATEGORIES], target[:, :N_CATEGORIES].argmax(1))
    return ce + F.mse_loss(out[:, N_CATEGORIES:], target[:, N_CATEGORIES:])


class LearnedTokenizer(Tokenizer):
    """Shared state and training loop of the VQ-VAE and graph tokenizers (not registered itself)."""

    #: hyper-parameters stored in the JSON (subclasses extend)
    _HYPER = (
        "codebook_size", "latent_dim", "hidden", "beta", "met_tokens", "n_met", "n_met_phi", "met_binning",
        "max_particles", "seed", "device", "batch_size", "lr", "val_fraction", "patience",
    )

    def __init__(
        self,
        *,
        codebook_size: int = 512,
        latent_dim: int = 16,
        hidden: int = 128,
        beta: float = 0.25,
        met_tokens: bool = True,
        n_met: int = 5,
        n_met_phi: int = 5,
        met_binning: str = "tail",
        max_particles: int | None = DEFAULT_MAX_PARTICLES,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 1024,
        lr: float = 2e-3,
        val_fraction: float = 0.1,
        patience: int = 3,
    ):
        self.codebook_size = int(codebook_size)
        self.latent_dim = int(latent_dim)
        self.hidden = int(hidden)
        self.beta = float(beta)
        self.met_tokens = bool(met_tokens)
        self.n_met, self.n_met_phi = int(n_met), int(n_met_phi)
        self.met_binning = str(met_binning)
        self._derive_layout()
        self.max_particles = max_particles
        self.seed = int(seed)
        self.device = device
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.val_fraction = float(val_fraction)
        self.patience = int(patience)
        self.logpt_mean: float | None = None
        self.logpt_std: float | None = None
        self.history: list[dict] = []
        self.model: nn.Module | None = None
        self._weights_name = "tokenizer.weights.pt"
        self._table: np.ndarray | None = None

    def _derive_layout(self) -> None:
        """The state that follows from the layout options (re-derived when ``fit`` overrides them)."""
        self.n_met_tokens = 2 if self.met_tokens else 0
        self.met = MetBinning(self.n_met, self.n_met_phi, binning=self.met_binning)

    # ---- layout ----------------------------------------------------------------------------------
    @property
    def n_content(self) -> int:
        return self.codebook_size + (self.met.n_tokens if self.met_tokens else 0)

    @property
    def is_fitted(self) -> bool:
        return self.model is not None and self.logpt_mean is not None

    def token_label(self, token: int) -> str:
        """``'code 17 (jet)'``, ``'MET3'``, ``'METphi2'`` or a special id's name."""
        token = int(token)
        if 1 <= token <= self.codebook_size:
            if self.is_fitted:
                from eventlm.tokenize.particles import CATEGORIES

                return f"code {token - 1} ({CATEGORIES[int(self.code_kinematics()['cat'][token - 1])][2]})"
            return f"code {token - 1}"
        first = self.codebook_size + 1
        if self.met_tokens and first <= token < first + self.n_met:
            return f"MET{token - first + 1}"
        if self.met_tokens and first + self.n_met <= token <= self.n_content:
            return f"METphi{token - first - self.n_met + 1}"
        names = {0: "PAD", self.special.mask: "MASK", self.special.bos: "BOS", self.special.eos: "EOS"}
        return names.get(token, f"?{token}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    # ---- subclass hooks --------------------------------------------------------------------------
    def _build_model(self) -> nn.Module:
        raise NotImplementedError

    def _prepare(self, flat: FlatParticles) -> dict:
        """Numpy arrays of everything the model needs for these particles (on CPU)."""
        raise NotImplementedError

    def _n_items(self, data: dict) -> int:
        """Training items in ``data``: particles (VQ-VAE) or events (graph)."""
        raise NotImplementedError

    def _item_events(self, data: dict) -> np.ndarray:
        """Event index of each item (for the validation split by event)."""
        raise NotImplementedError

    def _forward(self, data: dict, items: np.ndarray):
        """(recon loss, vq loss, code indices, latents) of the given items."""
        raise NotImplementedError

    # ---- fit -------------------------------------------------------------------------------------
    def fit(self, events: ak.Array, *, epochs: int = 20, progress: bool = True, **kwargs) -> LearnedTokenizer:
        """Train on background ``events`` (validation split by event, early stopping). Returns self.

        Keyword overrides of the hyper-parameters (``lr``, ``batch_size``, ``patience``, ...) are
        accepted here too. ``self.history`` holds one dict per epoch (entry 0: before training).
        """
        from tqdm import tqdm

        for name, value in kwargs.items():
            if name not in self._HYPER:
                raise TypeError(f"unknown fit option {name!r}")
            setattr(self, name, value)
        self._derive_layout()  # e.g. fit(n_met=10) or fit(met_tokens=False) change the id layout
        flat = order_particles(events, self.max_particles)
        warn_truncated(flat.n_truncated_events, len(flat.counts), self.max_particles)
        if len(flat.pt) == 0:
            raise TokenizationError("cannot train a tokenizer on events without particles")
        logpt = np.log(np.maximum(flat.pt, 1e-3))
        self.logpt_mean, self.logpt_std = float(logpt.mean()), float(logpt.std() or 1.0)
        if self.met_tokens:
            met, _ = met_arrays(events)
            self.met.fit(met)

        rng = np.random.default_rng(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        device = self.torch_device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.model = self._build_model().to(device)
        self._table = None
        data = self._prepare(flat)
        n_events = len(flat.counts)
        is_val_event = rng.random(n_events) < self.val_fraction
        item_event = self._item_events(data)
        train_items = np.flatnonzero(~is_val_event[item_event])
        val_items = np.flatnonzero(is_val_event[item_event])
        if len(val_items) == 0 or len(train_items) == 0:
            raise TokenizationError(f"too few events ({n_events}) for a validation split")

        model = self.model
        self._init_codebook(data, train_items, rng)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.history = [dict(epoch=0, **self._evaluate(data, val_items))]
        # early stopping watches the validation reconstruction loss (the VQ terms only steer the codes)
        best, best_state, bad_epochs = self.history[0]["val_recon"], copy.deepcopy(model.state_dict()), 0
        n_batches = math.ceil(len(train_items) / self.batch_size)
        for epoch in range(1, epochs + 1):
            model.train()
            perm = train_items[torch.randperm(len(train_items), generator=generator).numpy()]
            usage = torch.zeros(self.codebook_size, dtype=torch.long)  # this epoch
            window = torch.zeros(self.codebook_size, dtype=torch.long)  # since the last restart
            pool: list[torch.Tensor] = []
            total = 0.0
            restarted = 0
            bar = tqdm(range(n_batches), desc=f"{self.kind} epoch {epoch}/{epochs}", disable=None if progress else True,
                       leave=False)
            for b in bar:
                items = perm[b * self.batch_size:(b + 1) * self.batch_size]
                recon, vq_loss, idx, z = self._forward(data, items)
                if len(idx) == 0:  # a batch of empty events (graph tokenizer)
                    continue
                loss = recon + vq_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                counts = torch.bincount(idx.cpu(), minlength=self.codebook_size)
                usage += counts
                window += counts
                pool.append(z.detach()[-512:])
                pool = pool[-8:]
                total += loss.item()
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if (b + 1) % RESTART_EVERY == 0 or b == n_batches - 1:
                    # dead-code restart: codes no particle chose since the last check jump onto recent
                    # encoder outputs, so the codebook follows the moving encoder
                    restarted += self.model_vq().restart(window == 0, torch.cat(pool), generator)
                    window.zero_()
            bar.close()
            row = dict(epoch=epoch, train_loss=total / n_batches, used_train=int((usage > 0).sum()),
                       restarted=restarted, **self._evaluate(data, val_items))
            self.history.append(row)
            log.info("%s epoch %d: train %.4f val %.4f (recon %.4f), %d/%d codes used, %d restarted",
                     self.kind, epoch, row["train_loss"], row["val_loss"], row["val_recon"],
                     row["used_train"], self.codebook_size, restarted)
            if row["val_recon"] < best - 1e-4:
                best, best_state, bad_epochs = row["val_recon"], copy.deepcopy(model.state_dict()), 0
            else:
                bad_epochs += 1
                if bad_epochs >= self.patience:
                    log.info("%s: early stop after epoch %d (best val recon %.4f)", self.kind, epoch, best)
                    break
        model.load_state_dict(best_state)
        model.eval()
        self._table = None
        return self

    def model_vq(self) -> VectorQuantizer:
        return self.model.vq

    @torch.no_grad()
    def _init_codebook(self, data: dict, items: np.ndarray, rng: np.random.Generator) -> None:
        """Start the codes on random encoder outputs (fewer dead codes than a uniform start)."""
        self.model.eval()
        sample = rng.choice(items, size=min(len(items), max(4 * self.codebook_size, self.batch_size)),
                            replace=False)
        _, _, _, z = self._forward(data, np.sort(sample))
        generator = torch.Generator().manual_seed(self.seed + 1)
        self.model_vq().restart(torch.ones(self.codebook_size, dtype=torch.bool), z, generator)

    @torch.no_grad()
    def _evaluate(self, data: dict, items: np.ndarray) -> dict:
        self.model.eval()
        recon_sum = vq_sum = 0.0
        n = 0
        used = torch.zeros(self.codebook_size, dtype=torch.bool)
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            recon, vq_loss, idx, _ = self._forward(data, batch)
            if len(idx) == 0:
                continue
            recon_sum += float(recon) * len(batch)
            vq_sum += float(vq_loss) * len(batch)
            used[idx.cpu()] = True
            n += len(batch)
        self.model.train()
        n = max(n, 1)
        return dict(val_loss=(recon_sum + vq_sum) / n, val_recon=recon_sum / n, used_val=int(used.sum()))

    # ---- encode / decode -------------------------------------------------------------------------
    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise TokenizationError(f"the {self.kind} tokenizer is not fitted: call fit(background_events)")

    @torch.no_grad()
    def codes(self, flat: FlatParticles) -> np.ndarray:
        """Code index (0-based) of each particle of ``flat``, computed in batches."""
        self._require_fitted()
        self.model.eval()
        data = self._prepare(flat)
        n_items = self._n_items(data)
        out = []
        for start in range(0, n_items, self.batch_size):
            _, _, idx, _ = self._forward(data, np.arange(start, min(n_items, start + self.batch_size)),
                                         with_loss=False)
            out.append(idx.cpu().numpy())
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)

    def encode(self, events: ak.Array) -> ak.Array:
        """Jagged int64 ids: ``code + 1`` per particle (token order of the LUT), then the MET tokens."""
        self._require_fitted()
        flat = order_particles(events, self.max_particles)
        warn_truncated(flat.n_truncated_events, len(flat.counts), self.max_particles)
        tokens = self.codes(flat) + 1
        met_tokens = None
        if self.met_tokens:
            met, met_phi = met_arrays(events)
            met_tokens = self.met.encode(met, met_phi, self.codebook_size + 1)
        return assemble(tokens, flat.counts, met_tokens)

    @torch.no_grad()
    def code_table(self) -> np.ndarray:
        """(codebook_size, N_PARTICLE_FEATURES + extra) decoder output of every code (cached)."""
        self._require_fitted()
        if self._table is None:
            self.model.eval()
            self._table = self.model.decoder(self.model_vq().codebook).cpu().numpy()
        return self._table

    def code_kinematics(self) -> dict[str, np.ndarray]:
        """Representative particle of every code: cat_id (1-based), pt, eta, phi arrays."""
        table = self.code_table()
        return {
            "cat": table[:, :N_CATEGORIES].argmax(1) + 1,
            "pt": np.exp(table[:, N_CATEGORIES] * self.logpt_std + self.logpt_mean),
            "eta": table[:, N_CATEGORIES + 1] * ETA_SCALE,
            "phi": np.arctan2(table[:, N_CATEGORIES + 2], table[:, N_CATEGORIES + 3]),
        }

    def decode(self, tokens, *, specials: str = "raise") -> ak.Array:
        """Each codebook token decodes to its code's reconstructed particle; MET tokens to bin values."""
        self._require_fitted()
        flat, counts = tokens_to_flat(tokens)
        content = check_ids(flat, self.n_content, specials)
        event_of = np.repeat(np.arange(len(counts)), counts)
        is_code = content & (flat <= self.codebook_size)
        code = flat[is_code] - 1
        kin = self.code_kinematics()
        met = met_phi = None
        if self.met_tokens:
            from eventlm.tokenize.particles import decode_met_tokens

            met, met_phi = decode_met_tokens(
                flat, content, event_of, len(counts), self.codebook_size + 1, self.met.centers, self.n_met_phi
            )
        return build_decoded(
            cat=kin["cat"][code], pt=kin["pt"][code], eta=kin["eta"][code], phi=kin["phi"][code],
            counts=np.bincount(event_of[is_code], minlength=len(counts)), met=met, met_phi=met_phi,
        )

    def resolution_arrays(self, events: ak.Array) -> dict[str, np.ndarray]:
        """Flat input and decoded particle kinematics (token order), and the code of each particle."""
        self._require_fitted()
        flat = order_particles(events, self.max_particles)
        code = self.codes(flat)
        kin = self.code_kinematics()
        return {
            "code": code,
            "cat_in": flat.cat, "cat_out": kin["cat"][code],
            "pt_in": flat.pt.astype(np.float64), "pt_out": kin["pt"][code],
            "eta_in": flat.eta.astype(np.float64), "eta_out": kin["eta"][code],
            "phi_in": flat.phi.astype(np.float64), "phi_out": kin["phi"][code],
        }

    def resolution_report(self, events: ak.Array) -> dict:
        """Codebook usage and the resolution of decoded pT, eta, phi against the input particles.

        Widths are robust: half the 16-84 % interval. ``pt_rel`` is decoded / input - 1.
        """
        a = self.resolution_arrays(events)

        def width(x):
            if len(x) == 0:
                return float("nan")
            lo, hi = np.percentile(x, [16, 84])
            return float(0.5 * (hi - lo))

        rel = a["pt_out"] / a["pt_in"] - 1.0
        deta = a["eta_out"] - a["eta_in"]
        dphi = np.mod(a["phi_out"] - a["phi_in"] + np.pi, 2 * np.pi) - np.pi
        used = np.unique(a["code"])
        return {
            "kind": self.kind,
            "n_particles": int(len(a["code"])),
            "codebook_size": self.codebook_size,
            "codes_used": int(len(used)),
            "usage_fraction": float(len(used) / self.codebook_size),
            "category_accuracy": float(np.mean(a["cat_in"] == a["cat_out"])) if len(used) else float("nan"),
            "pt_rel_bias": float(np.median(rel)) if len(rel) else float("nan"),
            "pt_rel_resolution": width(rel),
            "eta_bias": float(np.median(deta)) if len(deta) else float("nan"),
            "eta_resolution": width(deta),
            "phi_resolution": width(dphi),
        }

    # ---- persistence -----------------------------------------------------------------------------
    def _weights_digest(self) -> str | None:
        if self.model is None:
            return None
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def get_params(self) -> dict:
        params = {name: getattr(self, name) for name in self._HYPER}
        params.update(
            n_content=self.n_content,
            logpt_mean=self.logpt_mean,
            logpt_std=self.logpt_std,
            weights_file=self._weights_name if self.model is not None else None,
            weights_sha256=self._weights_digest(),
            history=self.history,
            **self.met.params(),
        )
        return params

    def save(self, path) -> Path:
        self._weights_name = Path(path).stem + ".weights.pt"
        return super().save(path)

    def _save_tensors(self, path: Path) -> None:
        if self.model is None:
            return
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()}, buffer)
        write_bytes(path.with_name(self._weights_name), buffer.getvalue())

    @classmethod
    def from_params(cls, params: dict, directory: Path | None = None) -> LearnedTokenizer:
        tok = cls(**{name: params[name] for name in cls._HYPER if name in params})
        tok.logpt_mean, tok.logpt_std = params.get("logpt_mean"), params.get("logpt_std")
        tok.history = params.get("history", [])
        if params.get("met_edges") is not None:
            tok.met.edges = np.asarray(params["met_edges"], dtype=np.float64)
            tok.met.centers = np.asarray(params["met_centers"], dtype=np.float64)
        if params.get("n_content") not in (None, tok.n_content):
            raise CheckpointMismatchError(f"{cls.kind}: parameters give {tok.n_content} content ids, "
                                          f"the file says {params['n_content']}")
        weights = params.get("weights_file")
        if weights is not None:
            path = Path(directory or ".") / weights
            if not path.exists():
                raise CheckpointMismatchError(f"{path}: the {cls.kind} tokenizer's weights file is missing")
            try:  # weights_only: a pickle payload is refused, never run
                state = torch.load(path, map_location="cpu", weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise CheckpointMismatchError(f"{path}: not the {cls.kind} tokenizer's weights (refused or "
                                              f"unreadable: {reason})") from None
            if not isinstance(state, dict):
                raise CheckpointMismatchError(f"{path}: not the {cls.kind} tokenizer's weights "
                                              f"(a {type(state).__name__}, not a state dict)")
            model = tok._build_model()
            try:
                model.load_state_dict(state)
            except RuntimeError as err:
                raise CheckpointMismatchError(f"{path}: weights do not fit the {cls.kind} parameters ({err})") from None
            tok.model = model.to(tok.torch_device).eval()
            tok._weights_name = weights
            if params.get("weights_sha256") not in (None, tok._weights_digest()):
                raise CheckpointMismatchError(f"{path}: weights differ from the ones this JSON was saved with")
        return tok
