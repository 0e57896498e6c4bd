"""The event store's schema: tables, rollups kept by triggers, migrations.

Each MIGRATIONS entry upgrades the schema by one version (PRAGMA user_version);
other tables kept in the same file (the cache's, the budget's, scrub's) carry
their own version table.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from tokenaddons.store.db import connect

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


