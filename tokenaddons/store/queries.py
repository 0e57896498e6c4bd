"""Read-side queries over the event store, shared by `report`, `stats` and `budget`.

Sums come from the per-day and per-hour rollup tables the writer's triggers
keep (see schema.py): whole days from the first, the hours of a partial day from
the second, and the partial hour at a window's edge from the raw rows (an index
range, not a scan). Every part is exact, and a refresh costs about the same on
a million rows as on ten. Latency percentiles are computed
exactly over the most recent `PERCENTILE_SAMPLE` requests of the window.
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import defaultdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tokenaddons.engines.budget_windows import scopes_of, window_bounds
from tokenaddons.store.schema import ERROR_EXPR, ROLLUP_SUMS

PERCENTILE_SAMPLE = 20_000
SUMS = ("requests",) + ROLLUP_SUMS + ("errors", "cache_hits")
# the same sums over raw request rows, for the partial hour at a window's edge
RAW_SUMS = ("COUNT(*)",) + tuple(f"COALESCE(SUM({c}), 0)" for c in ROLLUP_SUMS) + (
    f"SUM({ERROR_EXPR})", "SUM(CASE WHEN cache_status = 'HIT' THEN 1 ELSE 0 END)")
DECISION_SUMS = ("count", "tokens_saved", "usd_saved")
RAW_DECISION_SUMS = ("COUNT(*)", "COALESCE(SUM(tokens_saved), 0)", "COALESCE(SUM(usd_saved), 0)")


def _none(value: Any) -> Any:
    return None if value == "" else value


# rollup levels, coarsest first: (table suffix, unit column, seconds)
LEVELS = (("_day", "day", 86400), ("", "hour", 3600))


def _pieces(lo: float | None, hi: float | None, level: int = 0) -> list[tuple[int | None, Any, Any]]:
    """[lo, hi) cut into whole days, then whole hours, then raw time at the
    edges: (level index or None for raw rows, start, end), None = unbounded."""
    if level == len(LEVELS):
        return [] if lo is not None and hi is not None and lo >= hi else [(None, lo, hi)]
    seconds = LEVELS[level][2]
    first = None if lo is None else math.ceil(lo / seconds)
    last = None if hi is None else math.floor(hi / seconds)
    if first is not None and last is not None and first >= last:
        return _pieces(lo, hi, level + 1)  # no whole unit inside
    out: list[tuple[int | None, Any, Any]] = [(level, first, last)]
    if lo is not None:
        out += _pieces(lo, first * seconds, level + 1)
    if hi is not None:
        out += _pieces(last * seconds, hi, level + 1)
    return out


def _aggregate(conn: sqlite3.Connection, keys: tuple[str, ...], since: float | None, until: float | None,
               rollup: str = "rollup_requests", raw: str = "requests", sums=SUMS, raw_sums=RAW_SUMS,
               where: str = "", args: tuple = ()) -> dict[tuple, list]:
    """Sums grouped by `keys` over [since, until): whole days and hours from the
    rollups, the partial hours at either end from the raw rows."""
    parts = []
    for level, lo, hi in _pieces(since, until):
        clauses, params = ([where], list(args)) if where else ([], [])
        if level is None:
            table, column, group_keys = raw, "ts", tuple(f"COALESCE({k}, '')" for k in keys)
            selected = ", ".join(group_keys + raw_sums)
        else:
            suffix, column, _ = LEVELS[level]
            table, group_keys = rollup + suffix, keys
            selected = ", ".join(keys + tuple(f"SUM({c})" for c in sums))
        for op, bound in ((">=", lo), ("<", hi)):
            if bound is not None:
                clauses.append(f"{column} {op} ?")
                params.append(bound)
        cond = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        group = f" GROUP BY {', '.join(group_keys)}" if keys else ""
        parts.append((f"SELECT {selected} FROM {table}{cond}{group}", params))
    out: dict[tuple, list] = {}
    for sql, params in parts:
        for row in conn.execute(sql, params):
            key, values = tuple(row[:len(keys)]), row[len(keys):]
            if not keys and all(v is None for v in values):
                continue
            acc = out.setdefault(key, [0] * len(sums))
            for i, v in enumerate(values):
                acc[i] += v or 0
    return out


GRAINS = {"model": ("provider", "model"), "project": ("project",)}


def _grouped(found: dict[tuple, list], keys: tuple[str, ...], by: tuple[str, ...]) -> list[dict]:
    """Sums over `keys` summed again to the coarser `by`, biggest spend first."""
    acc: dict[tuple, list] = {}
    for key, values in found.items():
        k = tuple(key[keys.index(name)] for name in by)
        into = acc.setdefault(k, [0] * len(SUMS))
        for i, v in enumerate(values):
            into[i] += v
    out = []
    for k, values in acc.items():
        item = {name: _none(v) for name, v in zip(by, k)}
        item.update(zip(SUMS, values))
        out.append(item)
    out.sort(key=lambda r: (-r["cost_usd"], -r["requests"]))
    return out


def breakdowns(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    """Totals, per model and per project from one pass over the rollup."""
    keys = ("provider", "model", "project")
    found = _aggregate(conn, keys, since, until)
    total = dict(zip(SUMS, [sum(col) for col in zip(*found.values())] if found else [0] * len(SUMS)))
    return {"totals": total, "models": _grouped(found, keys, GRAINS["model"]),
            "projects": _grouped(found, keys, GRAINS["project"])}


def savings(conn: sqlite3.Connection, since: float | None = None, until: float | None = None,
            by: str | None = None) -> dict:
    """Tokens and dollars saved per addon (cache, compress, route...), optionally per model or project."""
    keys = ("addon", by) if by else ("addon",)
    out: dict = {}
    for key, (count, tokens_saved, usd_saved) in _aggregate(
            conn, keys, since, until, "rollup_decisions", "decisions", DECISION_SUMS, RAW_DECISION_SUMS).items():
        entry = {"tokens_saved": tokens_saved, "usd_saved": usd_saved, "count": count}
        if by:
            out.setdefault(_none(key[1]), {})[key[0]] = entry
        else:
            out[key[0]] = entry
    return out


def decision_counts(conn: sqlite3.Connection, addon: str, since: float | None = None) -> dict[str, int]:
    found = _aggregate(conn, ("action",), since, None, "rollup_decisions", "decisions", DECISION_SUMS,
                       RAW_DECISION_SUMS, where="addon = ?", args=(addon,))
    return {key[0]: values[0] for key, values in found.items()}


def spend_rows_since(conn: sqlite3.Connection, since: float) -> dict[tuple, float]:
    """Dollars per (project, provider, model) since `since`, the grain budget scopes are cut from."""
    keys = ("project", "provider", "model")
    cost = SUMS.index("cost_usd")
    return {tuple(_none(k) for k in key): values[cost] for key, values in _aggregate(conn, keys, since, None).items()}


def spend_per_minute(conn: sqlite3.Connection, since: float, until: float) -> list[float]:
    """Dollars per minute from `since` to `until` (meant for the last hour: it reads raw rows)."""
    first, last = int(since // 60), int(until // 60)
    spend = dict(conn.execute("SELECT CAST(ts / 60 AS INTEGER), SUM(cost_usd) FROM requests WHERE ts >= ? "
                              "AND ts < ? GROUP BY 1", (first * 60, (last + 1) * 60)).fetchall())
    return [spend.get(m, 0.0) or 0.0 for m in range(first, last + 1)]


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    """p50 and p95 (nearest rank), sorting once."""
    if not values:
        return None, None
    values.sort()
    last = len(values) - 1
    return values[int(round(0.5 * last))], values[int(round(0.95 * last))]


def latencies(conn: sqlite3.Connection, since: float | None) -> dict[str, dict[Any, dict]]:
    """p50/p95 latency and time to first byte per model ((provider, model)) and
    per project, over the most recent PERCENTILE_SAMPLE requests of the window:
    one scan of the sample serves both."""
    where, args = ("WHERE ts >= ?", [since]) if since is not None else ("", [])
    cur = conn.cursor()
    cur.row_factory = None  # plain tuples: 20,000 of them
    sample = cur.execute(f"SELECT provider, model, project, latency_ms, ttfb_ms FROM requests {where} "
                         "ORDER BY ts DESC LIMIT ?", args + [PERCENTILE_SAMPLE]).fetchall()
    groups: dict[str, dict[Any, tuple[list, list]]] = {"model": {}, "project": {}}
    for provider, model, project, lat, ttfb in sample:
        for by, key in (("model", (provider or "", model)), ("project", project)):
            found = groups[by].get(key)
            if found is None:
                found = groups[by][key] = ([], [])
            if lat is not None:
                found[0].append(lat)
            if ttfb is not None:
                found[1].append(ttfb)
    out: dict[str, dict[Any, dict]] = {}
    for by, found in groups.items():
        out[by] = {}
        for k, (lat, ttfb) in found.items():
            (p50, p95), (t50, t95) = _percentiles(lat), _percentiles(ttfb)
            out[by][k] = {"p50_ms": p50, "p95_ms": p95, "ttft_p50_ms": t50, "ttft_p95_ms": t95}
    return out


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


def routing(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> list[dict]:
    """What route did, per action and the provider and model that served (served,
    fallback, failed, skipped...), from the decision rollups."""
    found = _aggregate(conn, ("action", "provider", "model"), since, until, "rollup_decisions", "decisions",
                       DECISION_SUMS, RAW_DECISION_SUMS, where="addon = ?", args=("route",))
    out = [{"action": a, "provider": _none(p), "model": _none(m), "count": values[0], "usd_saved": values[2]}
           for (a, p, m), values in found.items()]
    out.sort(key=lambda r: (-r["count"], r["action"]))
    return out


def report(conn: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict:
    found = breakdowns(conn, since, until)
    out = found["totals"]
    out["models"], out["projects"] = found["models"], found["projects"]
    out["savings"] = savings(conn, since, until)
    out["routing"] = routing(conn, since, until)
    return out


def spend_by_scope(conn: sqlite3.Connection, since: float, patterns) -> dict[str, float]:
    """Billed USD since `since` for every scope it counts against (the store's
    view; Budget.settle attributes live spend the same way)."""
    out: dict[str, float] = defaultdict(float)
    for row, usd in spend_rows_since(conn, since).items():
        for scope in scopes_of(*row, patterns):
            out[scope] += usd
    return out


def budget_status(conn: sqlite3.Connection, now: float | None = None) -> list[dict]:
    """Each configured window's spend, limit and reset time, from the store
    (for `tokenaddons budget` and the stats view)."""
    now = time.time() if now is None else now
    try:
        limits = conn.execute("SELECT scope, window, limit_usd, timezone FROM budget_limits").fetchall()
    except sqlite3.OperationalError:
        return []
    named = {(scope, window) for scope, window, _, _ in limits}
    patterns = [scope.split(":", 1)[1] for scope, *_ in limits if scope.startswith("model:")]
    spent_since: dict[float, dict[str, float]] = {}  # windows that start together share one query
    out = []
    for scope, window, limit, tz_name in limits:
        if not limit > 0:
            continue
        start, end = window_bounds(window, now, ZoneInfo(tz_name))
        if start not in spent_since:
            spent_since[start] = spend_by_scope(conn, start, patterns)
        spent = spent_since[start]
        if scope == "project":  # the per-project default, for projects without caps of their own
            scopes = sorted(s for s in spent if s.startswith("project:") and (s, window) not in named)
        else:
            scopes = [scope]
        for each in scopes:
            used = spent.get(each, 0.0)
            out.append({"scope": each, "window": window, "limit_usd": limit, "spent_usd": used,
                        "percent": 100 * used / limit,
                        "resets_at": datetime.fromtimestamp(end, ZoneInfo(tz_name)).isoformat(),
                        "resets_in_s": end - now})
    return out
