"""Fanning one upstream stream out to identical requests that arrive while it flows.

mitmproxy cannot answer a request with a body that is still being produced, so
a waiting request is pointed at a small HTTP server on loopback inside the
proxy's own event loop, which relays the leader's chunks as the leader's client
receives them. The waiting flow still passes every addon (the meter sees it as
a cache hit: nothing billed).
"""
from __future__ import annotations

import asyncio
import logging
import secrets

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


class FanoutServer:
    def __init__(self) -> None:
        self.streams: dict[str, Broadcast] = {}
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def publish(self, broadcast: Broadcast) -> str:
        token = secrets.token_hex(16)
        self.streams[token] = broadcast
        return token

    def retire(self, token: str) -> None:
        self.streams.pop(token, None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(length)
            token = request_line.split(" ")[1].rsplit("/", 1)[-1]
            broadcast = self.streams.get(token)
            if broadcast is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                return
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {broadcast.content_type}\r\n"
                         f"transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode())
            async for chunk in broadcast.follow():
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            if not broadcast.failed:  # a failed leader's stream ends cut, like the leader's own
                writer.write(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            try:
                await writer.drain()
            except ConnectionError:
                pass
            writer.close()
