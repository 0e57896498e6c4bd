"""Last in the request phase: the body serialized back once, if anything changed it."""
from __future__ import annotations

from mitmproxy import http

from tokenaddons.engines import jsonio
from tokenaddons.exchange import Exchange
from tokenaddons.headers import Names

ENCODINGS = Names("content-encoding", "transfer-encoding")


class Outlet:
    """Serializes the request body once, at the end of the request phase."""

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.dirty or flow.response is not None:
            return
        body = jsonio.dumps(ex.body)
        req = flow.request
        seen = ENCODINGS.read(req.headers)
        if "content-encoding" in seen:
            req.content = body  # mitmproxy compresses it again
        else:  # as `req.content = body` does, with one walk over the headers instead of three
            req.raw_content = body
            if "transfer-encoding" not in seen:
                req.headers["content-length"] = str(len(body))
        ex.dirty = False
