"""An injectable clock for addons and engines that take one."""
from __future__ import annotations


class Clock:
    """Injected time for addons that take a `clock`."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
