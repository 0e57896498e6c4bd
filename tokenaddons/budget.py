"""Spend caps per hour, day and month, globally and per project, that concurrency
cannot overshoot.

Before a request goes upstream, its worst-case cost (input counted locally, plus
its output cap at the model's output price) is reserved against every window
that applies, in one step on mitmproxy's event loop (no await between check and
reserve); a request whose reservation does not fit is refused with the
provider's own 429. When the answer ends (or fails), `BudgetSettle`, placed
after the meter, swaps the reservation for the real billed cost. Spend is
rebuilt from the event store on start, so a restart keeps the day's spend.

Scopes: "global" and "project:NAME" from options; "provider:NAME",
"model:PATTERN" and caps for one named project from the settings file.
"""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from mitmproxy import ctx, exceptions, http

from tokenaddons import pricing, queries, tokens
from tokenaddons.errors import refuse
from tokenaddons.exchange import Exchange, handled
from tokenaddons.options import check, number
from tokenaddons.settings import Settings
from tokenaddons.store import Store, connect, migrate

log = logging.getLogger(__name__)

WINDOWS = ("hourly", "daily", "monthly")
ALERTS = (0.5, 0.8, 1.0)
DEFAULT_OUTPUT_TOKENS = 4096  # when a request sets no output cap
MIGRATIONS = [
    """
    CREATE TABLE budget_limits (scope TEXT, window TEXT, limit_usd REAL, timezone TEXT,
                                PRIMARY KEY (scope, window));
    """,
]


def window_bounds(window: str, now: float, tz: ZoneInfo) -> tuple[float, float]:
    """Start and end (unix seconds) of the calendar window holding `now`."""
    t = datetime.fromtimestamp(now, tz)
    if window == "hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif window == "daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def output_cap(body) -> int | None:
    """The request's own limit on output tokens, in any of the four wire formats."""
    if not isinstance(body, dict):
        return None
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    cfg = body.get("generationConfig") or body.get("generation_config") or {}
    value = cfg.get("maxOutputTokens") if isinstance(cfg, dict) else None
    return value if isinstance(value, int) else None


# a served model is often the requested alias plus a snapshot date
DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


def model_matches(model: str | None, pattern: str) -> bool:
    """A model pattern matches the name or the name without its snapshot date, so
    `claude-sonnet-4-5` counts what was asked for by that name and what is billed
    as claude-sonnet-4-5-20250929, before and after a restart alike."""
    if not model:
        return False
    return fnmatchcase(model, pattern) or fnmatchcase(DATE_SUFFIX.sub("", model), pattern)


def scopes_of(project: str | None, provider: str | None, model: str | None, patterns) -> list[str]:
    """Every budget scope one request counts against."""
    out = ["global"]
    if project is not None:
        out.append(f"project:{project}")
    if provider:
        out.append(f"provider:{provider}")
    out.extend(f"model:{p}" for p in patterns if model_matches(model, p))
    return out


def spend_by_scope(conn: sqlite3.Connection, since: float, patterns) -> dict[str, float]:
    """Billed USD since `since` for every scope it counts against (the store's
    view; Budget.settle attributes live spend the same way)."""
    out: dict[str, float] = defaultdict(float)
    for row, usd in queries.spend_rows_since(conn, since).items():
        for scope in scopes_of(*row, patterns):
            out[scope] += usd
    return out


@dataclass
class Window:
    scope: str  # "global", "project:NAME", "provider:NAME" or "model:PATTERN"
    name: str  # hourly | daily | monthly
    limit: float
    start: float
    end: float

    @property
    def key(self) -> tuple[str, str, float]:
        return self.scope, self.name, self.start

    def describe(self) -> str:
        if self.scope == "global":
            return f"{self.name} budget"
        kind, name = self.scope.split(":", 1)
        return f"{self.name} budget for {kind} {name}"


