"""The SQLite event store: one writer thread, WAL, a versioned schema.

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

log = logging.getLogger(__name__)

REQUEST_COLUMNS = (
    "exchange_id", "ts", "provider", "api", "path", "requested_model", "model",
    "project", "client", "stream", "status", "error_type", "latency_ms", "ttfb_ms",
    "input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_5m_tokens",
    "cache_write_1h_tokens", "output_tokens", "reasoning_tokens", "estimated",
    "cost_usd", "prompt_cache_saved_usd", "cache_status", "answered_by", "complete",
    "request_body", "response_body",
)
DECISION_COLUMNS = ("exchange_id", "ts", "addon", "action", "detail", "tokens_saved",
                    "usd_saved", "project", "provider", "model")

# Summed per hour by the rollup (the last two are dollars).
ROLLUP_SUMS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "cache_write_5m_tokens",
               "cache_write_1h_tokens", "output_tokens", "reasoning_tokens", "estimated",
               "cost_usd", "prompt_cache_saved_usd")
ERROR_EXPR = "CASE WHEN error_type IS NOT NULL OR status >= 400 THEN 1 ELSE 0 END"

def rollup_sql(unit: str, seconds: int, suffix: str = "") -> str:
    """Tables that sum requests and decisions per `unit` (hour, day) and the
    triggers that keep them, filled from what is already there. NULL keys are
    stored as '' (a primary key with NULLs would not be unique)."""
    bucket = f"CAST(NEW.ts / {seconds} AS INTEGER)"
    return f"""
    CREATE TABLE rollup_requests{suffix} (
        {unit} INTEGER NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL, project TEXT NOT NULL,
        requests INTEGER NOT NULL, {", ".join(f"{c} INTEGER NOT NULL" for c in ROLLUP_SUMS[:-2])},
        cost_usd REAL NOT NULL, prompt_cache_saved_usd REAL NOT NULL,
        errors INTEGER NOT NULL, cache_hits INTEGER NOT NULL,
        PRIMARY KEY ({unit}, provider, model, project)
    ) WITHOUT ROWID;
    CREATE TRIGGER requests_rollup{suffix} AFTER INSERT ON requests BEGIN
        INSERT INTO rollup_requests{suffix} VALUES (
            {bucket}, COALESCE(NEW.provider, ''), COALESCE(NEW.model, ''),
            COALESCE(NEW.project, ''), 1, {", ".join(f"COALESCE(NEW.{c}, 0)" for c in ROLLUP_SUMS)},
            {ERROR_EXPR.replace("error_type", "NEW.error_type").replace("status", "NEW.status")},
            CASE WHEN NEW.cache_status = 'HIT' THEN 1 ELSE 0 END)
        ON CONFLICT ({unit}, provider, model, project) DO UPDATE SET requests = requests + 1,
            {", ".join(f"{c} = {c} + excluded.{c}" for c in ROLLUP_SUMS)},
            errors = errors + excluded.errors, cache_hits = cache_hits + excluded.cache_hits;
    END;
    INSERT INTO rollup_requests{suffix}
        SELECT CAST(ts / {seconds} AS INTEGER), COALESCE(provider, ''), COALESCE(model, ''), COALESCE(project, ''),
               COUNT(*), {", ".join(f"COALESCE(SUM({c}), 0)" for c in ROLLUP_SUMS)},
               SUM({ERROR_EXPR}), SUM(CASE WHEN cache_status = 'HIT' THEN 1 ELSE 0 END)
        FROM requests GROUP BY 1, 2, 3, 4;
    CREATE TABLE rollup_decisions{suffix} (
        {unit} INTEGER NOT NULL, addon TEXT NOT NULL, action TEXT NOT NULL, provider TEXT NOT NULL,
        model TEXT NOT NULL, project TEXT NOT NULL, count INTEGER NOT NULL,
        tokens_saved INTEGER NOT NULL, usd_saved REAL NOT NULL,
        PRIMARY KEY ({unit}, addon, action, provider, model, project)
    ) WITHOUT ROWID;
    CREATE TRIGGER decisions_rollup{suffix} AFTER INSERT ON decisions BEGIN
        INSERT INTO rollup_decisions{suffix} VALUES (
            {bucket}, COALESCE(NEW.addon, ''), COALESCE(NEW.action, ''),
            COALESCE(NEW.provider, ''), COALESCE(NEW.model, ''), COALESCE(NEW.project, ''), 1,
            COALESCE(NEW.tokens_saved, 0), COALESCE(NEW.usd_saved, 0))
        ON CONFLICT ({unit}, addon, action, provider, model, project) DO UPDATE SET count = count + 1,
            tokens_saved = tokens_saved + excluded.tokens_saved, usd_saved = usd_saved + excluded.usd_saved;
    END;
    INSERT INTO rollup_decisions{suffix}
        SELECT CAST(ts / {seconds} AS INTEGER), COALESCE(addon, ''), COALESCE(action, ''), COALESCE(provider, ''),
               COALESCE(model, ''), COALESCE(project, ''), COUNT(*), COALESCE(SUM(tokens_saved), 0),
               COALESCE(SUM(usd_saved), 0)
        FROM decisions GROUP BY 1, 2, 3, 4, 5, 6;
    """


# Each entry upgrades the schema by one version; never edit a shipped entry.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        exchange_id TEXT, ts REAL NOT NULL, provider TEXT, api TEXT, path TEXT,
        requested_model TEXT, model TEXT, project TEXT, client TEXT,
        stream INTEGER, status INTEGER, error_type TEXT,
        latency_ms REAL, ttfb_ms REAL,
        input_tokens INTEGER DEFAULT 0, cache_read_tokens INTEGER DEFAULT 0,
        cache_write_tokens INTEGER DEFAULT 0, cache_write_5m_tokens INTEGER DEFAULT 0,
        cache_write_1h_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0,
        reasoning_tokens INTEGER DEFAULT 0, estimated INTEGER DEFAULT 0,
        cost_usd REAL, prompt_cache_saved_usd REAL DEFAULT 0,
        cache_status TEXT, answered_by TEXT, complete INTEGER,
        request_body TEXT, response_body TEXT
    );
    CREATE INDEX requests_ts ON requests(ts);
    CREATE INDEX requests_project_ts ON requests(project, ts);
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        exchange_id TEXT, ts REAL NOT NULL, addon TEXT, action TEXT, detail TEXT,
        tokens_saved INTEGER DEFAULT 0, usd_saved REAL DEFAULT 0,
        project TEXT, provider TEXT, model TEXT
    );
    CREATE INDEX decisions_ts ON decisions(ts);
    CREATE INDEX decisions_exchange ON decisions(exchange_id);
    """,
    # Per-hour rollups kept by triggers, so the stats view, reports and budget
    # windows never scan the raw rows.
    rollup_sql("hour", 3600),
    # the stats view's latency percentiles read the newest 20,000 rows from the
    # index alone (no table lookups); it replaces the plain ts index
    """
    CREATE INDEX requests_recent ON requests(ts, provider, model, project, latency_ms, ttfb_ms);
    DROP INDEX requests_ts;
    """,
    # Per-day rollups too: a month window sums about 30 rows per key, not 720.
    rollup_sql("day", 86400, "_day"),
]

