"""Where torch runs: the device a run asks for, and how many CPU threads it may use.

::

    from eventlm.runtime import resolve_device, torch_threads

    device = resolve_device("auto")        # cuda if torch sees a GPU, else cpu
    with torch_threads(1, device):         # one intra-op thread on CPU; a CUDA run is left alone
        ...

The networks here are small: on CPU one thread per process is faster than several, and on a shared
machine extra intra-op threads spin against other processes (measured: 20 autoencoder epochs on 40k
events take minutes instead of about 30 s). Every torch thread setting in eventlm goes through
:func:`torch_threads`, which restores the previous setting on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["resolve_device", "torch_threads"]


def resolve_device(device=None, *, local_rank: int | None = None):
    """``device`` as a :class:`torch.device`: ``None`` or ``"auto"`` picks CUDA when torch sees a GPU;
    ``"cuda"`` on a machine without one is a one-line :class:`RuntimeError`; ``local_rank`` (a
    distributed run) selects and returns that GPU for ``"cuda"``."""
    import torch

    text = "auto" if device is None else str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {text!r} requested but torch sees no CUDA device")
        if local_rank is not None:
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
    return torch.device(text)


@contextlib.contextmanager
def torch_threads(n: int, device="cpu") -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, then restore the setting. ``n <= 0`` or a CUDA
    ``device`` leaves torch's setting as it is."""
    import torch

    before = torch.get_num_threads()
    change = n > 0 and not str(device).startswith("cuda")
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(before)
