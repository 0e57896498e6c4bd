"""Read-side queries over the event store, shared by `report`, `stats` and `budget`.

Sums come from the per-minute rollup tables the writer's triggers keep (see
store.py), so they cost the same on a store of a million rows as on ten.
Latency percentiles are computed exactly over the most recent
`PERCENTILE_SAMPLE` requests of the window (an index walk, not a scan).
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any

from tokenaddons.store import ROLLUP_SUMS

PERCENTILE_SAMPLE = 20_000
SUMS = ("requests",) + ROLLUP_SUMS + ("errors", "cache_hits")
SAVING_SOURCES = {"cache": "cache hits", "compress": "compression", "route": "routing"}


def _minutes(since: float | None, until: float | None) -> tuple[str, list]:
    clauses, args = [], []
    if since is not None:
        clauses.append("minute >= ?")
        args.append(int(since // 60))
    if until is not None:
        clauses.append("minute < ?")
        args.append(int(until // 60))
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _none(value: Any) -> Any:
    return None if value == "" else value


def totals(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    where, args = _minutes(since, until)
    row = conn.execute(f"SELECT {', '.join(f'COALESCE(SUM({c}), 0)' for c in SUMS)} FROM rollup_requests{where}",
                       args).fetchone()
    return dict(zip(SUMS, row))


def breakdown(conn: sqlite3.Connection, by: str, since: float | None = None,
              until: float | None = None) -> list[dict]:
    """Totals grouped by 'model' (with its provider), 'project' or 'provider'."""
    keys = {"model": ("provider", "model"), "project": ("project",), "provider": ("provider",)}[by]
    where, args = _minutes(since, until)
    cols = ", ".join(keys)
    out = []
    for row in conn.execute(f"SELECT {cols}, {', '.join(f'SUM({c})' for c in SUMS)} FROM rollup_requests{where} "
                            f"GROUP BY {cols} ORDER BY SUM(cost_usd) DESC, SUM(requests) DESC", args):
        item = {k: _none(v) for k, v in zip(keys, row)}
        item.update(zip(SUMS, row[len(keys):]))
        out.append(item)
    return out


def savings(conn: sqlite3.Connection, since: float | None = None, until: float | None = None,
            by: str | None = None) -> dict:
    """Tokens and dollars saved per addon (cache, compress, route...), optionally per model or project."""
    where, args = _minutes(since, until)
    group = f", {by}" if by else ""
    out: dict = {}
    for row in conn.execute(f"SELECT addon{group}, SUM(tokens_saved), SUM(usd_saved), SUM(count) "
                            f"FROM rollup_decisions{where} GROUP BY addon{group}", args):
        entry = {"tokens_saved": row[-3] or 0, "usd_saved": row[-2] or 0.0, "count": row[-1]}
        if by:
            out.setdefault(_none(row[1]), {})[row[0]] = entry
        else:
            out[row[0]] = entry
    return out


def decision_counts(conn: sqlite3.Connection, addon: str, since: float | None = None) -> dict[str, int]:
    where, args = _minutes(since, None)
    where = (where + " AND" if where else " WHERE") + " addon = ?"
    return {a: n for a, n in conn.execute(f"SELECT action, SUM(count) FROM rollup_decisions{where} GROUP BY action",
                                          args + [addon])}


def spend_per_minute(conn: sqlite3.Connection, since: float, until: float) -> list[float]:
    """Dollars per minute from `since` to `until`, zero-filled."""
    first, last = int(since // 60), int(until // 60)
    spend = dict(conn.execute("SELECT minute, SUM(cost_usd) FROM rollup_requests WHERE minute >= ? AND minute <= ? "
                              "GROUP BY minute", (first, last)).fetchall())
    return [spend.get(m, 0.0) for m in range(first, last + 1)]


def spend_since(conn: sqlite3.Connection, since: float, project: str | None = None) -> float:
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM rollup_requests WHERE minute >= ?"
    args: list = [int(since // 60)]
    if project is not None:
        sql += " AND project = ?"
        args.append(project)
    return conn.execute(sql, args).fetchone()[0]


def spend_by_project_since(conn: sqlite3.Connection, since: float) -> dict[str | None, float]:
    return {_none(p): usd for p, usd in conn.execute(
        "SELECT project, SUM(cost_usd) FROM rollup_requests WHERE minute >= ? GROUP BY project",
        (int(since // 60),))}


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def latencies(conn: sqlite3.Connection, since: float | None, by: str) -> dict[Any, dict]:
    """p50/p95 latency and time to first byte per model or project, over the most
    recent PERCENTILE_SAMPLE requests of the window."""
    where, args = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
    key = "provider, model" if by == "model" else "project"
    groups: dict[Any, tuple[list, list]] = {}
    for row in conn.execute(f"SELECT {key}, latency_ms, ttfb_ms FROM requests {where} ORDER BY ts DESC LIMIT ?",
                            args + [PERCENTILE_SAMPLE]):
        k = (row[0], row[1]) if by == "model" else row[0]
        lat, ttfb = groups.setdefault(k, ([], []))
        if row[-2] is not None:
            lat.append(row[-2])
        if row[-1] is not None:
            ttfb.append(row[-1])
    return {k: {"p50_ms": _percentile(lat, 50), "p95_ms": _percentile(lat, 95),
                "ttft_p50_ms": _percentile(ttfb, 50), "ttft_p95_ms": _percentile(ttfb, 95)}
            for k, (lat, ttfb) in groups.items()}


def recent(conn: sqlite3.Connection, limit: int = 12) -> list[dict]:
    """The newest requests with what the addons did to each."""
    rows = [dict(r) for r in conn.execute(
        "SELECT exchange_id, ts, project, provider, model, input_tokens, output_tokens, cost_usd, cache_status, "
        "answered_by, status, error_type, stream FROM requests ORDER BY ts DESC LIMIT ?", (limit,))]
    ids = [r["exchange_id"] for r in rows if r["exchange_id"]]
    actions: dict[str, list[dict]] = {}
    if ids:
        for exchange_id, addon, action, detail, tokens_saved in conn.execute(
                f"SELECT exchange_id, addon, action, detail, tokens_saved FROM decisions "
                f"WHERE exchange_id IN ({','.join('?' * len(ids))}) ORDER BY id", ids):
            actions.setdefault(exchange_id, []).append(
                {"addon": addon, "action": action, "detail": json.loads(detail or "{}"), "tokens_saved": tokens_saved})
    for r in rows:
        r["decisions"] = actions.get(r["exchange_id"], [])
    return rows


def report(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    out = totals(conn, since, until)
    out["models"] = breakdown(conn, "model", since, until)
    out["projects"] = breakdown(conn, "project", since, until)
    out["savings"] = savings(conn, since, until)
    return out
