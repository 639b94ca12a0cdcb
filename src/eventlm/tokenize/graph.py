"""Graph-VQ tokenizer: graph-attention layers over each event's particles, then vector quantization.

The particles of an event (token order and truncation of the look-up table) are the nodes of a graph
whose edges join each particle to its ``k`` nearest neighbours in (eta, phi) (itself included;
``k=None`` connects all). Each :class:`GraphAttentionLayer` is a GATv2-style multi-head attention:

    e_ij^h = a_h . LeakyReLU(W_q h_i + W_k h_j + W_e x_ij)       over edges j -> i only
    h_i   <- LayerNorm(h_i + W_o concat_h sum_j softmax_j(e_ij^h) W_v h_j), then a feed-forward block

with edge features ``x_ij = (Delta eta, Delta phi, Delta R, log pT_j / pT_i)``. The node embeddings are
projected to a latent, quantized by the shared :class:`~eventlm.tokenize.learned.VectorQuantizer`, and a
per-token MLP decoder reconstructs from the code alone the particle (category, pT, eta, phi) *and* its
context in the event (the event's log HT and multiplicity, and the Delta R to the particle's nearest
neighbour). Trained self-supervised on background, each token therefore carries event context.
Batches are padded to the largest event of the batch with a mask; padding never enters attention.

Ids, MET tokens, decoding, saving: as the VQ-VAE (:mod:`eventlm.tokenize.vqvae`): codes ``1..K``,
then MET and MET-phi bins.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eventlm.tokenize.base import register
from eventlm.tokenize.particles import FlatParticles
from eventlm.tokenize.learned import (
    N_PARTICLE_FEATURES,
    LearnedTokenizer,
    VectorQuantizer,
    event_context,
    mlp,
    particle_features,
    reconstruction_loss,
)

N_EDGE_FEATURES = 4
N_CONTEXT_TARGETS = 3
MAX_DR = 4.0


def edge_features(kin: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) [eta, phi, log pT] -> (B, N, N, 4) [deta, dphi, dR, log pT_j/pT_i], i = receiver."""
    deta = kin[:, None, :, 0] - kin[:, :, None, 0]  # (B, N_i, N_j)
    dphi = torch.remainder(kin[:, None, :, 1] - kin[:, :, None, 1] + torch.pi, 2 * torch.pi) - torch.pi
    dr = torch.sqrt(deta * deta + dphi * dphi)
    dlogpt = kin[:, None, :, 2] - kin[:, :, None, 2]
    return torch.stack([deta, dphi, dr, dlogpt], dim=-1)


def knn_adjacency(dr: torch.Tensor, mask: torch.Tensor, k: int | None) -> torch.Tensor:
    """(B, N, N) bool: j is one of the ``k`` nearest valid particles of i in Delta R (self included)."""
    valid = mask[:, :, None] & mask[:, None, :]  # (B, N, N)
    n = dr.shape[-1]
    if k is None or k >= n:
        return valid
    far = torch.where(valid, dr, torch.full_like(dr, float("inf")))
    nearest = far.topk(k, dim=-1, largest=False).indices  # (B, N, k)
    adj = torch.zeros_like(valid)
    adj.scatter_(-1, nearest, True)
    return adj & valid


class GraphAttentionLayer(nn.Module):
    """Multi-head GATv2 attention restricted to graph edges, with edge features; residual + FFN."""

    def __init__(self, dim: int, heads: int = 4, edge_dim: int = N_EDGE_FEATURES):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        self.w_q = nn.Linear(dim, dim)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_e = nn.Linear(edge_dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim)
        self.attn = nn.Parameter(torch.randn(heads, self.head_dim) / self.head_dim**0.5)
        self.w_o = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h: torch.Tensor, edges: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        B, N, D = h.shape
        H, Dh = self.heads, self.head_dim
        q = self.w_q(h).view(B, N, 1, H, Dh)  # receiver i
        k = self.w_k(h).view(B, 1, N, H, Dh)  # sender j
        e = self.w_e(edges).view(B, N, N, H, Dh)
        logits = (F.leaky_relu(q + k + e, 0.2) * self.attn).sum(-1)  # (B, N_i, N_j, H)
        logits = logits.masked_fill(~adj[..., None], float("-inf"))
        alpha = torch.softmax(logits, dim=2)
        alpha = torch.nan_to_num(alpha, nan=0.0)  # padded rows have no edges at all
        v = self.w_v(h).view(B, 1, N, H, Dh)
        message = (alpha[..., None] * v).sum(2).reshape(B, N, D)  # (B, N_i, D)
        h = self.norm1(h + self.w_o(message))
        return self.norm2(h + self.ffn(h))


