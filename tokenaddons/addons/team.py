"""Team mode: the addon that opens the team's Redis named by `redis_url`.

Without `redis_url` it does nothing and costs nothing. With it, the cache,
budget and rate-limit addons share their state through Redis
(`tokenaddons/team/`), reading the link from the `Hub` the bundle hands to
them and to this addon. This addon owns the connection:
it says once per outage that Redis cannot be reached and once that it is back
(the link itself fails calls fast meanwhile and tries again every second),
keeps a status file beside the event store that `tokenaddons stats` shows,
and runs the other addons' periodic reports (a budget's own spend) every
second while Redis answers.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from contextlib import closing

from mitmproxy import ctx, exceptions

from tokenaddons.addons.store import Store
from tokenaddons.options import number
from tokenaddons.store import connect, health
from tokenaddons.team.hub import Hub
from tokenaddons.team.link import Link, Unavailable, redact

log = logging.getLogger(__name__)

SYNC_S = 1.0
# one id per event store, made once: a proxy's spend is its own store's rows, so
# a restarted proxy reports under the same name what it reported before
MIGRATIONS = [
    """
    CREATE TABLE team_instance (id TEXT NOT NULL);
    INSERT INTO team_instance VALUES (lower(hex(randomblob(8))));
    """,
]


class Team:
    def __init__(self, store: Store, hub: Hub):
        self.store = store
        store.add_schema("team_schema", MIGRATIONS)
        self.hub = hub
        self._keeper: asyncio.Task | None = None
        self._status_path = None

    def load(self, loader) -> None:
        loader.add_option("redis_url", str, "",
                          "Team mode: redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS) of a Redis server "
                          "through which several proxies share one cache, one budget and one set of rate limits "
                          "(empty: this proxy alone).")
        loader.add_option("redis_timeout_s", str, "0.5",
                          "Seconds a Redis connect or command may take before Redis counts as down; requests "
                          "then carry on without it.")

    def configure(self, updated) -> None:
        timeout = number("redis_timeout_s")
        url = ctx.options.redis_url.strip()
        link = self.hub.link
        current = (link.url, link.timeout) if link is not None else ("", None)
        if (url, timeout) != current and (url or link is not None):
            link = None
            if url:
                try:
                    link = Link(url, timeout, on_change=self._changed)
                except ValueError as e:
                    raise exceptions.OptionsError(f"redis_url {redact(url)}: {e}") from None
                log.info("tokenaddons team: sharing the cache, budgets and rate limits through Redis at %s",
                         link.where)
            self._replace(link)
        if self.hub.link is not None and ("store_path" in updated or not self.hub.instance):
            self._unpublish()
            self.hub.set(self.hub.link, self._instance_id())
            self._publish()
            self._start()

    def _instance_id(self) -> str:
        events = self.store.events
        if events is None:
            return ""
        try:
            with closing(connect(events.path, readonly=True)) as conn:
                row = conn.execute("SELECT id FROM team_instance").fetchone()
        except sqlite3.Error as e:
            raise exceptions.OptionsError(f"redis_url: cannot read this store's team id from {events.path}: {e}")
        return row[0]

    def _replace(self, link: Link | None) -> None:
        old = self.hub.link
        self.hub.set(link, "")
        if old is not None:
            self._unpublish()
            try:
                asyncio.get_running_loop().create_task(old.close())
            except RuntimeError:
                pass

    # -- the keeper: starts with the event loop, reports every second
    def running(self) -> None:
        if self.hub.link is not None:  # without redis_url, not even a timer
            self._start()

    def _start(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # `running` starts it
        if self._keeper is None or self._keeper.done():
            self._keeper = loop.create_task(self._keep())

    async def _keep(self) -> None:
        first = True
        while True:
            link = self.hub.link
            if link is not None and link.up:
                try:
                    if first:  # an unreachable Redis is said at start, not at the first request
                        await link.call(link.client.ping)
                        first = False
                    await self._run_jobs(link)
                except Unavailable:
                    pass
            await asyncio.sleep(SYNC_S)

    async def _run_jobs(self, link: Link) -> None:
        for job in self.hub.jobs:
            try:
                await job(link)
            except Unavailable:
                return
            except Exception:
                log.exception("tokenaddons team: a periodic report failed")

    def _changed(self, link: Link) -> None:
        if link is not self.hub.link:
            return
        if link.up:
            log.warning("tokenaddons team: Redis at %s is back; the cache, budgets and rate limits are shared "
                        "again", link.where)
            link.spawn(self._run_jobs(link))  # a window's spend rebuilt at once if Redis lost it
        else:
            budgets = ("requests under a budget go through against this proxy's own spend (budget_fail_open)"
                       if self._fail_open() else "requests under a budget are refused")
            log.warning("tokenaddons team: Redis at %s cannot be reached (%s); until it is back this proxy uses "
                        "its own cache and rate limits, and %s. Trying again every second.",
                        link.where, link.why, budgets)
        self._publish()

    @staticmethod
    def _fail_open() -> bool:
        return bool(getattr(ctx.options, "budget_fail_open", False))

    def _publish(self) -> None:
        link, events = self.hub.link, self.store.events
        if link is None or events is None:
            return
        status = {"state": "ok" if link.up else "down", "redis": link.where, "since": link.down_since,
                  "reason": link.why, "fail_open": self._fail_open(), "at": time.time()}
        try:
            health.publish(events.path, status, kind="team")
            self._status_path = events.path
        except OSError as e:
            log.warning("tokenaddons team: cannot write the team status beside the store: %s", e)

    def _unpublish(self) -> None:
        if self._status_path is not None:
            health.publish(self._status_path, None, kind="team")
            self._status_path = None

    async def done(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        link = self.hub.link
        self.hub.set(None, "")
        self._unpublish()
        if link is not None:
            await link.close()