Job = Callable[[sqlite3.Connection], Any]


def connect(path: str | Path, *, readonly: bool = False, timeout: float = 10.0) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True, timeout=timeout,
                               check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.row_factory = sqlite3.Row
    return conn


def open_for_reading(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for reports and views; a store written by an
    older version is brought up to the current schema first."""
    conn = connect(path, readonly=True)
    if conn.execute("PRAGMA user_version").fetchone()[0] < len(MIGRATIONS):
        conn.close()
        rw = connect(path)
        migrate(rw)
        rw.close()
        conn = connect(path, readonly=True)
    return conn


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS,
            version_table: str | None = None) -> int:
    """Bring a database up to the newest schema; returns the version.

    The event schema uses PRAGMA user_version; other tables kept in the same file
    (the cache's, the budget's) pass their own `version_table` name.
    """
    if version_table is None:
        current = conn.execute("PRAGMA user_version").fetchone()[0]
    else:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER)")
        row = conn.execute(f"SELECT version FROM {version_table}").fetchone()
        current = row[0] if row else 0
    for version, script in enumerate(migrations[current:], start=current + 1):
        conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")
        if version_table is None:
            conn.execute(f"PRAGMA user_version={version}")
        else:
            conn.execute(f"DELETE FROM {version_table}")
            conn.execute(f"INSERT INTO {version_table} VALUES (?)", (version,))
            conn.commit()
    return len(migrations)


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
            item = self._queue.get()
            batch = [item]
            deadline = time.monotonic() + self.flush_interval
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
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


DEFAULT_PATH = "~/.tokenaddons/events.db"


class Store:
    """The mitmproxy addon that opens the event store named by `store_path`.

    Other addons are given this instance by the bundle and write through
    `store.events`; it is None until mitmproxy has configured the options.
    """

    def __init__(self) -> None:
        self.events: EventStore | None = None

    def load(self, loader) -> None:
        loader.add_option("store_path", str, DEFAULT_PATH,
                          "SQLite file of tokenaddons' events (requests, decisions, cache, budgets).")
        loader.add_option("store_bodies", bool, False,
                          "Store request and response bodies (after scrubbing) with each event.")
        loader.add_option("store_body_max", int, 65536, "Bytes of each stored body kept at most.")

    def configure(self, updated) -> None:
        from mitmproxy import ctx

        if "store_path" in updated or self.events is None:
            self.done()
            self.events = EventStore(ctx.options.store_path)
            self.events.start()
            log.info("tokenaddons: events go to %s", self.events.path)

    def done(self) -> None:
        if self.events:
            self.events.flush()
            self.events.close()
            self.events = None
