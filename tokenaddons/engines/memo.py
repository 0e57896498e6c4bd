"""Results by content hash: agent requests resend their whole history every
turn, so a text already scanned (for PII, for injections) or already
compressed is looked up instead of worked on again. Thread-safe: scans run in
worker threads."""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


def digest(text: str) -> tuple[int, int]:
    """A text's key in a memo of this process: Python's own string hash (SipHash,
    keyed per process, so nobody can aim for a collision; it runs over the text
    in place, many times faster than encoding it for hashlib) and its length.
    Two different texts share a key with a chance of about 2**-64. Results kept
    across restarts need a stable hash (hashlib's) instead."""
    return hash(text), len(text)


def stable_digest(text: str) -> bytes:
    """A text's key where it must outlive the process (results kept in the
    store): SHA-256 (the CPU's own instructions make it the fastest of
    hashlib's), the first 16 bytes."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


_MISSING = object()

# New text up to this many characters is scanned on the event loop itself
# (a few hundred microseconds at most): a hop to a worker thread and back
# costs about 200 µs of latency, more than scanning a short new turn.
INLINE_CHARS = 512

# Whole request bodies remembered by their bytes' digest, per memo (those guard
# and scrub found clean, what intake read of them, their cache key part).
SEEN_BODIES = 10_000


class Memo(Generic[T]):
    """An LRU of `compute(text)` by the text's key, bounded in entries.

    Lookups take no lock: each OrderedDict operation is atomic under the GIL,
    and a lookup racing an eviction only computes again. That matters: an
    agent request holds dozens of texts, nearly all seen before, looked up by
    several addons on every request."""

    def __init__(self, compute: Callable[[str], T] | None = None, size: int = 50_000):
        self.compute = compute
        self.size = size
        self.items: OrderedDict[Hashable, T] = OrderedDict()

    def __call__(self, text: str) -> T:
        key = (hash(text), len(text))  # digest(), inlined: this is the hot path
        value = self.items.get(key, _MISSING)
        if value is _MISSING:
            return self._store(key, self.compute(text))
        self._touch(key)
        return value

    def peek(self, text: str | bytes) -> T | None:
        """The value remembered for `text`, or None: never computes (what the event
        loop may do without a worker thread)."""
        value = self.items.get((hash(text), len(text)), _MISSING)
        return None if value is _MISSING else value

    def peek_many(self, texts: list[str]) -> list[T | None]:
        """`peek` of each text, in one call: a request holds dozens of texts."""
        get = self.items.get
        return [get((hash(text), len(text))) for text in texts]

    def remember(self, text: str | bytes, value: T) -> T:
        """Keep `value` for `text` (what `peek` finds), computed elsewhere."""
        return self._store((hash(text), len(text)), value)

    def put(self, key: Hashable, value: T) -> T:
        """Keep `value` under `key` (what `get` finds)."""
        return self._store(key, value)

    def get(self, key: Hashable) -> T | None:
        """The value remembered under `key`, or None: never computes."""
        value = self.items.get(key, _MISSING)
        if value is _MISSING:
            return None
        self._touch(key)
        return value

    def lookup(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value remembered under `key`, or `compute()`'s, remembered."""
        value = self.items.get(key, _MISSING)
        if value is _MISSING:
            return self._store(key, compute())
        self._touch(key)
        return value

    def _touch(self, key: Hashable) -> None:
        try:
            self.items.move_to_end(key)
        except KeyError:  # evicted by another thread meanwhile
            pass

    def _store(self, key: Hashable, value: T) -> T:
        items = self.items
        items[key] = value
        while len(items) > self.size:
            try:
                items.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break
        return value

    def __len__(self) -> int:
        return len(self.items)
