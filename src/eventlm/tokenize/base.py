"""The tokenizer interface and the special token ids (the one place they are defined).

Token id layout of every tokenizer, with ``n_content`` content tokens (particles and MET):

    0                      PAD   padding; masked out of attention, never predicted
    1 .. n_content         content tokens (for the look-up table: particles 1..875, MET 876..885)
    n_content + 1          MASK  marks the hidden particle (masked objective)
    n_content + 2          BOS   start of event (causal objective)
    n_content + 3          EOS   end of event (causal objective)

``vocab_size = n_content + 4``. PAD is 0 so a zero-filled tensor is all padding.

A tokenizer is fitted on background only (``fit``), then ``encode`` turns events into jagged token ids
(one list per event, no padding) and ``decode`` turns token ids back into representative kinematics in
the event model. ``save``/``load`` write JSON (plus a tensor file for learned codebooks) that carries
the tokenizer kind, its parameters and the package version.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import awkward as ak

from eventlm._version import __version__
from eventlm.atomic import write_json
from eventlm.errors import CheckpointMismatchError

PAD = 0


@dataclass(frozen=True)
class SpecialTokens:
    """Special ids for a vocabulary of ``n_content`` content tokens."""

    n_content: int

    @property
    def pad(self) -> int:
        return PAD

    @property
    def mask(self) -> int:
        return self.n_content + 1

    @property
    def bos(self) -> int:
        return self.n_content + 2

    @property
    def eos(self) -> int:
        return self.n_content + 3

    @property
    def vocab_size(self) -> int:
        return self.n_content + 4


#: kind string -> tokenizer class; filled by ``register``.
REGISTRY: dict[str, type[Tokenizer]] = {}


def register(cls):
    REGISTRY[cls.kind] = cls
    return cls


class Tokenizer(abc.ABC):
    """Common interface of the look-up table, VQ-VAE and graph-VQ tokenizers."""

    kind: ClassVar[str]

    #: Number of trailing MET tokens each event carries (0 or 2); they are never truncated.
    n_met_tokens: int = 0

    @property
    @abc.abstractmethod
    def n_content(self) -> int:
        """Number of content token ids (particles and MET), ids 1..n_content."""

    @property
    def special(self) -> SpecialTokens:
        return SpecialTokens(self.n_content)

    @property
    def vocab_size(self) -> int:
        return self.special.vocab_size

    @property
    @abc.abstractmethod
    def is_fitted(self) -> bool: ...

    @abc.abstractmethod
    def fit(self, events: ak.Array, **kwargs) -> Tokenizer:
        """Fit on background events; returns self."""

    @abc.abstractmethod
    def encode(self, events: ak.Array) -> ak.Array:
        """Jagged int64 token ids: ``var * int64``, one list per event (particles, then MET tokens)."""

    @abc.abstractmethod
    def decode(self, tokens: ak.Array) -> ak.Array:
        """Representative kinematics of each token, as particles (and MET) in the event model."""

    @abc.abstractmethod
    def get_params(self) -> dict:
        """JSON-serializable parameters and fitted state (everything but tensors)."""

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: dict, directory: Path | None = None) -> Tokenizer: ...

    def fingerprint(self) -> str:
        """Short hash of the kind and the fitted parameters (and weights, for learned tokenizers).

        A checkpoint stores it beside the tokenizer so a model is never paired with another tokenizer.
        """
        blob = json.dumps({"kind": self.kind, "params": self.get_params()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_compatible(self, *, vocab_size: int | None = None, fingerprint: str | None = None,
                         kind: str | None = None) -> None:
        """Raise :class:`CheckpointMismatchError` unless this tokenizer matches what a model expects."""
        if kind is not None and kind != self.kind:
            raise CheckpointMismatchError(f"tokenizer is {self.kind!r}, the model expects {kind!r}")
        if vocab_size is not None and vocab_size != self.vocab_size:
            raise CheckpointMismatchError(
                f"tokenizer has vocab_size {self.vocab_size}, the model was built for {vocab_size}"
            )
        if fingerprint is not None and fingerprint != self.fingerprint():
            raise CheckpointMismatchError(
                f"tokenizer fingerprint {self.fingerprint()} differs from the model's {fingerprint}: "
                "the model was trained with another tokenizer (other bins or weights)"
            )

    def save(self, path) -> Path:
        """Write ``path`` (JSON; learned tokenizers add tensor files beside it). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"kind": self.kind, "eventlm_version": __version__, "params": self.get_params()}
        self._save_tensors(path)
        return write_json(path, payload)

    def _save_tensors(self, path: Path) -> None:  # overridden by learned tokenizers
        pass


def load_tokenizer(
    path,
    *,
    expected_kind: str | None = None,
    check_version: bool = True,
    expected_vocab_size: int | None = None,
    expected_fingerprint: str | None = None,
) -> Tokenizer:
    """Load a tokenizer saved by :meth:`Tokenizer.save`.

    Raises :class:`CheckpointMismatchError` if the file was written by another package version (unless
    ``check_version=False``), is not of ``expected_kind``, or (when given) does not have
    ``expected_vocab_size`` / ``expected_fingerprint`` (see :meth:`Tokenizer.fingerprint`).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointMismatchError(f"{path}: not a tokenizer file ({err})") from None
    kind = payload.get("kind")
    if kind not in REGISTRY:
        import_tokenizer_module(kind)
    if kind not in REGISTRY:
        raise CheckpointMismatchError(f"{path}: unknown tokenizer kind {kind!r}")
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointMismatchError(f"{path}: tokenizer is {kind!r}, expected {expected_kind!r}")
    version = payload.get("eventlm_version")
    if check_version and version != __version__:
        raise CheckpointMismatchError(
            f"{path}: tokenizer written by eventlm {version}, this is eventlm {__version__}; "
            "refit it, or pass check_version=False if you know the formats agree"
        )
    try:
        tokenizer = REGISTRY[kind].from_params(payload["params"], directory=path.parent)
    except (KeyError, TypeError) as err:
        raise CheckpointMismatchError(f"{path}: malformed {kind!r} tokenizer parameters ({err!r})") from None
    except (ValueError, CheckpointMismatchError) as err:  # NaN or reversed bin edges, a count that disagrees
        raise CheckpointMismatchError(f"{path}: {err}") from None
    tokenizer.check_compatible(vocab_size=expected_vocab_size, fingerprint=expected_fingerprint)
    return tokenizer


def import_tokenizer_module(kind: str | None = None) -> None:
    """Import the tokenizer modules (only ``kind``'s when it is a known one, so a LUT never pulls torch)."""
    import importlib

    modules = ("lut", "vqvae", "graph")
    for module in (kind,) if kind in modules else modules:
        try:
            importlib.import_module(f"eventlm.tokenize.{module}")
        except ModuleNotFoundError as err:  # a learned tokenizer without torch installed
            if err.name and err.name.startswith("eventlm"):
                raise
