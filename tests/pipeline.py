"""Drive flows through addons the way mitmproxy does, without a network."""
from __future__ import annotations

from mitmproxy import http

REQUEST_HOOKS = ("requestheaders", "request")
RESPONSE_HOOKS = ("responseheaders", "response")


def call(addons, hook: str, flow: http.HTTPFlow) -> None:
    for addon in addons:
        fn = getattr(addon, hook, None)
        if fn is not None:
            fn(flow)


def run_flow(addons, flow: http.HTTPFlow, stream_chunks: int | None = None) -> http.HTTPFlow:
    """Request phase, then the recorded response (if any) as if upstream sent it.

    With `stream_chunks`, a streamed answer is fed to `flow.response.stream` in
    that many pieces, the way mitmproxy's HTTP layer does.
    """
    recorded = flow.response
    flow.response = None
    for hook in REQUEST_HOOKS:
        call(addons, hook, flow)
    if flow.response is not None:  # an addon answered locally
        call(addons, "responseheaders", flow)
        call(addons, "response", flow)
        return flow
    if recorded is None:
        return flow
    body = recorded.raw_content or b""
    recorded.content = None if stream_chunks else recorded.content
    flow.response = recorded
    call(addons, "responseheaders", flow)
    if stream_chunks and callable(flow.response.stream):
        size = max(1, len(body) // stream_chunks)
        sent = [flow.response.stream(body[i:i + size]) for i in range(0, len(body), size)]
        assert all(piece != b"" for piece in sent), "an empty chunk mid-stream ends an HTTP/1.1 body"
        out = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in sent)
        flow.metadata["client_saw"] = out + flow.response.stream(b"")
    elif stream_chunks:
        flow.response.content = body
    call(addons, "response", flow)
    return flow
