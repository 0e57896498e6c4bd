"""Drive flows through addons the way mitmproxy does, without a network.

Hooks are dispatched by mitmproxy's own addon manager (`master.addons`, as in
a running mitmdump: list order, async hooks awaited, an addon's exception
logged and contained), so the addons under test must be those of the current
`taddons.context`. Only the network is simulated: a recorded response is
handed over as if upstream had sent it, streamed in pieces when asked.
"""
from __future__ import annotations

import asyncio
import sqlite3

from mitmproxy import ctx, http
from mitmproxy.flow import Error
from mitmproxy.proxy.layers.http import (
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)


def manager(addons=None):
    """The running context's addon manager, checking it holds `addons` (itself
    or as parts of a loaded bundle, tokenaddons.dispatch.Pipeline)."""
    m = ctx.master.addons
    for addon in addons or ():
        if addon not in m and not any(addon in getattr(a, "parts", ()) for a in m.chain):
            raise AssertionError(f"{addon!r} is not in the taddons.context: hooks would not reach it")
    return m


async def arun_flow(addons, flow: http.HTTPFlow, stream_chunks: int | None = None,
                    error: str | None = None) -> http.HTTPFlow:
    """Request phase, then the recorded response (if any) as if upstream sent it.

    With `stream_chunks`, a streamed answer is fed to `flow.response.stream` in
    that many pieces, the way mitmproxy's HTTP layer does; with `error`, the
    stream breaks before its end and the error hook runs instead of response.
    """
    m = manager(addons)
    recorded = flow.response
    flow.response = None
    await m.handle_lifecycle(HttpRequestHeadersHook(flow))
    await m.handle_lifecycle(HttpRequestHook(flow))
    if flow.response is not None:  # an addon answered locally
        await m.handle_lifecycle(HttpResponseHeadersHook(flow))
        await m.handle_lifecycle(HttpResponseHook(flow))
        await answered()
        return flow
    if recorded is None:
        return flow
    body = recorded.raw_content or b""
    recorded.content = None if stream_chunks else recorded.content
    flow.response = recorded
    await m.handle_lifecycle(HttpResponseHeadersHook(flow))
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
        flow.error = Error(error)
        await m.handle_lifecycle(HttpErrorHook(flow))
    else:
        await m.handle_lifecycle(HttpResponseHook(flow))
    await answered()
    return flow


async def answered() -> None:
    """One turn of the event loop: what the bundle runs once an answer has left
    (tokenaddons.dispatch, `after_send`) runs then, as in a running proxy."""
    await asyncio.sleep(0)


def run_flow(addons, flow: http.HTTPFlow, stream_chunks: int | None = None) -> http.HTTPFlow:
    return asyncio.run(arun_flow(addons, flow, stream_chunks))


def rows(store, table: str = "requests") -> list[dict]:
    """Event rows (or decision rows) of a tokenaddons.addons.store.Store addon, after flushing its writer."""
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    conn.close()
    return out


def thread_hops(monkeypatch, module) -> list:
    """Records each `asyncio.to_thread` call an addon module makes (the work it
    hands to a worker thread), still running it."""
    hops: list = []
    real = asyncio.to_thread

    async def counted(fn, *args, **kwargs):
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(module.asyncio, "to_thread", counted)
    return hops
