"""Last in the request phase: the body serialized back once, if anything changed it."""
from __future__ import annotations

from mitmproxy import http

from tokenaddons.engines import jsonio
from tokenaddons.exchange import Exchange


class Outlet:
    """Serializes the request body once, at the end of the request phase."""

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.dirty or flow.response is not None:
            return
        flow.request.content = jsonio.dumps(ex.body)
        ex.dirty = False
