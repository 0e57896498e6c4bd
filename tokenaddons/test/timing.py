"""Timing helpers for tests that compare costs (as ratios, never absolute times)."""
from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator

MB = 1_000_000


def timed(fn: Callable[[], object], runs: int = 1) -> float:
    """The best of `runs` timings of `fn()`, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def ratio(fn: Callable[[], object], baseline: float, limit: float) -> float:
    """`fn()`'s cost over `baseline`, timed again (best of two) if the first
    timing is over `limit`: on a machine shared with other work one timing
    can be unlucky, a pattern that really is too slow stays too slow."""
    cost = timed(fn)
    if cost / baseline >= limit:
        cost = min(cost, timed(fn))
    return cost / baseline


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail at once past `seconds` (main thread only): a pattern quadratic in
    its input would run for hours on 1 MB, and Python's regex engine checks for
    signals as it goes."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds:.1f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def repeat(piece: str, size: int = MB) -> str:
    """`piece` over and over, `size` characters."""
    return (piece * (size // len(piece) + 1))[:size]
