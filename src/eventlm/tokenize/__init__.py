"""Tokenizers: events -> jagged token ids. See :mod:`eventlm.tokenize.base` for the id layout.

- ``lut``: the look-up table of the paper (pure awkward/numpy, no torch)
- ``vqvae``: VQ-VAE on per-particle features (torch)
- ``graph``: graph-attention encoder + vector quantization (torch)
"""

from __future__ import annotations

import importlib

from eventlm.tokenize.base import PAD, REGISTRY, SpecialTokens, Tokenizer, load_tokenizer

__all__ = ["PAD", "SpecialTokens", "Tokenizer", "get_tokenizer", "load_tokenizer"]

#: kind -> module that defines it (imported on demand so the look-up table never imports torch).
KINDS = {"lut": "lut", "vqvae": "vqvae", "graph": "graph"}


def get_tokenizer(kind: str, **params) -> Tokenizer:
    """A new, unfitted tokenizer of ``kind`` ('lut', 'vqvae' or 'graph') with ``params``."""
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer {kind!r}; choose from {sorted(KINDS)}")
    importlib.import_module(f"eventlm.tokenize.{KINDS[kind]}")
    return REGISTRY[kind](**params)
