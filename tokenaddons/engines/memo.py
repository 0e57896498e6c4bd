"""Results by content hash: agent requests resend their whole history every
turn, so a text already scanned (for PII, for injections) or already
compressed is looked up instead of worked on again. Thread-safe: scans run in
worker threads."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Memo(Generic[T]):
    """An LRU of `compute(text)` by the text's hash, bounded in entries."""

    def __init__(self, compute: Callable[[str], T], size: int = 50_000):
        self.compute = compute
        self.size = size
        self.items: OrderedDict[bytes, T] = OrderedDict()
        self.lock = threading.Lock()

    def __call__(self, text: str) -> T:
        key = digest(text)
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = self.compute(text)  # outside the lock: two threads may both compute a new text, harmlessly
        with self.lock:
            self.items[key] = value
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self.items)
