"""Read-side queries over the event store, shared by `report` and `stats`."""
from __future__ import annotations

import sqlite3
from typing import Any

TOTALS = """
    COUNT(*) AS requests,
    COALESCE(SUM(input_tokens), 0) AS input_tokens,
    COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens,
    COALESCE(SUM(cache_write_tokens), 0) AS cache_write_tokens,
    COALESCE(SUM(cache_write_5m_tokens), 0) AS cache_write_5m_tokens,
    COALESCE(SUM(cache_write_1h_tokens), 0) AS cache_write_1h_tokens,
    COALESCE(SUM(output_tokens), 0) AS output_tokens,
    COALESCE(SUM(reasoning_tokens), 0) AS reasoning_tokens,
    COALESCE(SUM(cost_usd), 0.0) AS cost_usd,
    COALESCE(SUM(prompt_cache_saved_usd), 0.0) AS prompt_cache_saved_usd,
    SUM(CASE WHEN error_type IS NOT NULL OR status >= 400 THEN 1 ELSE 0 END) AS errors,
    SUM(estimated) AS estimated
"""


def _where(since: float | None, until: float | None) -> tuple[str, list]:
    clauses, args = [], []
    if since is not None:
        clauses.append("ts >= ?")
        args.append(since)
    if until is not None:
        clauses.append("ts < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _rows(conn: sqlite3.Connection, sql: str, args: list) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, args)]


def totals(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    where, args = _where(since, until)
    row = _rows(conn, f"SELECT {TOTALS} FROM requests{where}", args)[0]
    return {k: (v or 0) for k, v in row.items()}


def breakdown(conn: sqlite3.Connection, by: str, since: float | None = None,
              until: float | None = None) -> list[dict]:
    """Totals grouped by one column: 'model', 'project', 'provider'."""
    assert by in ("model", "project", "provider", "api")
    where, args = _where(since, until)
    return _rows(conn, f"SELECT {by}, provider AS provider_, {TOTALS} FROM requests{where} "
                       f"GROUP BY {by}{', provider' if by == 'model' else ''} "
                       f"ORDER BY cost_usd DESC, requests DESC", args)


def savings(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    """Dollars and tokens saved, per addon (cache, compress, route...)."""
    where, args = _where(since, until)
    out = {r["addon"]: {"tokens_saved": r["t"] or 0, "usd_saved": r["u"] or 0.0}
           for r in conn.execute(f"SELECT addon, SUM(tokens_saved) t, SUM(usd_saved) u "
                                 f"FROM decisions{where} GROUP BY addon", args)}
    return out


def report(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    out = totals(conn, since, until)
    models = []
    for r in breakdown(conn, "model", since, until):
        r["provider"] = r.pop("provider_")
        models.append(r)
    projects = []
    for r in breakdown(conn, "project", since, until):
        r.pop("provider_")
        projects.append(r)
    out["models"] = models
    out["projects"] = projects
    out["savings"] = savings(conn, since, until)
    return out
