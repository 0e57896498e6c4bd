"""The connection to the team's Redis server, and whether it can be used.

Every call is bounded by one short timeout (connect and command alike). A
timeout that fired late says this proxy's own event loop was held up (a busy
moment at start-up, a loaded machine), not Redis: that call is tried once
more. The first call that finds Redis unreachable marks it down: the link tells its
owner once (a warning per outage), every later call fails at once with
`Unavailable` instead of waiting on a dead server, and a task pings it every
`RETRY_S` until it answers, then tells the owner it is back. Callers catch
`Unavailable` and carry on with this proxy's own state.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

RETRY_S = 1.0  # how often a down Redis is tried again
STALL_S = 0.1  # a timeout that fires this late means this process's event loop was held up, not Redis
PREFIX = "tokenaddons:"
SCHEMES = ("redis", "rediss", "unix")


class Unavailable(Exception):
    """Redis cannot be used for this call; the message says why."""


def redact(url: str) -> str:
    """The URL with any password replaced by ***: what logs and status files show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:***@{netloc.rsplit('@', 1)[1]}"
    query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def describe(error: BaseException) -> str:
    text = str(error).strip()
    if error.__class__.__name__ == "TimeoutError" and not text:  # asyncio's, or redis's
        text = "timed out"
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


class Link:
    def __init__(self, url: str, timeout: float, on_change: Callable[[Link], None] | None = None):
        scheme = urlsplit(url).scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"a Redis URL starts with redis://, rediss:// (TLS) or unix://, not {scheme or url!r}")
        self.url = url
        self.where = redact(url)
        self.timeout = timeout
        self.prefix = PREFIX
        self.on_change = on_change
        # imported here: only team mode needs redis (and it loads nothing else at start-up)
        from redis.asyncio import Redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError
        from redis.retry import Retry

        # the server cannot be reached (or refuses us): an outage, not one call's mistake
        self.outage = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
        self.refused = RedisError  # the server answered, with an error
        # one quiet retry: a pooled connection that went stale across a Redis restart reconnects
        self.client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                     retry=Retry(NoBackoff(), 1), client_name="tokenaddons")
        self.down_since: float | None = None  # wall-clock time Redis was found down
        self.why: str | None = None
        self._recovering: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._complained: set[str] = set()

    @property
    def up(self) -> bool:
        return self.down_since is None

    def script(self, lua: str):
        """A Lua script, sent by its hash (and again in full after a Redis restart forgot it)."""
        return self.client.register_script(lua)

    async def call(self, fn: Callable[..., Awaitable], *args, **kwargs):
        """`await fn(*args, **kwargs)` bounded by the timeout; `Unavailable` at once while
        Redis is down. A call may reach Redis twice; the scripts are written so that
        is harmless (absolute writes, a claim already ours is ours)."""
        if self.down_since is not None:
            raise Unavailable(self.why)
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            started = loop.time()
            try:
                async with asyncio.timeout(self.timeout):  # no task per call, unlike wait_for
                    return await fn(*args, **kwargs)
            except self.outage as e:
                late = e.__class__.__name__ == "TimeoutError" and loop.time() - started > self.timeout + STALL_S
                if late and attempt == 1:
                    continue
                self.failed(e)
                raise Unavailable(self.why) from None
            except self.refused as e:  # the server answered, with an error: this call's problem, not an outage
                why = describe(e)
                if why not in self._complained:
                    self._complained.add(why)
                    log.warning("tokenaddons team: Redis at %s refused a command (%s)", self.where, why)
                raise Unavailable(why) from None

    def later(self, fn: Callable[..., Awaitable], *args, **kwargs) -> None:
        """Run one call in the background (a fill, a pause): nobody waits for it,
        and a failure only marks Redis down."""
        self.spawn(self.call(fn, *args, **kwargs))

    def spawn(self, work: Awaitable) -> None:
        """Run work that makes its own calls in the background; `Unavailable` ends it quietly."""
        async def run() -> None:
            try:
                await work
            except Unavailable:
                pass

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)

    def failed(self, error: BaseException) -> None:
        if self.down_since is not None:
            return
        self.down_since, self.why = time.time(), describe(error)
        self._recovering = asyncio.get_running_loop().create_task(self._recover())
        if self.on_change:
            self.on_change(self)

    async def _recover(self) -> None:
        # connections of the server that went away are useless: drop them all
        try:
            await self.client.connection_pool.disconnect()
        except Exception:  # already broken: nothing to close cleanly
            pass
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await asyncio.wait_for(self.client.ping(), self.timeout)
            except (self.refused, *self.outage) as e:
                self.why = describe(e)
                continue
            self.down_since, self.why, self._recovering = None, None, None
            if self.on_change:
                self.on_change(self)
            return

    async def close(self) -> None:
        for task in [self._recovering, *self._tasks]:
            if task is not None:
                task.cancel()
        try:
            await self.client.aclose()
        except Exception:
            pass