class Budget:
    def __init__(self, store: Store, settings: Settings | None = None, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings or Settings()
        self.clock = clock
        self.spent: dict[tuple, float] = defaultdict(float)  # window key -> billed USD
        self.reserved: dict[tuple, float] = defaultdict(float)  # window key -> USD held by requests in flight
        self.alerted: set[tuple] = set()
        self._rebuilt_for: tuple | None = None

    def load(self, loader) -> None:
        for w in WINDOWS:
            loader.add_option(f"budget_{w}_usd", str, "0",
                              f"Spend cap per {w} window in US dollars, over all traffic (0 = off).")
            loader.add_option(f"budget_project_{w}_usd", str, "0",
                              f"Spend cap per {w} window for each project (X-Tokenaddons-Project; 0 = off).")
        loader.add_option("budget_timezone", str, "UTC", "Time zone of the budget windows' calendar.")
        loader.add_option("budget_expected_output_tokens", int, 0,
                          "Output tokens to reserve per request instead of its max_tokens (0 = its max_tokens).")

    def configure(self, updated) -> None:
        check(*(f"budget_{p}{w}_usd" for p in ("", "project_") for w in WINDOWS))
        try:
            ZoneInfo(ctx.options.budget_timezone)
        except (ValueError, KeyError) as e:
            raise exceptions.OptionsError(f"budget_timezone: unknown time zone {ctx.options.budget_timezone!r}") from e
        self._sync()

    def _sync(self) -> None:
        """Spend per scope and the saved limits, for the current store, time
        zone, options and settings file."""
        events = self.store.events
        if events is None:
            return
        source = (str(events.path), ctx.options.budget_timezone, self.settings.generation)
        if source != self._rebuilt_for:
            self._rebuilt_for = source
            events.flush()  # spend settled but not yet written must count
            self._rebuild(events.path)
        limits = self.limits()
        tz = ctx.options.budget_timezone

        def save(conn: sqlite3.Connection) -> None:
            migrate(conn, MIGRATIONS, version_table="budget_schema")
            conn.execute("DELETE FROM budget_limits")
            conn.executemany("INSERT INTO budget_limits VALUES (?,?,?,?)",
                             [(scope, w, usd, tz) for scope, w, usd in limits])

        events.submit(save)

    def limits(self) -> list[tuple[str, str, float]]:
        """(scope, window, USD) of every cap; scope "project" is the per-project default."""
        out = [(scope, w, number(f"budget_{'project_' if scope == 'project' else ''}{w}_usd"))
               for scope in ("global", "project") for w in WINDOWS]
        for kind, named in self.settings.values.budgets.items():
            for name, caps in named.items():
                out.extend((f"{kind}:{name}", w, usd) for w, usd in caps.items())
        return out

    def limit(self, scope: str, window: str) -> float:
        if scope == "global":
            return number(f"budget_{window}_usd")
        kind, name = scope.split(":", 1)
        found = self.settings.values.budgets.get(kind, {}).get(name, {}).get(window)
        if found is None and kind == "project":
            return number(f"budget_project_{window}_usd")
        return found or 0.0

    def _patterns(self) -> list[str]:
        return list(self.settings.values.budgets.get("model", {}))

    def _rebuild(self, path) -> None:
        """Spend of the current windows, from the metered requests."""
        self.spent.clear()
        tz = ZoneInfo(ctx.options.budget_timezone)
        now = self.clock()
        try:
            conn = connect(path, readonly=True)
        except sqlite3.Error:
            return
        patterns = self._patterns()
        with closing(conn):  # `with conn` alone would leave it open
            for name in WINDOWS:
                start, _ = window_bounds(name, now, tz)
                for scope, usd in spend_by_scope(conn, start, patterns).items():
                    self.spent[(scope, name, start)] += usd

    def windows(self, ex: Exchange, now: float) -> list[Window]:
        tz = ZoneInfo(ctx.options.budget_timezone)
        out = []
        for scope in scopes_of(ex.project, ex.provider, ex.model, self._patterns()):
            for name in WINDOWS:
                limit = self.limit(scope, name)
                if limit > 0:
                    out.append(Window(scope, name, limit, *window_bounds(name, now, tz)))
        return out

    def estimate(self, ex: Exchange) -> float:
        """Worst-case USD of a request before it is sent."""
        prices = pricing.unit_prices(ex.provider, ex.model or "")
        if prices is None:
            return 0.0
        expected = ctx.options.budget_expected_output_tokens or output_cap(ex.body) or DEFAULT_OUTPUT_TOKENS
        return (tokens.estimate_input_tokens(ex.api, ex.body, ex.model) * prices.input
                + expected * prices.output)

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or ex.api is None or handled(flow) or ex.answered_by:
            return  # answered here (a cache hit, one following a stream in flight): costs nothing
        if self._rebuilt_for is not None and self._rebuilt_for[2] != self.settings.generation:
            self._sync()  # the settings file was edited: new scopes, new limits
        now = self.clock()
        windows = self.windows(ex, now)
        need = self.estimate(ex) if windows else 0.0
        # check every window, then reserve in all: nothing awaits in between
        for w in windows:
            spent = self.spent[w.key] + self.reserved[w.key]
            if spent + need > w.limit:
                return self._refuse(flow, ex, w, spent, need, now)
        for w in windows:
            self.reserved[w.key] += need
        # settled even without a cap: spend must be known when a cap is set later
        ex.state["budget"] = ([w.key for w in windows], need, now)

    def _refuse(self, flow: http.HTTPFlow, ex: Exchange, w: Window, spent: float, need: float, now: float) -> None:
        reset = datetime.fromtimestamp(w.end, ZoneInfo(ctx.options.budget_timezone)).isoformat()
        message = (f"the {w.describe()} of ${w.limit:g} is used up: ${spent:.4f} spent or reserved, this request "
                   f"may cost up to ${need:.4f}; it resets at {reset}")
        refuse(flow, "budget", "rate_limit", message, retry_after=w.end - now,
               headers={"x-tokenaddons-budget": f"{w.scope} {w.name}"})
        ex.decide("budget", "refused", scope=w.scope, window=w.name, limit_usd=w.limit,
                  spent_usd=round(spent, 6), needed_usd=round(need, 6))
        for threshold in ALERTS:
            self._alert(ex, w, threshold)
        log.warning("tokenaddons budget: refused %s: %s", flow.request.path, message)

    def settle(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        held = ex.state.pop("budget", None) if ex is not None else None
        if held is None:
            return
        keys, need, at = held
        for key in keys:
            left = self.reserved[key] - need
            if left > 1e-12:
                self.reserved[key] = left
            else:  # float residue of many holds and releases
                self.reserved.pop(key, None)
        # spend goes where the store will put it after a restart: every scope of
        # the served model, in the windows of the request's time
        cost = ex.cost_usd or 0.0
        if cost:
            tz = ZoneInfo(ctx.options.budget_timezone)
            starts = {name: window_bounds(name, at, tz)[0] for name in WINDOWS}
            for scope in scopes_of(ex.project, ex.provider, ex.served_model or ex.model, self._patterns()):
                for name, start in starts.items():
                    self.spent[(scope, name, start)] += cost
        self._alerts(ex)

    def _alerts(self, ex: Exchange) -> None:
        for w in self.windows(ex, self.clock()):
            for threshold in ALERTS:
                if self.spent[w.key] >= threshold * w.limit:
                    self._alert(ex, w, threshold)

    def _alert(self, ex: Exchange, w: Window, threshold: float) -> None:
        """Once per window and threshold: a decision row and a warning. A refusal
        counts as reaching 100 %: the window has no room left."""
        mark = (*w.key, threshold)
        if mark in self.alerted:
            return
        self.alerted.add(mark)
        spent = self.spent[w.key]
        log.warning("tokenaddons budget: %s at %d%% ($%.4f of $%g)", w.describe(), int(threshold * 100),
                    spent, w.limit)
        events = self.store.events
        if events is not None:
            events.put_decision({
                "exchange_id": None, "ts": self.clock(), "addon": "budget", "action": "alert",
                "detail": json.dumps({"scope": w.scope, "window": w.name, "percent": int(threshold * 100),
                                      "spent_usd": round(spent, 6), "limit_usd": w.limit, "resets": w.end}),
                "project": ex.project, "provider": ex.provider, "model": ex.model})


class BudgetSettle:
    """After the meter: trade each reservation for what the request really cost."""

    def __init__(self, budget: Budget):
        self.budget = budget

    def response(self, flow: http.HTTPFlow) -> None:
        self.budget.settle(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.budget.settle(flow)


def status(conn: sqlite3.Connection, now: float | None = None) -> list[dict]:
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
