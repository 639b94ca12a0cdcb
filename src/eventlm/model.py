"""The event transformer: a small pre-norm encoder over particle tokens, in one file.

One code path serves both objectives:

- ``masked`` (the paper): bidirectional attention; the model sees an event with some particle tokens
  replaced by MASK and predicts the true token at those positions.
- ``causal`` (arXiv:2303.07364): causal attention over ``BOS t1 .. tn``; position i predicts token
  i+1, the last one predicts EOS. The summed log-probability is the event log-likelihood (a second
  anomaly score), and :func:`eventlm.sample.sample_tokens` generates events.

The loss. :func:`token_nll` is the one loss: training takes its mean over a batch's targets
(:func:`eventlm.train.batch_loss`), validation its sum, scoring keeps each term (:mod:`eventlm.score`).
Training and validation compute it fused by default (``forward(..., targets=)``: :func:`head_loss`, the
same sum of :func:`token_nll` terms without the (N, V) logits, and the attention in fewer ops); the
plain path (logits, then :func:`token_nll`) is the reference they are tested against.

Positions. The tokenizer orders an event's particles by kind, then by decreasing pT, and puts the MET
tokens last, so a token's position carries information (its rank) that the model should see. The
default is rotary position embedding (RoPE) on queries and keys: relative positions, no maximum
length, nothing to learn. ``position="learned"`` adds a learned absolute embedding (up to ``max_len``);
``"none"`` makes the model permutation-equivariant.

Padding. ``padding_mask`` (True at real tokens) is the attention key mask; a query may attend to real
keys only. Each query may also attend to itself, so a row that is all padding (a padded query, or an
empty event) has one finite term in its softmax instead of producing NaN; padded outputs are never
used by the losses.

This module never imports awkward: it takes integer tensors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

PAD = 0  # eventlm.tokenize.base.PAD; duplicated so the model has no tokenizer import


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # n_content + 4 (PAD, content tokens, MASK, BOS, EOS)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    bias: bool = True
    position: str = "rotary"  # "rotary" | "learned" | "none"
    max_len: int = 64  # only for position="learned"
    normformer: bool = False  # NormFormer's extra norms: after attention, and inside the MLP
    causal: bool = False  # the causal (next-token) objective instead of the masked one
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if self.position not in ("rotary", "learned", "none"):
            raise ValueError(f"position {self.position!r}: choose rotary, learned or none")
        if self.position == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ValueError("rotary embedding needs an even head dimension")

    @property
    def n_content(self) -> int:
        return self.vocab_size - 4

    @property
    def mask_id(self) -> int:
        return self.n_content + 1

    @property
    def bos_id(self) -> int:
        return self.n_content + 2

    @property
    def eos_id(self) -> int:
        return self.n_content + 3

    def to_dict(self) -> dict:
        return asdict(self)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N,) float32 ``-log p(target)`` of each target under its logits (N, V): the one loss of eventlm."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


#: Rows of the fused head per chunk: one chunk's logits (128 x V float32, 1.4 MB for the default
#: vocabulary) stay in the core's L2 cache through the max, exp, sum and both gradient products.
HEAD_CHUNK = 128


def head_loss(h: torch.Tensor, weight: torch.Tensor, banned: torch.Tensor, targets: torch.Tensor,
              weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_r weights_r * token_nll(h_r @ weight.T with the banned ids at -inf, targets_r)``, a scalar,
    without the (N, V) logits: the same loss as :func:`token_nll` on the head's logits, to float32
    rounding.

    ``h``: (N, C) the final-norm outputs at the target positions; ``weight``: (V, C) the output head;
    ``banned``: (V,) bool, ids never predicted; ``targets``: (N,) int64; ``weights``: (N,) per-target
    weights (None: 1 each, the sum; ``1 / N`` each gives the mean). Gradients flow to ``h`` and
    ``weight`` (not to ``weights``).

    Why: with a 2825-token vocabulary and 64-dim embeddings the head is most of a training step, and
    torch's separate ops (matmul, masked_fill, log_softmax, nll and their backward) each stream the
    (N, V) logits through memory. Here the rows go in chunks of :data:`HEAD_CHUNK` that stay in
    cache, and the gradient (softmax minus one-hot, times the weight) is formed in the forward pass
    from the same exponentials, so the backward pass is two scalings.
    """
    if weights is None:
        weights = torch.ones(len(targets), dtype=torch.float32, device=h.device)
    # the gradient is formed in the forward pass only where one will be asked for (not under no_grad)
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return _HeadLoss.apply(h, weight, banned, targets, weights.detach().float(), need_grad)


