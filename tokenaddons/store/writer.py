"""The event store's writer: one thread, WAL, rows and jobs committed in batches.

Addons never touch SQLite on mitmproxy's event loop: they put rows (or
statements) on a queue, and the writer thread commits them in batches, one
every `flush_interval` at most while rows come in (`store_batch_s`; a `flush`
or `close` does not wait for it). Each commit writes the pages it touched (the
rollups', the indexes' last pages) to the WAL again, and each wake-up of the
thread takes the GIL from mitmproxy's event loop: a quarter second's batch
costs the writer a quarter less CPU per exchange than a 50 ms one
(benchmarks/bench_hotpath.py, "other threads").
Readers (report, stats, budget rebuild) open their own connections.

Nothing one exchange holds may cost another its row: values SQLite cannot
bind are coerced, a batch that fails is written again one item at a time (so
only an item that fails on its own is dropped, with a warning naming it), and
no error in a job stops the thread. Should it stop or hang anyway, a watchdog
logs an error and tells the readers (store/health.py).
"""
from __future__ import annotations

import datetime
import decimal
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tokenaddons.store import health
from tokenaddons.store.db import connect
from tokenaddons.store.schema import DECISION_COLUMNS, REQUEST_COLUMNS, migrate

log = logging.getLogger(__name__)

Job = Callable[[sqlite3.Connection], Any]

MAX_TEXT = 2000  # characters kept of a value stored as its JSON text
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# the database is busy (another process writes): the batch waits, it is not the rows' fault
BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
WARNINGS_PER_BATCH = 10  # dropped items named one by one, then counted
FLUSH_INTERVAL = 0.25  # seconds a batch gathers (store_batch_s)


def coerce(value: Any) -> Any:
    """A value SQLite can bind: None, strings, floats, bytes and 64-bit
    integers stay as they are; anything else (a model name that is a list, an
    error type that is an object, an integer past 64 bits) is stored as its
    JSON text, truncated. A decimal is stored as a number, a date or time as
    its ISO text, a UUID or a duration as its text."""
    if value is None or isinstance(value, (str, float, bytes)):
        return value
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:  # bools too
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetimes too
        value = value.isoformat()
    elif isinstance(value, (datetime.timedelta, uuid.UUID)):
        value = str(value)
    else:
        try:
            value = json.dumps(value, default=repr, ensure_ascii=False)
        except (TypeError, ValueError):  # a circular container
            value = repr(value)
    return value[:MAX_TEXT]


_BOUND_AS_IS = frozenset((str, float, type(None)))


def bindable(values: Iterable[Any]) -> list:
    """`coerce` of each value, with the common ones (text, floats, NULL, 64-bit
    integers) taken as they are without a call: this runs for every column of
    every row."""
    return [v if type(v) in _BOUND_AS_IS or (type(v) is int and INT64_MIN <= v <= INT64_MAX) else coerce(v)
            for v in values]


@functools.lru_cache(maxsize=256)
def insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({','.join(columns)}) VALUES ({','.join('?' * len(columns))})"


@functools.lru_cache(maxsize=16)
def _column_set(columns: tuple[str, ...]) -> frozenset[str]:
    return frozenset(columns)


def _busy(e: Exception) -> bool:
    return isinstance(e, sqlite3.OperationalError) and getattr(e, "sqlite_errorcode", None) in BUSY


