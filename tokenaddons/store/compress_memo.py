"""Compress's memo: what each tool output compressed to, by content hash, kept
in the event store's file so history resent after a restart or an upgrade
compresses to the bytes it had (the provider has those bytes cached).

Rows are written through the event store's writer thread; the recent ones are
read back when the store opens, into a memory map bounded in bytes, and one
not in memory is looked for on disk before anything is computed anew.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

from tokenaddons.store.db import connect
from tokenaddons.store.schema import migrate
from tokenaddons.store.writer import EventStore

log = logging.getLogger(__name__)

MIGRATIONS = [
    """
    CREATE TABLE compress_memo (
        key BLOB PRIMARY KEY, version INTEGER NOT NULL, output TEXT, before INTEGER NOT NULL,
        after INTEGER NOT NULL, saved TEXT NOT NULL, last_used REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX compress_memo_last_used ON compress_memo(last_used);
    """,
]
COLUMNS = "key, version, output, before, after, saved, last_used"
RETENTION_S = 7 * 86400  # a block unseen this long belongs to a conversation long gone from any provider cache
TOUCH_S = 3600  # how stale last_used may get before a hit writes it again


@dataclass
class Entry:
    version: int  # of the transforms that produced it
    output: str | None  # None: sent unchanged
    before: int  # tokens
    after: int
    saved: dict[str, int] = field(default_factory=dict)  # tokens each step removed
    last_used: float = 0.0

    @property
    def size(self) -> int:
        return len(self.output or "") + 128


def _entry(row) -> Entry:
    return Entry(row[1], row[2], row[3], row[4], json.loads(row[5]), row[6])


class CompressMemo:
    """Entries by key (a content hash): a memory LRU bounded in bytes, every
    entry also written to the event store, the recent ones read back on open."""

    def __init__(self, clock: Callable[[], float], max_bytes: int = 128 << 20):
        self.clock = clock
        self.max_bytes = max_bytes
        self.items: OrderedDict[bytes, Entry] = OrderedDict()
        self.bytes = 0
        self.events: EventStore | None = None
        self._lock = threading.Lock()
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    def open(self, events: EventStore) -> None:
        """Bring the table up to date, forget entries past retention, read the rest."""
        self.close()
        self.events = events
        cutoff = self.clock() - RETENTION_S

        def prepare(conn: sqlite3.Connection) -> None:
            migrate(conn, MIGRATIONS, version_table="compress_schema")
            conn.execute("DELETE FROM compress_memo WHERE last_used < ?", (cutoff,))

        events.submit(prepare)
        events.flush()
        loaded = 0
        try:
            with closing(connect(events.path, readonly=True)) as conn:
                rows = conn.execute(f"SELECT {COLUMNS} FROM compress_memo WHERE last_used >= ? ORDER BY last_used",
                                    (cutoff,))
                for row in rows:  # oldest first: the newest end up most recently used
                    self._remember(bytes(row[0]), _entry(row))
                    loaded += 1
            self._read = connect(events.path, readonly=True)
        except sqlite3.Error as e:
            log.warning("tokenaddons compress: earlier results could not be read (%s); history already sent may "
                        "be compressed anew", e)
        if loaded:
            log.info("tokenaddons compress: %d earlier results loaded", loaded)

    def close(self) -> None:
        self.events = None
        if self._read is not None:
            self._read.close()
            self._read = None

    def get_disk(self, key: bytes) -> Entry | None:
        """An entry no longer in memory, from the store (blocking: off the event loop)."""
        if self._read is None:
            return None
        try:
            with self._read_lock:
                row = self._read.execute(f"SELECT {COLUMNS} FROM compress_memo WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        entry = _entry(row)
        self._remember(key, entry)
        return entry

    def _remember(self, key: bytes, entry: Entry) -> None:
        with self._lock:
            old = self.items.pop(key, None)
            if old is not None:
                self.bytes -= old.size
            self.items[key] = entry
            self.bytes += entry.size
            while self.bytes > self.max_bytes and self.items:
                _, gone = self.items.popitem(last=False)
                self.bytes -= gone.size

    def get(self, key: bytes) -> Entry | None:
        return self.get_many([key])[0]

    def get_many(self, keys: list[bytes]) -> list[Entry | None]:
        """The entries of `keys` (None where none is kept), in one hold of the
        lock: a request looks up all its outputs at once."""
        with self._lock:
            found = [self.items.get(key) for key in keys]
            for key, entry in zip(keys, found):
                if entry is not None:
                    self.items.move_to_end(key)
        now = None
        for key, entry in zip(keys, found):
            if entry is not None and self.events is not None:
                now = self.clock() if now is None else now
                if now - entry.last_used > TOUCH_S:
                    entry.last_used = now
                    self._touch(key, now)
        return found

    def _touch(self, key: bytes, now: float) -> None:
        self.events.submit(lambda conn: conn.execute(
            "UPDATE compress_memo SET last_used = ? WHERE key = ?", (now, key)))

    def put(self, key: bytes, entry: Entry) -> Entry:
        """Keep `entry` unless one is already kept for `key` (a twin computed at
        the same time: what was sent first stays); returns the one kept."""
        with self._lock:
            kept = self.items.get(key)
        if kept is not None:
            return kept
        entry.last_used = self.clock()
        self._remember(key, entry)
        if self.events is not None:
            row = (key, entry.version, entry.output, entry.before, entry.after, json.dumps(entry.saved),
                   entry.last_used)
            self.events.submit(lambda conn: conn.execute(
                "INSERT OR IGNORE INTO compress_memo VALUES (?,?,?,?,?,?,?)", row))
        return entry

    def __len__(self) -> int:
        return len(self.items)
