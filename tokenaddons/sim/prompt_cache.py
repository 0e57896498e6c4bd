"""Provider prompt-caching semantics, as the real APIs report them.

Anthropic: explicit `cache_control` breakpoints over tools -> system -> messages;
a prefix up to a breakpoint is cacheable from a minimum length; a prefix seen
within its TTL (5 minutes, or 1 hour) is read, the rest up to the last
breakpoint is written; reads refresh the TTL.
OpenAI: automatic prefix caching from 1024 tokens, in 128-token steps.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

TTL = {"5m": 300.0, "1h": 3600.0}


@dataclass
class AnthropicCacheResult:
    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


class PromptCache:
    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self._seen: dict[str, float] = {}  # prefix hash -> expiry
        self._lock = threading.Lock()

    def _alive(self, key: str, now: float) -> bool:
        exp = self._seen.get(key)
        return exp is not None and exp > now

    def anthropic(self, model: str, blocks: list[tuple[str, int, str | None]]) -> AnthropicCacheResult:
        """`blocks`: (canonical json, tokens, breakpoint ttl or None) in prompt order."""
        minimum = 2048 if "haiku" in model else 1024
        h = hashlib.sha256(model.encode())
        cumulative = 0
        points = []  # (hash, prefix tokens, ttl)
        for text, n, ttl in blocks:
            h.update(text.encode())
            cumulative += n
            if ttl is not None and cumulative >= minimum:
                points.append((h.copy().hexdigest(), cumulative, ttl))
        result = AnthropicCacheResult()
        if not points:
            return result
        now = self.clock()
        with self._lock:
            read_upto = -1
            for i, (key, _, _) in enumerate(points):
                if self._alive(key, now):
                    read_upto = i
            start = 0
            if read_upto >= 0:
                result.read = points[read_upto][1]
                start = points[read_upto][1]
            for _, prefix, ttl in points[read_upto + 1:]:
                segment = prefix - start
                if ttl == "1h":
                    result.write_1h += segment
                else:
                    result.write_5m += segment
                start = prefix
            for key, _, ttl in points:  # reads refresh, writes store
                self._seen[key] = max(self._seen.get(key, 0), now + TTL[ttl])
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