class _HeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, banned, targets, weights, need_grad):
        weight_t = weight.t().contiguous()  # (C, V): the layout the (n, C) x (C, V) product runs fastest in
        banned_ids = banned.nonzero().squeeze(1)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        weight32 = weight.float()
        grad_h = torch.empty_like(h, dtype=torch.float32) if need_grad else None
        grad_weight = torch.zeros_like(weight32) if need_grad else None
        chunk = HEAD_CHUNK if h.device.type == "cpu" else 64 * HEAD_CHUNK  # a GPU wants big products
        for start in range(0, len(targets), chunk):
            stop = min(start + chunk, len(targets))
            t, w = targets[start:stop, None], weights[start:stop]
            z = (h[start:stop] @ weight_t).float()  # (n, V) logits (the product in autocast's dtype)
            z.index_fill_(1, banned_ids, float("-inf"))
            z.sub_(z.amax(dim=1, keepdim=True))  # logits - max: exp cannot overflow
            z_target = z.gather(1, t).squeeze(1)  # (n,)
            p = z.exp_()  # (n, V) unnormalised probabilities, in place
            norm = p.sum(dim=1)  # (n,)
            total += (w * (norm.log() - z_target)).sum()  # -log softmax at the targets
            if need_grad:  # d(w * nll)/d logits = w * (softmax - one-hot)
                p.mul_((w / norm)[:, None])
                p.scatter_add_(1, t, -w[:, None])
                torch.mm(p, weight32, out=grad_h[start:stop])  # (n, C)
                grad_weight.addmm_(p.t(), h[start:stop].float())  # (V, C)
        if need_grad:
            ctx.save_for_backward(grad_h.to(h.dtype), grad_weight.to(weight.dtype))
        return total

    @staticmethod
    def backward(ctx, grad):
        grad_h, grad_weight = ctx.saved_tensors
        return grad_h * grad, grad_weight * grad, None, None, None, None