class GraphVQModel(nn.Module):
    def __init__(self, n_in: int, n_out: int, hidden: int, latent_dim: int, codebook_size: int, beta: float,
                 layers: int, heads: int, k: int | None):
        super().__init__()
        self.k = k
        self.embed = mlp(n_in, hidden, hidden, depth=1)
        self.layers = nn.ModuleList(GraphAttentionLayer(hidden, heads) for _ in range(layers))
        self.to_latent = nn.Linear(hidden, latent_dim)
        self.vq = VectorQuantizer(codebook_size, latent_dim, beta)
        self.decoder = mlp(latent_dim, hidden, n_out, depth=3)

    def forward(self, x: torch.Tensor, kin: torch.Tensor, mask: torch.Tensor):
        """x (B, N, F), kin (B, N, 3), mask (B, N) -> per valid particle (row-major): out, idx, loss, z."""
        edges = edge_features(kin)  # (B, N, N, 4)
        adj = knn_adjacency(edges[..., 2], mask, self.k)
        h = self.embed(x)  # (B, N, hidden)
        for layer in self.layers:
            h = layer(h, edges, adj)
        z = self.to_latent(h[mask])  # (M, latent), M valid particles
        q, idx, vq_loss = self.vq(z)
        return self.decoder(q), idx, vq_loss, z


def context_targets(flat: FlatParticles) -> np.ndarray:
    """(P, 3): event log-HT and multiplicity (scaled), and Delta R to the nearest other particle / 4."""
    ctx = event_context(flat)
    n = len(flat.pt)
    nearest = np.full(n, MAX_DR)
    offsets = flat.offsets
    # vectorized over all pairs inside events: for each particle, pair with every particle of its event
    sizes = flat.counts[np.repeat(np.arange(len(flat.counts)), flat.counts)]
    i = np.repeat(np.arange(n), sizes)
    start = offsets[:-1][np.repeat(np.arange(len(flat.counts)), flat.counts)]
    j = (np.arange(len(i)) - np.repeat(np.cumsum(sizes) - sizes, sizes)) + np.repeat(start, sizes)
    other = i != j
    i, j = i[other], j[other]
    dphi = np.mod(flat.phi[i] - flat.phi[j] + np.pi, 2 * np.pi) - np.pi
    dr = np.sqrt((flat.eta[i] - flat.eta[j]) ** 2 + dphi**2)
    np.minimum.at(nearest, i, np.minimum(dr, MAX_DR))
    return np.concatenate([ctx, (nearest / MAX_DR)[:, None]], axis=1).astype(np.float32)


@register
class GraphVQTokenizer(LearnedTokenizer):
    """Graph attention over (eta, phi) kNN graphs + VQ; tokens carry event context."""

    kind = "graph"
    _HYPER = LearnedTokenizer._HYPER + ("layers", "heads", "k")

    def __init__(self, *, layers: int = 2, heads: int = 4, k: int | None = 8, hidden: int = 64,
                 batch_size: int = 128, **kwargs):
        super().__init__(hidden=hidden, batch_size=batch_size, **kwargs)
        self.layers, self.heads = int(layers), int(heads)
        self.k = None if k is None else int(k)

    def _build_model(self) -> nn.Module:
        return GraphVQModel(N_PARTICLE_FEATURES, N_PARTICLE_FEATURES + N_CONTEXT_TARGETS, self.hidden,
                            self.latent_dim, self.codebook_size, self.beta, self.layers, self.heads, self.k)

    def _prepare(self, flat: FlatParticles) -> dict:
        """Pad every event to the largest one (at most max_particles) once; batches trim further."""
        x = particle_features(flat, self.logpt_mean, self.logpt_std)
        target = np.concatenate([x, context_targets(flat)], axis=1)
        kin = np.stack([flat.eta, flat.phi, np.log(np.maximum(flat.pt, 1e-3))], axis=1).astype(np.float32)
        n_events = len(flat.counts)
        n_max = max(int(flat.counts.max()) if n_events else 0, 1)
        row = np.repeat(np.arange(n_events), flat.counts)
        col = np.arange(len(flat.pt)) - flat.offsets[:-1][row]

        def pad(a):
            out = np.zeros((n_events, n_max, a.shape[1]), dtype=np.float32)
            out[row, col] = a
            return torch.from_numpy(out)

        mask = np.zeros((n_events, n_max), dtype=bool)
        mask[row, col] = True
        device = self.torch_device
        return {"x": pad(x).to(device), "kin": pad(kin).to(device), "target": pad(target).to(device),
                "mask": torch.from_numpy(mask).to(device), "counts": flat.counts}

    def _n_items(self, data: dict) -> int:
        return len(data["counts"])

    def _item_events(self, data: dict) -> np.ndarray:
        return np.arange(len(data["counts"]))

    def _forward(self, data: dict, items: np.ndarray, with_loss: bool = True):
        items = np.asarray(items)
        n = max(int(data["counts"][items].max()) if len(items) else 1, 1)
        index = torch.from_numpy(items).to(data["x"].device)
        mask = data["mask"][index, :n]  # (B, n)
        out, idx, vq_loss, z = self.model(data["x"][index, :n], data["kin"][index, :n], mask)
        recon = reconstruction_loss(out, data["target"][index, :n][mask]) if with_loss else None
        return recon, vq_loss, idx, z

    def code_kinematics(self) -> dict[str, np.ndarray]:
        kin = super().code_kinematics()
        table = self.code_table()
        kin["nearest_dr"] = table[:, N_PARTICLE_FEATURES + 2] * MAX_DR
        return kin
