"""eventlm: transformer anomaly detection for LHC events (a causal language model of tokenized events by default, or the masked-token model of the paper).

The pipeline, one module (or sub-package) per step, imports going one way::

    io -> tokenize -> batching -> model -> train -> score -> analysis (coffea, hist, plots)

Heavy modules (torch, coffea) are imported lazily, so ``import eventlm`` stays cheap.
"""

from __future__ import annotations

from eventlm._version import __version__
from eventlm.errors import CheckpointMismatchError, EventFormatError, EventlmError, TokenizationError
from eventlm.events import Kind

__all__ = [
    "CheckpointMismatchError",
    "EventFormatError",
    "EventlmError",
    "Kind",
    "TokenizationError",
    "__version__",
    "iter_events",
    "read_events",
    "write_events",
]


def __dir__() -> list[str]:
    """``dir(eventlm)`` lists the lazily imported readers and writers too."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    if name in ("read_events", "iter_events", "write_events"):
        from eventlm import io

        return getattr(io, name)
    raise AttributeError(f"module 'eventlm' has no attribute {name!r}")
