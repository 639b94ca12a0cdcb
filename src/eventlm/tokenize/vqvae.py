"""VQ-VAE tokenizer: a learned codebook over per-particle features (torch).

An MLP encoder maps a particle's features (:mod:`eventlm.tokenize.learned`) to a latent vector, a
vector quantizer snaps the latent to the nearest of ``codebook_size`` code vectors (straight-through
gradient, codebook + commitment loss, dead codes restarted from recent encoder outputs after every
epoch), and an MLP decoder reconstructs the particle features from the code alone. The token of a
particle is ``code index + 1``; the id layout and the training loop are
:class:`eventlm.tokenize.learned.LearnedTokenizer`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eventlm.tokenize import learned
from eventlm.tokenize.base import register
from eventlm.tokenize.learned import LearnedTokenizer
from eventlm.tokenize.particles import FlatParticles


class ParticleVQVAE(nn.Module):
    """MLP encoder -> vector quantizer -> MLP decoder, one particle at a time."""

    def __init__(self, n_in: int, n_out: int, hidden: int, latent_dim: int, codebook_size: int, beta: float):
        super().__init__()
        self.encoder = learned.mlp(n_in, hidden, latent_dim, depth=3)
        self.vq = learned.VectorQuantizer(codebook_size, latent_dim, beta)
        self.decoder = learned.mlp(latent_dim, hidden, n_out, depth=3)

    def forward(self, x: torch.Tensor):
        z = self.encoder(x)  # (M, latent)
        q, idx, vq_loss = self.vq(z)
        return self.decoder(q), idx, vq_loss, z  # (M, n_out), (M,), (), (M, latent)


@register
class VQVAETokenizer(LearnedTokenizer):
    """VQ-VAE on per-particle features; ``context=True`` also feeds the event's HT and multiplicity."""

    kind = "vqvae"
    _HYPER = LearnedTokenizer._HYPER + ("context",)

    def __init__(self, *, context: bool = False, batch_size: int = 512, **kwargs):
        super().__init__(batch_size=batch_size, **kwargs)
        self.context = bool(context)

    def _build_model(self) -> nn.Module:
        n_in = learned.N_PARTICLE_FEATURES + (2 if self.context else 0)
        return ParticleVQVAE(n_in, learned.N_PARTICLE_FEATURES, self.hidden, self.latent_dim, self.codebook_size,
                             self.beta)

    def _prepare(self, flat: FlatParticles) -> dict:
        target = learned.particle_features(flat, self.logpt_mean, self.logpt_std)
        x = np.concatenate([target, learned.event_context(flat)], axis=1) if self.context else target
        device = self.torch_device
        return {"x": torch.from_numpy(x).to(device), "target": torch.from_numpy(target).to(device),
                "event": np.repeat(np.arange(len(flat.counts)), flat.counts)}

    def _n_items(self, data: dict) -> int:
        return len(data["x"])

    def _item_events(self, data: dict) -> np.ndarray:
        return data["event"]

    def _forward(self, data: dict, items: np.ndarray, with_loss: bool = True):
        index = torch.from_numpy(np.asarray(items)).to(data["x"].device)
        out, idx, vq_loss, z = self.model(data["x"][index])
        recon = learned.reconstruction_loss(out, data["target"][index]) if with_loss else None
        return recon, vq_loss, idx, z