def rotary_tables(T: int, head_dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, (T, 1, hd): the first and second half of a head share angles."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)  # (T, hd/2)
    angles = torch.cat((angles, angles), dim=-1)[:, None, :]  # (T, 1, hd)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, nh, hd); rotate each pair (i, i + hd/2) by its position's angle ("rotate half" form)
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # (B, T, nh, hd)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def rotate_back(y: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`apply_rotary`'s "rotate half": (y1, y2) -> (y2, -y1)."""
    half = y.size(-1) // 2
    return torch.cat((y[..., half:], -y[..., :half]), dim=-1)


class _Attention(torch.autograd.Function):
    """Attention of the fused training path, from the qkv projection to the heads' outputs, with its
    backward written out: the same math as torch's attention on CPU with dropout (rotary q and k, scores
    plus the additive mask, softmax, dropout of the probabilities with ``F.dropout``'s very draws, times
    v), in about half the ops autograd records for it. Events have ~10 tokens, so the cost is the ops'
    count, not their arithmetic: torch's softmax kernel alone costs ~7x the plain ops on rows that short.

    ``qkv``: (B, T, 3C); ``scores_mask``: (B * nh, T, T), 0 or -inf; ``cos``, ``sin``: (T, hd) or
    None. Returns (B, T, C), the heads side by side (as ``c_proj`` reads them).
    """

    @staticmethod
    def forward(ctx, qkv, scores_mask, cos, sin, n_head: int, dropout: float):
        B, T, C3 = qkv.shape
        nh, hd = n_head, C3 // (3 * n_head)
        x = qkv.view(B, T, 3, nh, hd)
        qk = x[:, :, :2].permute(2, 0, 3, 1, 4).contiguous()  # (2, B, nh, T, hd): q and k, rotated together
        if cos is not None:  # (contiguous first: the rotation's ops on the strided view cost ~3x more)
            qk = apply_rotary(qk, cos, sin)
        qk = qk.view(2, B * nh, T, hd)
        q, k = qk[0], qk[1]
        v = x[:, :, 2].transpose(1, 2).reshape(B * nh, T, hd)  # (B*nh, T, hd)
        scale = 1.0 / math.sqrt(hd)
        p = torch.baddbmm(scores_mask, q, k.transpose(1, 2), alpha=scale)  # (B*nh, T, T) scores
        p = p.sub_(p.amax(dim=-1, keepdim=True)).exp_()
        p = p.div_(p.sum(dim=-1, keepdim=True))  # softmax
        noise = None
        if dropout > 0:  # F.dropout on CPU: empty_like(p).bernoulli_(1 - p), / (1 - p), times p
            noise = torch.empty_like(p).bernoulli_(1 - dropout).div_(1 - dropout)
        dropped = p if noise is None else p * noise
        y = torch.bmm(dropped, v)  # (B*nh, T, hd)
        ctx.save_for_backward(q, k, v, p, noise, dropped, cos, sin)
        ctx.shape = (B, T, nh, hd)
        return y.view(B, nh, T, hd).transpose(1, 2).reshape(B, T, nh * hd)

    @staticmethod
    def backward(ctx, grad_y):
        q, k, v, p, noise, dropped, cos, sin = ctx.saved_tensors
        B, T, nh, hd = ctx.shape
        g = grad_y.reshape(B, T, nh, hd).transpose(1, 2).reshape(B * nh, T, hd)
        grad = torch.empty(B, T, 3, nh, hd, dtype=grad_y.dtype, device=grad_y.device)
        grad[:, :, 2] = torch.bmm(dropped.transpose(1, 2), g).view(B, nh, T, hd).transpose(1, 2)  # v
        grad_p = torch.bmm(g, v.transpose(1, 2))  # (B*nh, T, T)
        if noise is not None:
            grad_p.mul_(noise)
        grad_s = grad_p.sub_((grad_p * p).sum(dim=-1, keepdim=True)).mul_(p).mul_(1.0 / math.sqrt(hd))
        grad_qk = torch.empty(2, B * nh, T, hd, dtype=grad_y.dtype, device=grad_y.device)
        torch.bmm(grad_s, k, out=grad_qk[0])
        torch.bmm(grad_s.transpose(1, 2), q, out=grad_qk[1])
        grad_qk = grad_qk.view(2, B, nh, T, hd)
        if cos is not None:  # the transpose of the rotation
            grad_qk = grad_qk * cos + rotate_back(grad_qk * sin)
        grad[:, :, :2] = grad_qk.permute(1, 3, 0, 2, 4)  # (B, T, 2, nh, hd)
        return grad.view(B, T, 3 * nh * hd), None, None, None, None, None


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask, rope):
        """``attn_mask``: (B, 1, T, T) bool, True where a query may attend (torch's attention), or
        (B * nh, T, T) float, 0 or -inf added to the scores (the fused training path, :meth:`_fused`)."""
        if attn_mask.is_floating_point():
            return self._fused(x, attn_mask, rope)
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head)  # (B, T, nh, hd)
        k = k.view(B, T, self.n_head, C // self.n_head)  # (B, T, nh, hd)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, nh, T, hd)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    def _fused(self, x, scores_mask, rope):
        """The same attention as ``forward``'s in fewer ops (:class:`_Attention`), same dropout draws."""
        cos, sin = (None, None) if rope is None else (r[:, 0] for r in rope)  # (T, hd)
        y = _Attention.apply(self.c_attn(x), scores_mask, cos, sin, self.n_head,
                             self.dropout if self.training else 0.0)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.ln_mid = nn.LayerNorm(4 * config.n_embd) if config.normformer else nn.Identity()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.ln_mid(self.gelu(self.c_fc(x)))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_attn = nn.LayerNorm(config.n_embd) if config.normformer else nn.Identity()
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask, rope):
        x = x + self.ln_attn(self.attn(self.ln_1(x), attn_mask, rope))  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class EventTransformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.max_len, config.n_embd) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2 / nanoGPT
        # ids the head may never predict: PAD, MASK, BOS always; EOS only in the causal objective
        banned = torch.zeros(config.vocab_size, dtype=torch.bool)
        banned[[PAD, config.mask_id, config.bos_id]] = True
        banned[config.eos_id] = not config.causal
        self.register_buffer("banned", banned, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def attention_mask(self, padding_mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, T) bool, True where query i may attend to key j."""
        B, T = padding_mask.shape
        allowed = padding_mask[:, None, None, :].expand(B, 1, T, T)  # keys that are real tokens
        if self.config.causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=padding_mask.device).tril()
        # every query may see itself: a row that is all padding stays finite (no NaN from softmax)
        return allowed | torch.eye(T, dtype=torch.bool, device=padding_mask.device)

    def scores_mask(self, padding_mask: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """(B * nh, T, T) float: :meth:`attention_mask` as 0 (may attend) or -inf, added to the
        attention scores of every head (the fused path; built once per batch for all layers)."""
        B, T = padding_mask.shape
        allowed = self.attention_mask(padding_mask).expand(B, self.config.n_head, T, T)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=padding_mask.device)
        return mask.masked_fill_(~allowed, float("-inf")).view(-1, T, T)

    def hidden(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
               fused: bool = False) -> torch.Tensor:
        """(B, T, C): the last block's output (before ``ln_f``), what the head and a classifier read.
        ``fused``: the attention in the fused training path (``SelfAttention._fused``; same values)."""
        B, T = idx.size()
        if padding_mask is None:
            padding_mask = idx != PAD
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            if T > self.config.max_len:
                raise ValueError(f"sequence of {T} tokens is longer than max_len={self.config.max_len}")
            x = x + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        x = self.drop(x)
        rope = None
        if self.config.position == "rotary":
            rope = rotary_tables(T, self.config.n_embd // self.config.n_head, self.config.rope_base, idx.device)
        if fused and idx.device.type == "cpu":  # a GPU's attention kernels need no help
            attn_mask = self.scores_mask(padding_mask, x.dtype)  # (B * nh, T, T)
        else:
            attn_mask = self.attention_mask(padding_mask)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, attn_mask, rope)  # (B, T, C)
        return x

    def forward(self, idx: torch.Tensor, padding_mask: torch.Tensor | None = None, where=None,
                targets: torch.Tensor | None = None, weights: torch.Tensor | None = None):
        """Logits over the vocabulary, or with ``targets`` the loss.

        ``idx``: (B, T) token ids; ``padding_mask``: (B, T) bool, True at real tokens (default
        ``idx != PAD``). ``where``: None for logits at every position, (B, T) (B, T, V); a (B, T) bool
        tensor to compute the head only there, (N, V) in row-major order; or a (B,) int64 tensor of one
        position per row, (B, V).

        ``targets``: (N,) the true token at each selected position (row-major, as the logits would
        be): then the return value is the scalar ``sum_r weights_r * token_nll_r`` (``weights``
        default 1: the sum), computed by :func:`head_loss` without the (N, V) logits.
        """
        B = idx.size(0)
        x = self.hidden(idx, padding_mask, fused=targets is not None)  # (B, T, C)
        if where is not None:
            if where.dtype == torch.bool:
                x = x[where]  # (N, C)
            else:
                x = x[torch.arange(B, device=idx.device), where]  # (B, C)
        if targets is not None:
            return head_loss(self.ln_f(x).reshape(-1, x.size(-1)), self.lm_head.weight, self.banned,
                             targets.reshape(-1), weights)
        logits = self.lm_head(self.ln_f(x))  # (..., V)
        return logits.masked_fill(self.banned, float("-inf"))

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.95), device_type="cpu",
                            fused: bool | None = None):
        """AdamW with weight decay on matrices (>= 2-D) only, as in nanoGPT. ``fused``: torch's fused
        AdamW kernel (default: on CUDA only; on CPU it is 3x faster than the per-parameter loop)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = device_type == "cuda" if fused is None else fused
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
