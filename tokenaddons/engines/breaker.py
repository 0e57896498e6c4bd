"""Circuit breakers, one per provider and model: after `failures` consecutive
failures a target is left alone for `open_s` seconds (traffic goes straight to
its fallbacks), then one request probes it (half-open); a good answer closes
it, a failure opens it again."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0  # 0: closed
    probing_since: float | None = None  # a half-open probe is in flight


class Breakers:
    def __init__(self, failures: int = 5, open_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self.states: dict[str, _State] = {}

    def state(self, key: str) -> str:
        s = self.states.get(key)
        if s is None or not s.open_until:
            return "closed"
        return "open" if self.clock() < s.open_until else "half-open"

    def allow(self, key: str) -> bool:
        """May a request go to `key` now? A half-open breaker lets one probe
        through (a probe that never reports is given up after open_s)."""
        s = self.states.get(key)
        if s is None or not s.open_until:
            return True
        now = self.clock()
        if now < s.open_until:
            return False
        if s.probing_since is not None and now - s.probing_since < self.open_s:
            return False
        s.probing_since = now
        return True

    def retry_in(self, key: str) -> float:
        """Seconds until `key` may be tried again (0: now)."""
        s = self.states.get(key)
        return max(0.0, s.open_until - self.clock()) if s is not None and s.open_until else 0.0

    def success(self, key: str) -> None:
        self.states.pop(key, None)

    def failure(self, key: str) -> bool:
        """Count a failure; True when it opened (or reopened) the breaker."""
        s = self.states.setdefault(key, _State())
        s.failures += 1
        if s.probing_since is not None or (not s.open_until and s.failures >= self.failures):
            s.open_until = self.clock() + self.open_s
            s.probing_since = None
            return True
        return False
