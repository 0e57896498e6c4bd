"""Drive flows through addons the way mitmproxy does, without a network."""
from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3

from mitmproxy import http
from mitmproxy.test import tflow

REQUEST_HOOKS = ("requestheaders", "request")


async def call(addons, hook: str, flow: http.HTTPFlow) -> None:
    for addon in addons:
        fn = getattr(addon, hook, None)
        if fn is not None:
            result = fn(flow)
            if inspect.isawaitable(result):
                await result


async def arun_flow(addons, flow: http.HTTPFlow, stream_chunks: int | None = None,
                    error: str | None = None) -> http.HTTPFlow:
    """Request phase, then the recorded response (if any) as if upstream sent it.

    With `stream_chunks`, a streamed answer is fed to `flow.response.stream` in
    that many pieces, the way mitmproxy's HTTP layer does; with `error`, the
    stream breaks before its end and the error hook runs instead of response.
    """
    recorded = flow.response
    flow.response = None
    for hook in REQUEST_HOOKS:
        await call(addons, hook, flow)
    if flow.response is not None:  # an addon answered locally
        await call(addons, "responseheaders", flow)
        await call(addons, "response", flow)
        return flow
    if recorded is None:
        return flow
    body = recorded.raw_content or b""
    recorded.content = None if stream_chunks else recorded.content
    flow.response = recorded
    await call(addons, "responseheaders", flow)
    if stream_chunks and callable(flow.response.stream):
        size = max(1, len(body) // stream_chunks)
        sent = [flow.response.stream(body[i:i + size]) for i in range(0, len(body), size)]
        assert all(piece != b"" for piece in sent), "an empty chunk mid-stream ends an HTTP/1.1 body"
        out = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in sent)
        if error is None:
            out += flow.response.stream(b"")
        flow.metadata["client_saw"] = out
    elif stream_chunks:
        flow.response.content = body
    if error is not None:
        from mitmproxy.flow import Error

        flow.error = Error(error)
        await call(addons, "error", flow)
    else:
        await call(addons, "response", flow)
    return flow


def run_flow(addons, flow: http.HTTPFlow, stream_chunks: int | None = None) -> http.HTTPFlow:
    return asyncio.run(arun_flow(addons, flow, stream_chunks))


def rows(store) -> list[dict]:
    """Event rows of a tokenaddons.store.Store addon, after flushing its writer."""
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
    conn.close()
    return out


def make_flow(path: str, body, headers=None, response: http.Response | None = None) -> http.HTTPFlow:
    f = tflow.tflow(resp=False)
    f.request.method = "POST"
    f.request.path = path
    f.request.headers.clear()
    for k, v in (headers or {"content-type": "application/json"}).items():
        f.request.headers[k] = v
    # raw: a body given with a content-encoding header is already encoded
    f.request.raw_content = body if isinstance(body, bytes) else json.dumps(body).encode()
    f.response = response
    return f


def sse_response(events: list[bytes]) -> http.Response:
    return http.Response.make(200, b"".join(events), {"content-type": "text/event-stream"})


class Clock:
    """Injected time for addons that take a `clock`."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now
