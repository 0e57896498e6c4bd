"""The event store's writer: one thread, WAL, rows and jobs committed in batches.

Addons never touch SQLite on mitmproxy's event loop: they put rows (or
statements) on a queue, and the writer thread commits them in batches.
Readers (report, stats, budget rebuild) open their own connections.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tokenaddons.store.db import connect
from tokenaddons.store.schema import DECISION_COLUMNS, REQUEST_COLUMNS, migrate

log = logging.getLogger(__name__)

Job = Callable[[sqlite3.Connection], Any]


class EventStore:
    """Owns the writer thread and its queue. Thread-safe `put_*` and `submit`."""

    def __init__(self, path: str | Path, batch_max: int = 500, flush_interval: float = 0.05):
        self.path = Path(path).expanduser()
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self.written = 0  # rows committed, for tests and the stats view

    def start(self) -> None:
        conn = connect(self.path)
        migrate(conn)
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="tokenaddons-store", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def put_request(self, row: dict) -> None:
        self._queue.put(("requests", REQUEST_COLUMNS, row))

    def put_decision(self, row: dict) -> None:
        self._queue.put(("decisions", DECISION_COLUMNS, row))

    def submit(self, job: Job) -> None:
        """Run `job(conn)` on the writer thread, inside its current batch."""
        self._queue.put(job)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued so far is committed."""
        if not self.running:
            return
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        if self.running:
            self._queue.put(None)
            assert self._thread
            self._thread.join(10)
        self._thread = None
        if self._conn:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        conn = self._conn
        assert conn
        stop = False
        while not stop:
            item = self._queue.get()  # idle: wait for work
            batch = [item]
            if not isinstance(item, threading.Event) and item is not None:
                # Let the batch gather without waking on every put: each wake-up of
                # this thread takes the GIL from mitmproxy's event loop.
                time.sleep(self.flush_interval)
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiters = []
            try:
                with conn:
                    for item in batch:
                        if item is None:
                            stop = True
                        elif isinstance(item, threading.Event):
                            waiters.append(item)
                        elif callable(item):
                            self._run_job(conn, item)
                        else:
                            self._insert(conn, *item)
            except sqlite3.Error:
                log.exception("event store: a batch of %d items failed", len(batch))
            for w in waiters:
                w.set()

    def _insert(self, conn: sqlite3.Connection, table: str, columns: Iterable[str], row: dict) -> None:
        cols = [c for c in columns if c in row]
        conn.execute(f"INSERT INTO {table} ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                     [row[c] for c in cols])
        self.written += 1

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: Job) -> None:
        try:
            job(conn)
        except sqlite3.Error:
            log.exception("event store: a job failed")


