"""The bundle in a process of its own, for offload_addon.py (bench_offload.py):
a measurement of the design where mitmproxy's event loop only hands each
request to a worker process and the features run there, on another core.

The worker runs the bundle's parts in this process (bench_parts.running: the
hooks dispatched by mitmproxy's addon manager, an event store of its own) and
serves one Unix socket. Per request the loop sends the method, path, headers
and body; the worker runs the request phase on a flow built from them and
answers with the body to send upstream and the headers its answer gets (the
cache status), or with an answer made here (a cache hit, a refusal). The upstream's answer comes back later, without a reply: the
worker runs the response phase then (metering, the cache fill, budgets).
Whole JSON answers only: streams, and answers scrub must restore before the
client reads them, are out of this measurement's scope.

    python benchmarks/offload_worker.py SOCKET_PATH STORE_PATH
"""
from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

import orjson
from mitmproxy import http
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_parts import running  # noqa: E402

from tokenaddons import bundle  # noqa: E402
from tokenaddons.addons.cache import HEADER  # noqa: E402
from tokenaddons.exchange import Exchange  # noqa: E402
from tokenaddons.test.flows import make_flow  # noqa: E402
from tokenaddons.test.pipeline import manager  # noqa: E402

# a frame: kind, exchange id, then the lengths of a JSON head and of a body, then both
FRAME = struct.Struct("!cIII")
REQUEST, RESPONSE, SEND, ANSWER = b"q", b"r", b"s", b"a"


def frame(kind: bytes, rid: int, head, body: bytes) -> bytes:
    meta = orjson.dumps(head)
    return FRAME.pack(kind, rid, len(meta), len(body)) + meta + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[bytes, int, object, bytes]:
    kind, rid, meta, size = FRAME.unpack(await reader.readexactly(FRAME.size))
    head = orjson.loads(await reader.readexactly(meta))
    return kind, rid, head, await reader.readexactly(size)


class Worker:
    def __init__(self, parts: list, port: int):
        self.parts = parts
        self.port = port  # where the flows say they go (bench_parts.running's stand-in)
        self.flows: dict[int, http.HTTPFlow] = {}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks = set()
        try:
            while True:
                kind, rid, head, body = await read_frame(reader)
                task = asyncio.ensure_future(self.handle(kind, rid, head, body, writer))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.IncompleteReadError:
            writer.close()

    async def handle(self, kind: bytes, rid: int, head, body: bytes, writer: asyncio.StreamWriter) -> None:
        m = manager()
        if kind == REQUEST:
            method, path, headers = head
            flow = make_flow(path, body, dict(headers))
            flow.request.method = method
            flow.request.host, flow.request.port = "127.0.0.1", self.port
            await m.handle_lifecycle(HttpRequestHeadersHook(flow))
            await m.handle_lifecycle(HttpRequestHook(flow))
            if flow.response is not None:  # answered here: the phase ends here too
                await m.handle_lifecycle(HttpResponseHeadersHook(flow))
                await m.handle_lifecycle(HttpResponseHook(flow))
                r = flow.response
                writer.write(frame(ANSWER, rid, [r.status_code, list(r.headers.items())], r.content or b""))
            else:
                self.flows[rid] = flow
                # what the answer's headers get (Cache.responseheaders), decided now
                ex = Exchange.of(flow)
                added = {HEADER: ex.cache_status} if ex is not None and ex.cache_status else {}
                writer.write(frame(SEND, rid, [list(flow.request.headers.items()), added],
                                   flow.request.raw_content or b""))
        elif kind == RESPONSE:
            flow = self.flows.pop(rid, None)
            if flow is None:
                return
            status, headers = head
            flow.response = http.Response.make(status, body, dict(headers))
            await m.handle_lifecycle(HttpResponseHeadersHook(flow))
            await m.handle_lifecycle(HttpResponseHook(flow))


def main() -> None:
    path, store = sys.argv[1], sys.argv[2]
    parts = bundle.addons()
    with running(parts, sets={"store_path": store}) as (loop, port):
        worker = Worker(parts, port)
        server = loop.run_until_complete(asyncio.start_unix_server(worker.serve, path))
        print("ready", flush=True)
        loop.run_until_complete(server.serve_forever())


if __name__ == "__main__":
    main()
