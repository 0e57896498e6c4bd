"""A small HTTP/1.1 server on loopback inside the proxy's own event loop.

mitmproxy cannot answer a request with a body that is still being produced,
so an addon that must produce a streamed answer itself (a stream fanned out to
waiting twins, an answer chosen among fallbacks) points the flow here: the
flow still passes every addon and every stream tap, as if upstream had
answered. One request per connection; a reply whose body iterator raises ends
without its last chunk, so the proxy sees the stream cut, as it was."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import h11

log = logging.getLogger(__name__)

MAX_REQUEST = 256 << 20  # a request body beyond this is refused (the proxy's own limit is lower)


@dataclass
class Incoming:
    method: str
    target: str  # path and query
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None  # a streamed body; raising mid-way cuts it
    close: Callable[[], Awaitable[None]] | None = None  # called once the reply is written or abandoned


class LoopbackServer:
    def __init__(self) -> None:
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

    async def handle(self, request: Incoming) -> Reply:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        reply: Reply | None = None
        try:
            request = await self._read(conn, reader)
            if request is None:
                return
            reply = await self.handle(request)
            await self._write(conn, writer, reply)
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("tokenaddons: the loopback server failed a request")
        finally:
            if reply is not None and reply.close is not None:
                try:
                    await reply.close()
                except Exception:
                    log.debug("tokenaddons: closing a reply failed", exc_info=True)
            writer.close()

    @staticmethod
    async def _read(conn: h11.Connection, reader: asyncio.StreamReader) -> Incoming | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST:
                    return None
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
                return Incoming(head.method.decode(), head.target.decode("latin-1"), headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    async def _write(conn: h11.Connection, writer: asyncio.StreamWriter, reply: Reply) -> None:
        headers = [(k, v) for k, v in reply.headers if k.lower() not in ("connection", "content-length",
                                                                         "transfer-encoding")]
        headers.append(("connection", "close"))
        if reply.chunks is None:
            headers.append(("content-length", str(len(reply.body))))
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers, reason=b"")))
        if reply.chunks is None:
            writer.write(conn.send(h11.Data(data=reply.body)) if reply.body else b"")
        else:
            await writer.drain()
            try:
                async for chunk in reply.chunks:
                    if chunk:
                        writer.write(conn.send(h11.Data(data=chunk)))
                        await writer.drain()
            except ConnectionError:
                raise
            except Exception as e:  # upstream broke off: so does this reply
                log.debug("tokenaddons: a relayed stream was cut (%s)", e)
                return
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
