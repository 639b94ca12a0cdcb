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
import threading
from collections.abc import Iterator

__all__ = ["heap_padding", "resolve_device", "torch_threads"]


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


#: The ``torch_threads`` blocks now open in this process, in the order they were entered: torch's thread
#: count is one process-wide setting, so overlapping blocks (scoring from several threads) share it.
_open_blocks: list[list[int]] = []
_lock = threading.Lock()
_before: int | None = None


@contextlib.contextmanager
def torch_threads(n: int, device="cpu") -> Iterator[None]:
    """Run with ``n`` torch intra-op threads, then restore the setting. ``n <= 0`` or a CUDA
    ``device`` leaves torch's setting as it is.

    Safe when blocks overlap, nested or from several threads: the setting before the first open block
    is restored when the last one closes (in any order), and a block that closes while others are open
    leaves the count of the latest one still open.
    """
    import torch

    global _before
    if n <= 0 or str(device).startswith("cuda"):
        yield
        return
    block = [n]  # a fresh object per block: removed by identity, whatever the order of exits
    with _lock:
        if not _open_blocks:
            _before = torch.get_num_threads()
        _open_blocks.append(block)
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            del _open_blocks[next(i for i, b in enumerate(_open_blocks) if b is block)]
            torch.set_num_threads(_open_blocks[-1][0] if _open_blocks else _before)


#: glibc's ``mallopt`` parameter M_TOP_PAD and its default (128 KiB; mallopt(3)).
_M_TOP_PAD, _DEFAULT_TOP_PAD = -2, 128 * 1024


@contextlib.contextmanager
def heap_padding(nbytes: int = 64 * 2**20) -> Iterator[bool]:
    """Keep ``nbytes`` of freed memory at the top of the heap instead of returning it to the system
    (glibc's ``M_TOP_PAD``), then restore the default; yields whether it was set (False off glibc).

    Why: a training step allocates and frees the same few-MB activations hundreds of times; with
    glibc's default padding the heap top is trimmed after each step and the pages fault in again
    (measured: ~3500 page faults and ~6 ms of system time per default-model step, ~7 % of the step).
    """
    libc = _glibc()
    if libc is None or not libc.mallopt(_M_TOP_PAD, int(nbytes)):
        yield False
        return
    try:
        yield True
    finally:
        libc.mallopt(_M_TOP_PAD, _DEFAULT_TOP_PAD)


def _glibc():
    """The C library through ctypes where it is glibc (it has ``mallopt``), else None."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):
        return None
