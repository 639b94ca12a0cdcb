"""eventlm.runtime: torch's thread count set per block and restored, also when blocks overlap."""

from __future__ import annotations

import threading

import torch

from eventlm.runtime import torch_threads


def _overlap(first: int, second: int, order: str) -> None:
    """Block A (``first`` threads) opens in one thread, block B (``second``) in another while A is
    open; they close in ``order`` ("AB": A first)."""
    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()

    def a():
        with torch_threads(first):
            a_open.set()
            b_open.wait(10)
            if order == "BA":
                b_closed.wait(10)
        a_closed.set()

    b_closed = threading.Event()
    seen_in_b: list[int] = []

    def b():
        a_open.wait(10)
        with torch_threads(second):
            b_open.set()
            if order == "AB":
                a_closed.wait(10)
                seen_in_b.append(torch.get_num_threads())  # A closed: B's setting holds while B is open
        b_closed.set()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen_in_b == ([second] if order == "AB" else [])


def _seen_by_a_new_thread() -> int:
    """torch's thread count as a thread started now sees it (OpenMP keeps one value per thread; a new
    thread starts from the process-wide one that set_num_threads last wrote)."""
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join(10)
    return seen[0]


def test_regression_overlapping_threads_restore_the_thread_count():
    """torch_threads saved and restored a process-wide setting per block: A (1 thread) then B (1 thread)
    overlapping, A closing first, left torch at 1 thread instead of the 3 it had before."""
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        for order in ("AB", "BA"):
            _overlap(1, 2, order)
            assert _seen_by_a_new_thread() == 3, order
        with torch_threads(1):  # nested in one thread: the inner block's exit gives the outer's back
            with torch_threads(2):
                assert torch.get_num_threads() == 2
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3 and _seen_by_a_new_thread() == 3
        with torch_threads(0), torch_threads(2, "cuda"):  # left alone
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(saved)
