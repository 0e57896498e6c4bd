"""The response cache's storage: a memory LRU bounded in bytes in front of an
SQLite table kept in the event store's file."""
from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tokenaddons.store.db import connect
from tokenaddons.store.schema import migrate
from tokenaddons.store.writer import EventStore

MIGRATIONS = [
    """
    CREATE TABLE cache_entries (
        key TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL, last_used REAL NOT NULL,
        content_type TEXT, body BLOB NOT NULL, model TEXT, usage TEXT, cost_usd REAL, size INTEGER NOT NULL
    );
    CREATE INDEX cache_entries_last_used ON cache_entries(last_used);
    """,
]


@dataclass
class Entry:
    body: bytes
    content_type: str
    created: float
    expires: float
    model: str | None
    usage: dict
    cost_usd: float | None

    @property
    def size(self) -> int:
        return len(self.body) + 256


class Tiers:
    """A memory LRU bounded in bytes in front of an SQLite table in the event store's file."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.memory: OrderedDict[str, Entry] = OrderedDict()
        self.memory_bytes = 0
        self.memory_max = 64 << 20
        self.disk_max = 1 << 30
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.events: EventStore | None = None
        # keys stored on disk, so a miss costs no disk read (nor a thread hop to make it);
        # kept by the writer thread as it inserts and evicts
        self.on_disk: set[str] = set()
        self.disk_bytes = 0

    def open(self, events: EventStore) -> None:
        self.events = events
        conn = connect(events.path)
        migrate(conn, MIGRATIONS, version_table="cache_schema")
        self.on_disk = {key for (key,) in conn.execute("SELECT key FROM cache_entries")}
        self.disk_bytes = conn.execute("SELECT COALESCE(SUM(size), 0) FROM cache_entries").fetchone()[0]
        conn.close()
        self._read = connect(events.path)

    def close(self) -> None:
        if self._read:
            self._read.close()
            self._read = None
        self.events = None
        self.on_disk = set()
        self.disk_bytes = 0

    # memory tier
    def _remember(self, key: str, entry: Entry) -> None:
        old = self.memory.pop(key, None)
        if old:
            self.memory_bytes -= old.size
        self.memory[key] = entry
        self.memory_bytes += entry.size
        while self.memory_bytes > self.memory_max and self.memory:
            _, evicted = self.memory.popitem(last=False)
            self.memory_bytes -= evicted.size

    def get_memory(self, key: str) -> Entry | None:
        entry = self.memory.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self.memory.pop(key)
            self.memory_bytes -= entry.size
            return None
        self.memory.move_to_end(key)
        return entry

    def may_be_on_disk(self, key: str) -> bool:
        return key in self.on_disk

    def get_disk(self, key: str) -> Entry | None:
        """Blocking read: called off the event loop."""
        if self._read is None or key not in self.on_disk:
            return None
        with self._read_lock:
            row = self._read.execute("SELECT * FROM cache_entries WHERE key = ?", (key,)).fetchone()
        if row is None or row["expires"] <= self.clock():
            return None
        entry = Entry(row["body"], row["content_type"], row["created"], row["expires"], row["model"],
                      json.loads(row["usage"] or "{}"), row["cost_usd"])
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)
        events = self.events
        if events is None:
            return
        disk_max = self.disk_max

        def write(conn: sqlite3.Connection) -> None:
            old = conn.execute("SELECT size FROM cache_entries WHERE key = ?", (key,)).fetchone()
            conn.execute("INSERT OR REPLACE INTO cache_entries VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (key, entry.created, entry.expires, entry.created, entry.content_type, entry.body,
                          entry.model, json.dumps(entry.usage), entry.cost_usd, entry.size))
            self.on_disk.add(key)
            self.disk_bytes += entry.size - (old[0] if old else 0)
            if self.disk_bytes > disk_max:  # full: expired entries go first, then the least recently used
                self._forget(conn.execute("DELETE FROM cache_entries WHERE expires <= ? RETURNING key, size",
                                          (entry.created,)))
            if self.disk_bytes > disk_max:
                self._forget(conn.execute("""DELETE FROM cache_entries WHERE key IN (
                    SELECT key FROM (SELECT key, SUM(size) OVER (ORDER BY last_used DESC) AS running
                                     FROM cache_entries) WHERE running > ?) RETURNING key, size""", (disk_max,)))

        events.submit(write)

    def _forget(self, deleted) -> None:
        for key, size in deleted.fetchall():
            self.on_disk.discard(key)
            self.disk_bytes -= size

    def touch(self, key: str) -> None:
        events = self.events
        if events is not None:
            now = self.clock()
            events.submit(lambda conn: conn.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?",
                                                    (now, key)))
