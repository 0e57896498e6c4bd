"""Flow builders for tests (on top of mitmproxy.test.tflow)."""
from __future__ import annotations

import json

from mitmproxy import http
from mitmproxy.test import tflow


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
