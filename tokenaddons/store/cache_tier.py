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
    """A memory LRU bounded in bytes in front of an SQLite table in the event store's file.

    The event loop reads and fills the memory tier, and `get_disk` runs in a
    worker thread and fills it too: one lock guards the memory tier (each
    step under it is short), another the disk tier's read connection.
    """

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.memory: OrderedDict[str, Entry] = OrderedDict()
        self.memory_bytes = 0
        self.memory_max = 64 << 20
        self.disk_max = 1 << 30
        self._memory_lock = threading.Lock()
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.events: EventStore | None = None
        # key -> size of what is stored on disk, so a miss costs no disk read (nor a
        # thread hop to make it); kept by the writer thread as it inserts and evicts
        self.on_disk: dict[str, int] = {}
        self.disk_bytes = 0

    def open(self, events: EventStore) -> None:
        self.events = events
        events.add_schema("cache_schema", MIGRATIONS)  # at hand already when the Cache addon named it
        self._read = connect(events.path)
        self.on_disk = dict(self._read.execute("SELECT key, size FROM cache_entries").fetchall())
        self.disk_bytes = sum(self.on_disk.values())

    def close(self) -> None:
        with self._read_lock:  # not while a worker thread reads through it
            if self._read:
                self._read.close()
                self._read = None
        self.events = None
        self.on_disk = {}
        self.disk_bytes = 0

    # memory tier
    def _remember(self, key: str, entry: Entry) -> None:
        with self._memory_lock:
            old = self.memory.pop(key, None)
            if old:
                self.memory_bytes -= old.size
            self.memory[key] = entry
            self.memory_bytes += entry.size
            while self.memory_bytes > self.memory_max and self.memory:
                _, evicted = self.memory.popitem(last=False)
                self.memory_bytes -= evicted.size

    def get_memory(self, key: str) -> Entry | None:
        with self._memory_lock:
            entry = self.memory.get(key)
            if entry is None:
                return None
            if entry.expires <= self.clock():
                del self.memory[key]
                self.memory_bytes -= entry.size
                return None
            self.memory.move_to_end(key)
            return entry

    def may_be_on_disk(self, key: str) -> bool:
        return key in self.on_disk

    def get_disk(self, key: str) -> Entry | None:
        """Blocking read: called off the event loop."""
        if key not in self.on_disk:
            return None
        with self._read_lock:
            if self._read is None:
                return None
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
            conn.execute("INSERT OR REPLACE INTO cache_entries VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (key, entry.created, entry.expires, entry.created, entry.content_type, entry.body,
                          entry.model, json.dumps(entry.usage), entry.cost_usd, entry.size))
            self._note(key, entry.size)
            if self.disk_bytes > disk_max:  # full: expired entries go first, then the least recently used
                self._forget(conn.execute("DELETE FROM cache_entries WHERE expires <= ? RETURNING key, size",
                                          (entry.created,)))
            if self.disk_bytes > disk_max:
                self._forget(conn.execute("""DELETE FROM cache_entries WHERE key IN (
                    SELECT key FROM (SELECT key, SUM(size) OVER (ORDER BY last_used DESC) AS running
                                     FROM cache_entries) WHERE running > ?) RETURNING key, size""", (disk_max,)))

        events.submit(write)

    # The writer thread notes what the table holds. The same note twice changes
    # nothing: a job runs again, alone, when its batch failed.
    def _note(self, key: str, size: int) -> None:
        self.disk_bytes += size - self.on_disk.get(key, 0)
        self.on_disk[key] = size

    def _forget(self, deleted) -> None:
        for key, _ in deleted.fetchall():
            self.disk_bytes -= self.on_disk.pop(key, 0)

    def touch(self, key: str) -> None:
        events = self.events
        if events is not None:
            now = self.clock()
            events.submit(lambda conn: conn.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?",
                                                    (now, key)))
