"""Provider prompt-caching semantics, as the real APIs report them.

Anthropic: explicit `cache_control` breakpoints over tools -> system -> messages
(at most 4; a top-level `cache_control` puts one on the last cacheable block);
a prefix up to a breakpoint is cached only from the model's minimum length;
at each breakpoint the longest prefix written before is looked for at that
block and the 19 before it (the 20-block lookback), and the longest found
anywhere is read; the rest up to the last breakpoint is written, each segment
at the TTL of the breakpoint that ends it (5 minutes, or 1 hour); reads
refresh the TTL.
OpenAI: automatic prefix caching from 1024 tokens, in 128-token steps.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tokenaddons.engines.cache_hints import anthropic_minimum

TTL = {"5m": 300.0, "1h": 3600.0}
LOOKBACK = 20  # blocks checked for an earlier cache entry at each breakpoint, the breakpoint's own included


@dataclass
class AnthropicCacheResult:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


class PromptCache:
    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._seen: dict[str, float] = {}  # prefix hash -> expiry
        self._ttl: dict[str, float] = {}  # prefix hash -> the TTL it was written with (a read renews it)
        self._lock = threading.Lock()

    def _alive(self, key: str, now: float) -> bool:
        exp = self._seen.get(key)
        return exp is not None and exp > now

    def _keep(self, key: str, now: float, ttl: float) -> None:
        self._ttl[key] = max(self._ttl.get(key, 0.0), ttl) if self._alive(key, now) else ttl
        self._seen[key] = now + self._ttl[key]

    def anthropic(self, model: str, blocks: list[tuple[str, int, str | None]]) -> AnthropicCacheResult:
        """`blocks`: (canonical json, tokens, breakpoint ttl or None) in prompt order."""
        minimum = anthropic_minimum(model)
        h = hashlib.sha256(model.encode())
        prefixes: list[tuple[str, int]] = []  # (hash, tokens) of the prefix ending at each block
        cumulative = 0
        for text, n, _ in blocks:
            h.update(text.encode())
            cumulative += n
            prefixes.append((h.copy().hexdigest(), cumulative))
        # breakpoints whose prefix is long enough to be cached: (block index, ttl)
        points = [(i, ttl) for i, (_, _, ttl) in enumerate(blocks)
                  if ttl is not None and prefixes[i][1] >= minimum]
        result = AnthropicCacheResult()
        if not points:
            return result
        now = self.clock()
        with self._lock:
            read_at = -1  # the block the longest cached prefix ends at
            for i, _ in points:
                for j in range(i, max(-1, i - LOOKBACK), -1):
                    if j <= read_at:
                        break
                    if self._alive(prefixes[j][0], now):
                        read_at = j
                        break
            start = 0
            if read_at >= 0:
                result.read = start = prefixes[read_at][1]
                self._keep(prefixes[read_at][0], now, 0.0)  # a read renews the entry at its own TTL
            for i, ttl in points:
                if i <= read_at:
                    continue
                segment = prefixes[i][1] - start
                if ttl == "1h":
                    result.write_1h += segment
                else:
                    result.write_5m += segment
                start = prefixes[i][1]
            for i, ttl in points:  # writes store, reads renew
                self._keep(prefixes[i][0], now, TTL[ttl])
        return result

    def openai(self, model: str, token_ids: list[int]) -> int:
        """Cached tokens for a prompt: the longest 128-step prefix (>= 1024) seen recently."""
        if len(token_ids) < 1024:
            return 0
        now = self.clock()
        h = hashlib.sha256(model.encode())
        keys = []
        for end in range(128, len(token_ids) + 1, 128):
            h.update(json.dumps(token_ids[end - 128:end]).encode())
            if end >= 1024:
                keys.append((end, h.copy().hexdigest()))
        cached = 0
        with self._lock:
            for end, key in keys:
                if self._alive(key, now):
                    cached = end
            for _, key in keys:
                self._seen[key] = now + TTL["5m"]
        return cached