class EventStore:
    """Owns the writer thread and its queue. Thread-safe `put_*` and `submit`.

    `schemas` maps a version table to the migrations of tables other addons
    keep in the same file; they run with the event schema before the writer
    starts, never inside one of its batches (a migration commits).
    """

    def __init__(self, path: str | Path, batch_max: int = 500, flush_interval: float = FLUSH_INTERVAL,
                 schemas: dict[str, list[str]] | None = None, stall_after: float = 30.0,
                 watch_every: float = 1.0, busy_pause: float = 1.0):
        self.path = Path(path).expanduser()
        self.batch_max = batch_max
        self.flush_interval = flush_interval
        self.schemas = dict(schemas or {})
        self.stall_after = stall_after  # seconds in one batch before the writer counts as stuck
        self.watch_every = watch_every
        self.busy_pause = busy_pause
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        self._hurry = threading.Event()  # a flush or close waits: the batch gathering now is written at once
        self._conn: sqlite3.Connection | None = None
        self.written = 0  # rows committed, for tests and the stats view
        self.dropped = 0  # items that failed on their own and were dropped
        self.busy_since: float | None = None  # monotonic start of the batch being written
        self.in_batch = 0  # items of that batch
        self.failure: str | None = None  # why the writer thread stopped (it should never)
        self.failed_at: float | None = None
        self.state = "ok"  # ok | stuck | dead, as the watchdog last saw it

    def start(self) -> None:
        conn = connect(self.path)
        try:
            migrate(conn)
            for table, migrations in self.schemas.items():
                migrate(conn, migrations, version_table=table)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name="tokenaddons-store", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="tokenaddons-store-watchdog", daemon=True)
        self._watchdog.start()

    def add_schema(self, version_table: str, migrations: list[str]) -> None:
        """Tables of another addon in this file. Once the writer runs, they are
        migrated at once on a connection of their own, outside its batches."""
        if self.schemas.get(version_table) is migrations and self._thread is not None:
            return
        self.schemas[version_table] = migrations
        if self._thread is not None:
            conn = connect(self.path)
            try:
                migrate(conn, migrations, version_table=version_table)
            finally:
                conn.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Items not yet committed: waiting in the queue or in the batch being written."""
        return self._queue.qsize() + self.in_batch

    def put_request(self, row: dict) -> None:
        self._queue.put(("requests", REQUEST_COLUMNS, row))

    def put_decision(self, row: dict) -> None:
        self._queue.put(("decisions", DECISION_COLUMNS, row))

    def put_exchange(self, request: dict, decisions: list[dict]) -> None:
        """An exchange's request row and its decision rows, queued at once."""
        self._queue.put([("requests", REQUEST_COLUMNS, request),
                         *[("decisions", DECISION_COLUMNS, row) for row in decisions]])

    def submit(self, job: Job) -> None:
        """Run `job(conn)` on the writer thread, inside its current batch. When
        the batch fails, its items run again one at a time: what a job changes
        outside the database must come out the same if it runs twice."""
        self._queue.put(job)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything queued so far is committed; False (and an
        error logged) if the writer is not running or did not get there in time."""
        if not self.running:
            if self._thread is not None:
                log.error("tokenaddons store: the writer is not running; %d events are queued and not written",
                          self.queued)
            return False
        done = threading.Event()
        self._queue.put(done)
        self._hurry.set()
        if done.wait(timeout):
            return True
        log.error("tokenaddons store: the writer did not catch up in %.0f s; %d events are queued", timeout,
                  self.queued)
        return False

    def close(self) -> None:
        self._closing.set()
        if self.running:
            self._queue.put(None)
            self._hurry.set()
            assert self._thread
            self._thread.join(10)
            if self._thread.is_alive():
                log.error("tokenaddons store: closed with the writer stuck; %d events are lost", self.queued)
        if self._watchdog is not None:
            self._watchdog.join(5)
            self._watchdog = None
        health.publish(self.path, None)
        self._thread = None
        if self._conn and self.busy_since is None:
            self._conn.close()
            self._conn = None

    # -- the writer thread
    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                stop = self._batch()
        except BaseException as e:  # never expected: every item's error is caught below
            self.failure = f"{e.__class__.__name__}: {e}"
            self.failed_at = time.time()
            log.critical("tokenaddons store: the writer stopped (%s); events are no longer written",
                         self.failure, exc_info=True)

    def _batch(self) -> bool:
        """Write one batch; True when asked to stop."""
        item = self._queue.get()  # idle: wait for work
        batch = [item]
        if not isinstance(item, threading.Event) and item is not None and self._queue.qsize() < self.batch_max:
            # Let the batch gather without waking on every put: each wake-up of
            # this thread takes the GIL from mitmproxy's event loop (a full
            # batch already waiting is written at once: the writer keeps up
            # with any rate, not batch_max per interval).
            self._hurry.wait(self.flush_interval)
        self._hurry.clear()
        while len(batch) < self.batch_max:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stop = any(item is None for item in batch)
        waiters = [item for item in batch if isinstance(item, threading.Event)]
        work = []
        for item in batch:
            if type(item) is list:  # an exchange's rows
                work.extend(item)
            elif item is not None and not isinstance(item, threading.Event):
                work.append(item)
        self.busy_since, self.in_batch = time.monotonic(), len(work)
        try:
            if work:
                self._write(work)
        finally:
            self.busy_since, self.in_batch = None, 0
            for w in waiters:
                w.set()
        return stop

    def _write(self, work: list) -> None:
        conn = self._conn
        assert conn is not None
        tries = 0
        while True:
            try:
                with conn:
                    self._apply_all(conn, work)
                self.written += sum(1 for item in work if not callable(item))
                return
            except Exception as e:
                if not _busy(e):
                    log.warning("tokenaddons store: a batch of %d items failed (%s); writing them one by one",
                                len(work), e)
                    break
                if self._closing.is_set():
                    log.error("tokenaddons store: the database is still busy at close; %d items are lost", len(work))
                    self.dropped += len(work)
                    return
                tries += 1
                if tries == 1:  # the watchdog reports the writer stuck if this lasts
                    log.warning("tokenaddons store: the database is busy (%s); trying the batch again until it "
                                "is not", e)
                time.sleep(self.busy_pause)
        named = 0
        for item in work:
            try:
                with conn:
                    self._apply(conn, item)
                if not callable(item):
                    self.written += 1
            except Exception as e:
                self.dropped += 1
                named += 1
                if named <= WARNINGS_PER_BATCH:
                    log.warning("tokenaddons store: dropped %s: %s: %s", self._name(item), e.__class__.__name__, e)
        if named > WARNINGS_PER_BATCH:
            log.warning("tokenaddons store: and %d more items of that batch dropped", named - WARNINGS_PER_BATCH)

    @staticmethod
    def _apply_all(conn: sqlite3.Connection, work: list) -> None:
        """Every item of a batch, in order, but each table's rows inserted
        together (one `executemany` per run of rows with the same columns):
        a table's rows keep their order, and a job sees every row queued
        before it and none queued after."""
        pending: dict[str, list[tuple[tuple[str, ...], list]]] = {}
        for item in work:
            if callable(item):
                EventStore._insert_pending(conn, pending)
                item(conn)
            else:
                table, columns, row = item
                cols, values = EventStore._bind(columns, row)
                pending.setdefault(table, []).append((cols, values))
        EventStore._insert_pending(conn, pending)

    @staticmethod
    def _insert_pending(conn: sqlite3.Connection, pending: dict) -> None:
        for table, rows in pending.items():
            start = 0
            for end in range(1, len(rows) + 1):
                if end == len(rows) or rows[end][0] != rows[start][0]:
                    conn.executemany(insert_sql(table, rows[start][0]), [values for _, values in rows[start:end]])
                    start = end
        pending.clear()

    @staticmethod
    def _apply(conn: sqlite3.Connection, item) -> None:
        if callable(item):
            item(conn)
        else:
            table, columns, row = item
            cols, values = EventStore._bind(columns, row)
            conn.execute(insert_sql(table, cols), values)

    @staticmethod
    def _bind(columns: tuple[str, ...], row: dict) -> tuple[tuple[str, ...], list]:
        """The row's columns (those of the table it names, in its own order) and their values to bind."""
        if row.keys() <= _column_set(columns):  # the usual case: nothing to leave out
            return tuple(row), bindable(row.values())
        cols = tuple(c for c in row if c in columns)
        return cols, bindable(row[c] for c in cols)

    @staticmethod
    def _name(item) -> str:
        if callable(item):
            return f"the job {getattr(item, '__qualname__', repr(item))}"
        table, _, row = item
        return f"the {table} row of exchange {row.get('exchange_id')!r} (ts {row.get('ts')!r})"

    # -- the watchdog thread
    def _watch(self) -> None:
        while not self._closing.wait(self.watch_every):
            self._check()

    def _check(self) -> None:
        """Loud at once when the writer dies or hangs; readers told through the status file."""
        busy = self.busy_since
        thread = self._thread
        if self.failure is not None or (thread is not None and not thread.is_alive() and not self._closing.is_set()):
            state, since = "dead", self.failed_at
        elif busy is not None and time.monotonic() - busy > self.stall_after:
            state, since = "stuck", time.time() - (time.monotonic() - busy)
        else:
            state, since = "ok", None
        if state == self.state == "ok":
            return
        if state != self.state:
            if state == "dead":  # its own death was logged with the reason: this says what it costs
                log.error("tokenaddons store: the writer is not running (%s); %d events are queued and not "
                          "written", self.failure or "stopped", self.queued)
            elif state == "stuck":
                log.error("tokenaddons store: the writer has been stuck in one batch for %.0f s; %d events are "
                          "queued and not written", time.monotonic() - busy, self.queued)
            else:
                log.warning("tokenaddons store: the writer is moving again")
        self.state = state
        try:
            health.publish(self.path, None if state == "ok" else {
                "state": state, "since": since, "queued": self.queued, "reason": self.failure,
                "written": self.written, "dropped": self.dropped})
        except OSError as e:
            log.warning("tokenaddons store: cannot write the writer's status beside the store: %s", e)
