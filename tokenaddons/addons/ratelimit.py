"""Rate limits: token buckets per provider and per project, for requests and input
tokens per minute. A request over the limit waits for room (up to
`ratelimit_max_wait_s`, on mitmproxy's event loop, never blocking it), then is
refused with the provider's own 429. An upstream 429 or 529 with `retry-after`
pauses that provider for the credentials that were told no (one caller's
exhausted key says nothing about another's), for that long but at most
`ratelimit_max_pause_s`, so a client's retry storm does not keep hammering a
provider that already said no, and a day-long retry-after cannot shut it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mitmproxy import ctx, http

from tokenaddons.engines.retry_after import retry_after
from tokenaddons.errors import refuse
from tokenaddons.exchange import Exchange, handled
from tokenaddons.options import number

log = logging.getLogger(__name__)


@dataclass
class Bucket:
    per_minute: float
    level: float = field(default=-1.0)  # tokens available; -1 = full on first use
    stamp: float = 0.0

    def refill(self, now: float) -> None:
        if self.level < 0:
            self.level, self.stamp = self.per_minute, now
        self.level = min(self.per_minute, self.level + (now - self.stamp) * self.per_minute / 60)
        self.stamp = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until `amount` fits (0 = now). An amount above the whole
        bucket waits for a full bucket rather than forever."""
        self.refill(now)
        amount = min(amount, self.per_minute)
        return max(0.0, (amount - self.level) * 60 / self.per_minute)


class RateLimit:
    def __init__(self, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable] = asyncio.sleep):
        self.clock = clock
        self.sleep = sleep
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        # (provider, hash of the caller's credentials) -> unix time its pause ends
        self.paused: dict[tuple[str, str | None], float] = {}
        # options, parsed in configure
        self.limits: dict[tuple[str, str], int] = {}  # (scope, kind) -> per minute; 0 = off
        self.max_wait = 10.0
        self.max_pause = 60.0

    def load(self, loader) -> None:
        loader.add_option("ratelimit_rpm", int, 0, "Requests per minute to each provider (0 = no limit).")
        loader.add_option("ratelimit_itpm", int, 0, "Input tokens per minute to each provider (0 = no limit).")
        loader.add_option("ratelimit_project_rpm", int, 0, "Requests per minute for each project (0 = no limit).")
        loader.add_option("ratelimit_project_itpm", int, 0, "Input tokens per minute for each project (0 = no limit).")
        loader.add_option("ratelimit_max_wait_s", str, "10",
                          "How long a request over a rate limit may wait for room before it is refused.")
        loader.add_option("ratelimit_max_pause_s", str, "60",
                          "Longest pause an upstream 429/529 retry-after puts on a provider for one credential.")

    def configure(self, updated) -> None:
        o = ctx.options
        self.max_wait = number("ratelimit_max_wait_s")
        self.max_pause = number("ratelimit_max_pause_s")
        self.limits = {("provider", "rpm"): o.ratelimit_rpm, ("provider", "itpm"): o.ratelimit_itpm,
                       ("project", "rpm"): o.ratelimit_project_rpm, ("project", "itpm"): o.ratelimit_project_itpm}

    def _bucket(self, scope: str, name: str, kind: str, per_minute: int) -> Bucket:
        key = (scope, name, kind)
        b = self.buckets.get(key)
        if b is None or b.per_minute != per_minute:
            b = self.buckets[key] = Bucket(per_minute)
        return b

    def _needs(self, ex: Exchange) -> list[tuple[Bucket, float, str]]:
        needs = []
        for (scope, kind), per_minute in self.limits.items():
            name = ex.provider if scope == "provider" else ex.project
            if per_minute > 0 and name is not None:
                needs.append((self._bucket(scope, name, kind, per_minute), 1 if kind == "rpm" else ex.input_tokens(),
                              f"{kind} of {scope} {name}"))
        return needs

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow):
            return  # answered here (a cache hit, one following a stream in flight): costs nothing
        needs = self._needs(ex)
        pause = (ex.provider, ex.auth_hash)
        if not needs and self.paused.get(pause, 0.0) <= self.clock():
            return
        deadline = self.clock() + self.max_wait
        waited = 0.0
        while True:
            now = self.clock()
            waits = [(b.wait_for(n, now), why) for b, n, why in needs]
            waits.append((max(0.0, self.paused.get(pause, 0.0) - now),
                          f"{ex.provider} asked this credential to slow down"))
            wait, why = max(waits)
            if wait <= 0:
                for b, n, _ in needs:  # room everywhere: take it, with no await in between
                    b.refill(now)
                    b.level -= min(n, b.per_minute)
                if waited:
                    ex.decide("ratelimit", "delayed", waited_s=round(waited, 3))
                return
            if now + wait > deadline:
                refuse(flow, "ratelimit", "rate_limit",
                       f"rate limit reached ({why}); room again in {wait:.1f} s", retry_after=wait,
                       headers={"x-tokenaddons-ratelimit": why})
                ex.decide("ratelimit", "refused", reason=why, retry_after_s=round(wait, 3))
                return
            await self.sleep(wait)
            waited += wait

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        """Answers route did not pass on (it fell back to another target) pause
        their provider as soon as the answer that is passed on starts."""
        ex = Exchange.of(flow)
        for provider, status, seconds in ex.upstream_refusals if ex is not None else ():
            if status in (429, 529, 503):
                self._pause(ex, provider, status, seconds)

    def response(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        resp = flow.response
        if ex is None or not ex.known or ex.answered_by or resp is None or resp.status_code not in (429, 529, 503):
            return
        self._pause(ex, ex.provider, resp.status_code, retry_after(resp.headers, self.clock()))

    def _pause(self, ex: Exchange, provider: str, status: int, seconds: float | None) -> None:
        if seconds is None or not seconds > 0:  # none, zero, negative or NaN
            return
        now = self.clock()
        paused = min(seconds, self.max_pause)
        for key in [k for k, until in self.paused.items() if until <= now]:  # forget pauses that ended
            del self.paused[key]
        pause = (provider, ex.auth_hash)
        self.paused[pause] = max(self.paused.get(pause, 0.0), now + paused)
        log.warning("tokenaddons ratelimit: %s answered %d with retry-after %.0f s; pausing it for this "
                    "credential for %.1f s%s", provider, status, seconds, paused,
                    " (ratelimit_max_pause_s)" if paused < seconds else "")
