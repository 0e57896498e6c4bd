"""Answers the proxy gives itself: the provider's own error shape, so each SDK
raises its usual exception, plus a header naming the addon."""
from __future__ import annotations

import json

from mitmproxy import http

from tokenaddons.exchange import Exchange

# generic kind -> status when the caller gives none
STATUS = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "rate_limit": 429,
    "upstream": 502,
    "overloaded": 503,
}


def generic_error_body(status: int, kind: str, message: str) -> bytes:
    """For endpoints we do not understand: an OpenAI-like shape most clients parse."""
    return json.dumps({"error": {"type": kind, "message": message, "code": status}}).encode()


def refuse(flow: http.HTTPFlow, addon: str, kind: str, message: str, *,
           status: int | None = None, retry_after: float | None = None,
           headers: dict[str, str] | None = None) -> None:
    """Answer the flow locally with an error in the provider's shape.

    Every later addon sees `flow.response` set and skips the flow.
    """
    ex = Exchange.of(flow)
    status = status or STATUS.get(kind, 400)
    message = f"tokenaddons {addon}: {message}"
    if ex and ex.client_api:  # the shape the client's SDK reads
        body = ex.client_api.error_body(status, kind, message)
    else:
        body = generic_error_body(status, kind, message)
    h = {"content-type": "application/json", f"x-tokenaddons-{addon}": kind}
    if retry_after is not None:
        h["retry-after"] = str(max(1, int(retry_after + 0.999)))
    h.update(headers or {})
    flow.response = http.Response.make(status, body, h)
    if ex:
        ex.answered_by = addon
        ex.error_type = kind
