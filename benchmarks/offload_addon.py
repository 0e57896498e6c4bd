"""mitmproxy's side of the worker-process design (bench_offload.py): each
request's body goes to the bundle running in offload_worker.py and comes back
as what to send upstream, or as the answer; the upstream's answer goes there
to be metered, after it left for the client. What stays on mitmproxy's event
loop is the handoff.

    mitmdump -s benchmarks/offload_addon.py --set store_path=FILE ...
"""
from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mitmproxy import ctx, http

sys.path.insert(0, str(Path(__file__).resolve().parent))
from offload_worker import ANSWER, REQUEST, RESPONSE, frame, read_frame  # noqa: E402

WORKER = Path(__file__).with_name("offload_worker.py")


class Offload:
    def __init__(self) -> None:
        self.worker: subprocess.Popen | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: dict[int, asyncio.Future] = {}
        self.ids = itertools.count()
        self.rid: dict[http.HTTPFlow, int] = {}
        self.added: dict[http.HTTPFlow, dict] = {}  # headers the answer gets
        self.path = ""
        self.connected = asyncio.Event()

    def load(self, loader) -> None:
        loader.add_option("store_path", str, "events.db", "The worker's event store (the bundle's option).")

    def configure(self, updated) -> None:
        if self.worker is None:  # started and ready before the proxy listens
            self.path = os.path.join(tempfile.mkdtemp(prefix="offload-"), "worker.sock")
            self.worker = subprocess.Popen([sys.executable, str(WORKER), self.path, ctx.options.store_path],
                                           stdout=subprocess.PIPE)
            self.worker.stdout.readline()  # "ready"

    async def running(self) -> None:
        reader, self.writer = await asyncio.open_unix_connection(self.path)
        self.reading = asyncio.ensure_future(self._answers(reader))
        self.connected.set()

    def done(self) -> None:
        if self.worker is not None:
            self.worker.terminate()

    async def _answers(self, reader: asyncio.StreamReader) -> None:
        while True:
            kind, rid, head, body = await read_frame(reader)
            self.waiting.pop(rid).set_result((kind, head, body))

    async def request(self, flow: http.HTTPFlow) -> None:
        await self.connected.wait()
        req = flow.request
        rid = next(self.ids)
        answer = self.waiting[rid] = asyncio.get_running_loop().create_future()
        self.writer.write(frame(REQUEST, rid, [req.method, req.path, list(req.headers.items())],
                                req.raw_content or b""))
        kind, head, body = await answer
        if kind == ANSWER:
            status, headers = head
            flow.response = http.Response.make(status, body, dict(headers))
            return
        _, self.added[flow] = head  # (the worker's request headers: nothing these requests send changes them)
        self.rid[flow] = rid
        if body != req.raw_content:
            req.raw_content = body
            req.headers["content-length"] = str(len(body))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            flow.response.headers.update(self.added.pop(flow, {}))

    def response(self, flow: http.HTTPFlow) -> None:
        rid = self.rid.pop(flow, None)
        if rid is not None and flow.response is not None:
            r = flow.response
            self.writer.write(frame(RESPONSE, rid, [r.status_code, list(r.headers.items())], r.raw_content or b""))

    def error(self, flow: http.HTTPFlow) -> None:
        # (the worker keeps such a flow unmetered: errors are outside this measurement)
        self.rid.pop(flow, None)
        self.added.pop(flow, None)


addons = [Offload()]
