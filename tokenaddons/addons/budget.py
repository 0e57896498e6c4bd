"""Spend caps per hour, day and month, globally and per project, that concurrency
cannot overshoot.

Before a request goes upstream, its worst-case cost (input counted locally, plus
its output cap at the model's output price) is reserved against every window
that applies, in one step on mitmproxy's event loop (no await between check and
reserve); a request whose reservation does not fit is refused with the
provider's own 429. A reservation is never negative: an output cap that is
not a positive integer counts as the most the model can write. When the answer
ends (or fails), the exchange settles after the meter, which swaps the
reservation for the real billed cost (or keeps the reservation as spent when
the meter could not tell the cost). Spend is rebuilt from the event store on
start, so a restart keeps the day's spend; if it cannot be read, requests
under a cap are refused (`budget_fail_open` lets them through).

Scopes: "global" and "project:NAME" from options; "provider:NAME",
"model:PATTERN" and caps for one named project from the settings file.

Team mode (`redis_url`): the check and the reservation are one Lua script
over every proxy's spend and holds in Redis (team/budget.py), and each proxy
reports its own spend there every second; while Redis cannot be reached,
requests under a cap are refused with a 503 naming it, or with
`budget_fail_open` checked against this proxy's own spend.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from mitmproxy import ctx, exceptions, http

from tokenaddons.addons.store import Store
from tokenaddons.engines import pricing
from tokenaddons.engines.budget_windows import WINDOWS, output_cap, scopes_of, window_bounds, worst_output
from tokenaddons.engines.settings_file import Published
from tokenaddons.errors import refuse
from tokenaddons.exchange import Exchange, handled
from tokenaddons.options import number
from tokenaddons.store import connect
from tokenaddons.store.queries import spend_by_scope
from tokenaddons.team.budget import SharedBudget
from tokenaddons.team.hub import Hub
from tokenaddons.team.link import Link, Unavailable

log = logging.getLogger(__name__)

ALERTS = (0.5, 0.8, 1.0)
DEFAULT_OUTPUT_TOKENS = 4096  # when a request sets no output cap
RETRY_READ_S = 5.0  # how often spend that could not be read is tried again, as requests come
MIGRATIONS = [
    """
    CREATE TABLE budget_limits (scope TEXT, window TEXT, limit_usd REAL, timezone TEXT,
                                PRIMARY KEY (scope, window));
    """,
]


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
    def __init__(self, store: Store, settings: Published | None = None, team: Hub | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.team = team
        self.team_spent: dict[tuple, float] = {}  # window key -> every proxy's spend, as Redis last said
        if team is not None:
            team.every_second(self._report_all)
        store.add_schema("budget_schema", MIGRATIONS)
        self.settings = settings if settings is not None else Published()
        self.clock = clock
        self.spent: dict[tuple, float] = defaultdict(float)  # window key -> billed USD
        self.reserved: dict[tuple, float] = defaultdict(float)  # window key -> USD held by requests in flight
        self.alerted: set[tuple] = set()
        self._rebuilt_for: tuple | None = None
        self.unreadable: str | None = None  # why spend so far could not be read from the store
        self._read_again_at = 0.0
        self._reading: asyncio.Task | None = None
        # options, parsed in configure
        self.caps: dict[tuple[str, str], float] = {}  # ("global" | "project", window) -> USD
        self.tz_name = "UTC"
        self.tz = ZoneInfo("UTC")
        self.expected_output = 0
        self.fail_open = False
        self._capped: tuple[int, bool] | None = None  # (settings generation, whether any cap is set)

    def load(self, loader) -> None:
        for w in WINDOWS:
            loader.add_option(f"budget_{w}_usd", str, "0",
                              f"Spend cap per {w} window in US dollars, over all traffic (0 = off).")
            loader.add_option(f"budget_project_{w}_usd", str, "0",
                              f"Spend cap per {w} window for each project (X-Tokenaddons-Project; 0 = off).")
        loader.add_option("budget_timezone", str, "UTC", "Time zone of the budget windows' calendar.")
        loader.add_option("budget_expected_output_tokens", int, 0,
                          "Output tokens to reserve per request instead of its max_tokens (0 = its max_tokens).")
        loader.add_option("budget_fail_open", bool, False,
                          "Let requests under a cap through when the spend so far cannot be read from the event "
                          "store, or in team mode from Redis (default: they are refused; in team mode they are "
                          "then checked against this proxy's own spend).")

    def configure(self, updated) -> None:
        self.caps = {(scope, w): number(f"budget_{'project_' if scope == 'project' else ''}{w}_usd")
                     for scope in ("global", "project") for w in WINDOWS}
        try:
            self.tz = ZoneInfo(ctx.options.budget_timezone)
        except (ValueError, KeyError) as e:
            raise exceptions.OptionsError(f"budget_timezone: unknown time zone {ctx.options.budget_timezone!r}") from e
        self.tz_name = ctx.options.budget_timezone
        if ctx.options.budget_expected_output_tokens < 0:
            raise exceptions.OptionsError("budget_expected_output_tokens must not be negative")
        self.expected_output = ctx.options.budget_expected_output_tokens
        self.fail_open = ctx.options.budget_fail_open
        self._capped = None
        self._sync()

    def _sync(self) -> None:
        """Spend per scope and the saved limits, for the current store, time
        zone, options and settings file."""
        events = self.store.events
        if events is None:
            self._rebuilt_for = None
            self._unreadable("no event store is open")
            return
        source = (str(events.path), self.tz_name, self.settings.generation)
        if source != self._rebuilt_for:
            self._rebuilt_for = source
            events.flush()  # spend settled but not yet written must count
            self._spend_read(self._read_spend(events.path))
        limits = self.limits()
        tz = self.tz_name

        def save(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM budget_limits")
            conn.executemany("INSERT INTO budget_limits VALUES (?,?,?,?)",
                             [(scope, w, usd, tz) for scope, w, usd in limits])

        events.submit(save)

    def limits(self) -> list[tuple[str, str, float]]:
        """(scope, window, USD) of every cap; scope "project" is the per-project default."""
        out = [(scope, w, usd) for (scope, w), usd in self.caps.items()]
        for kind, named in self.settings.values.budgets.items():
            for name, caps in named.items():
                out.extend((f"{kind}:{name}", w, usd) for w, usd in caps.items())
        return out

    def limit(self, scope: str, window: str) -> float:
        if scope == "global":
            return self.caps[("global", window)]
        kind, name = scope.split(":", 1)
        found = self.settings.values.budgets.get(kind, {}).get(name, {}).get(window)
        if found is None and kind == "project":
            return self.caps[("project", window)]
        return found or 0.0

    def _patterns(self) -> list[str]:
        return list(self.settings.values.budgets.get("model", {}))

    def _read_spend(self, path) -> dict[tuple, float] | str:
        """Spend of the current windows, from the metered requests (safe in a
        worker thread: it only reads); a string says why it could not be read."""
        spent: dict[tuple, float] = defaultdict(float)
        tz = self.tz
        now = self.clock()
        patterns = self._patterns()
        try:
            with closing(connect(path, readonly=True)) as conn:  # `with conn` alone would leave it open
                for name in WINDOWS:
                    start, _ = window_bounds(name, now, tz)
                    for scope, usd in spend_by_scope(conn, start, patterns).items():
                        spent[(scope, name, start)] += usd
        except sqlite3.Error as e:
            return f"the spend so far could not be read from the event store {path} ({e})"
        return spent

    def _spend_read(self, found: dict[tuple, float] | str) -> None:
        """Take what `_read_spend` found (on the event loop)."""
        if isinstance(found, str):
            self._unreadable(found)
            return
        if self.unreadable is not None:
            log.warning("tokenaddons budget: the spend so far is read again; budgets are enforced")
        self.unreadable = None
        self.spent = found

    def _unreadable(self, why: str) -> None:
        if why != self.unreadable:
            log.warning("tokenaddons budget: %s; %s", why, "requests under a cap go through (budget_fail_open)"
                        if self.fail_open else "requests under a cap are refused until it can be read")
        self.unreadable = why
        self._read_again_at = self.clock() + RETRY_READ_S

    def _read_again(self) -> None:
        """Try the store again in a worker thread, at most every RETRY_READ_S."""
        events = self.store.events
        if events is None or self.clock() < self._read_again_at or self._reading is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._read_again_at = self.clock() + RETRY_READ_S

        async def read() -> None:
            try:
                await asyncio.to_thread(events.flush)
                self._spend_read(await asyncio.to_thread(self._read_spend, events.path))
            finally:
                self._reading = None

        self._reading = loop.create_task(read())

    def _any_cap(self) -> bool:
        """Whether any cap is set, in the options or the settings file (without
        one, no request has a window to check or alert on)."""
        generation = self.settings.generation
        if self._capped is None or self._capped[0] != generation:
            self._capped = (generation, any(usd > 0 for _, _, usd in self.limits()))
        return self._capped[1]

    def windows(self, ex: Exchange, now: float) -> list[Window]:
        if not self._any_cap():
            return []
        tz = self.tz
        out = []
        for scope in scopes_of(ex.project, ex.provider, ex.model, self._patterns()):
            for name in WINDOWS:
                limit = self.limit(scope, name)
                if limit > 0:
                    out.append(Window(scope, name, limit, *window_bounds(name, now, tz)))
        return out

    def estimate(self, ex: Exchange) -> float:
        """Worst-case USD of a request before it is sent, at the dearest target of
        route's chain (a fallback may serve it); never negative."""
        return max((self._estimate_at(ex, provider, model or "")
                    for provider, model in ex.chain or [(ex.provider, ex.model or "")]), default=0.0)

    def _estimate_at(self, ex: Exchange, provider: str, model: str) -> float:
        prices = pricing.unit_prices(provider, model)
        if prices is None:
            return 0.0
        inp = ex.input_tokens()
        if self.expected_output:
            out = self.expected_output
        else:
            limits = pricing.model_limits(provider, model)
            out = worst_output(output_cap(ex.body), inp, limits.max_output, limits.context_window,
                               DEFAULT_OUTPUT_TOKENS)
        return max(0.0, inp * prices.input + out * prices.output)

    def request(self, flow: http.HTTPFlow) -> Awaitable | None:
        """Synchronous, except in team mode: then a coroutine mitmproxy awaits."""
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow):
            return None  # answered here (a cache hit, one following a stream in flight): costs nothing
        if self._rebuilt_for is not None and self._rebuilt_for[2] != self.settings.generation:
            self._sync()  # the settings file was edited: new scopes, new limits
        if self.unreadable is not None and self.windows(ex, self.clock()):
            self._read_again()  # for the requests after this one
            if not self.fail_open:
                refuse(flow, "budget", "overloaded", f"{self.unreadable}; requests under a budget are refused "
                       "until it can be read (budget_fail_open=true lets them through)", status=503,
                       retry_after=RETRY_READ_S, headers={"x-tokenaddons-budget": "unreadable"})
                ex.decide("budget", "refused", reason="spend unreadable")
                return None
        now = self.clock()
        windows = self.windows(ex, now)
        need = self.estimate(ex) if windows else 0.0
        shared = self._shared() if windows else None
        if shared is not None:
            return self._reserve_shared(flow, ex, shared, windows, need, now)
        self._reserve_local(flow, ex, windows, need, now)
        return None

    def _reserve_local(self, flow: http.HTTPFlow, ex: Exchange, windows: list[Window], need: float,
                       now: float) -> None:
        # check every window, then reserve in all: nothing awaits in between
        for w in windows:
            spent = self.spent[w.key] + self.reserved[w.key]
            if spent + need > w.limit:
                return self._refuse(flow, ex, w, spent, need, now)
        for w in windows:
            self.reserved[w.key] += need
        self._hold(ex, windows, need, now)

    def _hold(self, ex: Exchange, windows: list[Window], need: float, now: float) -> None:
        # settled even without a cap: spend must be known when a cap is set later
        ex.state["budget"] = ([w.key for w in windows], need, now)
        ex.on_settle("budget", self.settle)

    # -- team mode
    def _shared(self) -> SharedBudget | None:
        team = self.team
        if team is None or team.link is None:
            return None
        return team.part("budget", lambda link: SharedBudget(link, team.instance))

    async def _reserve_shared(self, flow: http.HTTPFlow, ex: Exchange, shared: SharedBudget,
                              windows: list[Window], need: float, now: float) -> None:
        try:
            refused, total = await shared.reserve(self, [(w.key, w.limit, w.end) for w in windows], need)
        except Unavailable as e:
            if self.fail_open:  # this proxy's own spend is all it can check
                return self._reserve_local(flow, ex, windows, need, now)
            refuse(flow, "budget", "overloaded",
                   f"the team's budgets are kept in Redis at {shared.link.where}, which cannot be reached ({e}); "
                   "requests under a budget are refused until it is back (budget_fail_open=true lets them "
                   "through against this proxy's own spend)", status=503, retry_after=1,
                   headers={"x-tokenaddons-budget": "redis unreachable"})
            ex.decide("budget", "refused", reason="redis unreachable")
            return None
        if refused is not None:
            return self._refuse(flow, ex, windows[refused], total, need, now)
        self._hold(ex, windows, need, now)
        ex.state["budget_shared"] = shared

    async def _report_all(self, link: Link) -> None:
        """Every second: this proxy's own spend and holds in the current windows, to
        Redis; that is all it takes to rebuild a window after Redis lost its data."""
        shared = self._shared()
        if shared is None or self.unreadable is not None:  # an unread spend would report too little
            return
        now = self.clock()
        ends = {}
        for name in WINDOWS:
            start, end = window_bounds(name, now, self.tz)
            ends[name] = (start, end)
        current = {key: ends[key[1]][1] for key in (*self.spent, *self.reserved) if ends[key[1]][0] == key[2]}
        shared.forget_ended(now)
        self.team_spent = await shared.report(self, current)

    def _report_later(self, ex: Exchange, keys: list[tuple], at: float) -> None:
        shared = ex.state.pop("budget_shared", None) or self._shared()
        if shared is None:
            return
        ends = {name: window_bounds(name, at, self.tz)[1] for name in WINDOWS}

        async def report() -> None:
            self.team_spent.update(await shared.report(self, {key: ends[key[1]] for key in keys}))

        shared.link.spawn(report())

    def _spent(self, key: tuple) -> float:
        return max(self.spent[key], self.team_spent.get(key, 0.0))

    def _refuse(self, flow: http.HTTPFlow, ex: Exchange, w: Window, spent: float, need: float, now: float) -> None:
        reset = datetime.fromtimestamp(w.end, self.tz).isoformat()
        message = (f"the {w.describe()} of ${w.limit:g} is used up: ${spent:.4f} spent or reserved, this request "
                   f"may cost up to ${need:.4f}; it resets at {reset}")
        refuse(flow, "budget", "rate_limit", message, retry_after=w.end - now,
               headers={"x-tokenaddons-budget": f"{w.scope} {w.name}"})
        ex.decide("budget", "refused", scope=w.scope, window=w.name, limit_usd=w.limit,
                  spent_usd=round(spent, 6), needed_usd=round(need, 6))
        for threshold in ALERTS:
            self._alert(ex, w, threshold)
        log.warning("tokenaddons budget: refused %s: %s", flow.request.path, message)

    def settle(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """After the meter: the reservation traded for what the request cost."""
        held = ex.state.pop("budget", None)
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
        if need and self._unmetered(flow, ex):
            cost = need
            log.warning("tokenaddons budget: the cost of %s could not be metered; its reservation of $%.6f "
                        "counts as spent", ex.path, need)
        touched = list(keys)
        if cost:
            tz = self.tz
            starts = {name: window_bounds(name, at, tz)[0] for name in WINDOWS}
            for scope in scopes_of(ex.project, ex.provider, ex.served_model or ex.model, self._patterns()):
                for name, start in starts.items():
                    self.spent[(scope, name, start)] += cost
                    touched.append((scope, name, start))
        if self.team is not None and self.team.link is not None:
            self._report_later(ex, touched, at)
        self._alerts(ex)

    @staticmethod
    def _unmetered(flow: http.HTTPFlow, ex: Exchange) -> bool:
        """The meter failed, or upstream answered and its cost is unknown: the
        provider may have billed it, so the reservation stands."""
        if any(d.addon == "meter" and d.action == "failed" for d in ex.decisions):
            return True
        resp = flow.response
        return (ex.cost_usd is None and not ex.answered_by and resp is not None and resp.status_code < 400
                and ex.usage is not None)

    def _alerts(self, ex: Exchange) -> None:
        for w in self.windows(ex, self.clock()):
            for threshold in ALERTS:
                if self._spent(w.key) >= threshold * w.limit:
                    self._alert(ex, w, threshold)

    def _alert(self, ex: Exchange, w: Window, threshold: float) -> None:
        """Once per window and threshold: a decision row and a warning. A refusal
        counts as reaching 100 %: the window has no room left."""
        mark = (*w.key, threshold)
        if mark in self.alerted:
            return
        self.alerted.add(mark)
        spent = self._spent(w.key)
        log.warning("tokenaddons budget: %s at %d%% ($%.4f of $%g)", w.describe(), int(threshold * 100),
                    spent, w.limit)
        events = self.store.events
        if events is not None:
            events.put_decision({
                "exchange_id": None, "ts": self.clock(), "addon": "budget", "action": "alert",
                "detail": json.dumps({"scope": w.scope, "window": w.name, "percent": int(threshold * 100),
                                      "spent_usd": round(spent, 6), "limit_usd": w.limit, "resets": w.end}),
                "project": ex.project, "provider": ex.provider, "model": ex.model})


