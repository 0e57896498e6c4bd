"""Fanning one upstream stream out to identical requests that arrive while it flows.

mitmproxy cannot answer a request with a body that is still being produced, so
a waiting request is pointed at the loopback server (engines/loopback.py) inside
the proxy's own event loop, which relays the leader's chunks as the leader's
client receives them. The waiting flow still passes every addon (the meter sees it as
a cache hit: nothing billed).
"""
from __future__ import annotations

import asyncio
import logging
import secrets

from tokenaddons.engines.loopback import Incoming, LoopbackServer, Reply

log = logging.getLogger(__name__)


class Broadcast:
    """One stream's chunks, as they arrive, for any number of readers."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.content_type = "text/event-stream"
        self.started = asyncio.Event()  # a first chunk arrived, or the stream ended
        self.done = False
        self.failed = False
        self.entry = None  # the cache entry once complete (usage and cost to record as saved)
        self._changed = asyncio.Event()

    def push(self, chunk: bytes) -> None:
        if chunk:
            self.chunks.append(chunk)
            self.started.set()
            self._wake()

    def finish(self, ok: bool, entry=None) -> None:
        self.done, self.failed, self.entry = True, not ok, entry
        self.started.set()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self):
        """Every chunk, from the first, waiting for new ones until the end."""
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                return
            await self._changed.wait()


class Cut(Exception):
    """The leader's stream failed: its followers' streams end cut too."""


class FanoutServer(LoopbackServer):
    """Relays a stream in flight to each request pointed at /tokenaddons-fanout/TOKEN."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, Broadcast] = {}

    def publish(self, broadcast: Broadcast) -> str:
        token = secrets.token_hex(16)
        self.streams[token] = broadcast
        return token

    def retire(self, token: str) -> None:
        self.streams.pop(token, None)

    async def handle(self, request: Incoming) -> Reply:
        broadcast = self.streams.get(request.target.split("?")[0].rsplit("/", 1)[-1])
        if broadcast is None:
            return Reply(404)
        return Reply(200, [("content-type", broadcast.content_type)], chunks=self._relay(broadcast))

    @staticmethod
    async def _relay(broadcast: Broadcast):
        async for chunk in broadcast.follow():
            yield chunk
        if broadcast.failed:  # a failed leader's stream ends cut, like the leader's own
            raise Cut()
