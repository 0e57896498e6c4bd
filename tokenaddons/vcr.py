"""VCR-style YAML cassettes (as recorded by vcrpy / pytest-recording) as mitmproxy flows,
so recorded provider traffic can be replayed through the pipeline (`mitmdump -r`)."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from mitmproxy import connection, http, io

SKIP_HEADERS = {"content-length", "content-encoding", "transfer-encoding"}


def interactions(path: Path) -> list[dict]:
    return yaml.safe_load(Path(path).read_text())["interactions"]


def _headers(raw: dict | None) -> http.Headers:
    fields = []
    for k, vs in (raw or {}).items():
        if k.lower() in SKIP_HEADERS:
            continue
        for v in vs if isinstance(vs, list) else [vs]:
            fields.append((k.encode(), str(v).encode()))
    return http.Headers(fields)


def body_bytes(part: dict) -> bytes:
    if "parsed_body" in part:
        return json.dumps(part["parsed_body"]).encode()
    body = part.get("body")
    if isinstance(body, dict):
        body = body.get("string")
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def to_flow(interaction: dict, when: float = 1.0) -> http.HTTPFlow:
    req, resp = interaction["request"], interaction["response"]
    url = urlsplit(req["uri"])
    port = url.port or (443 if url.scheme == "https" else 80)
    client = connection.Client(peername=("127.0.0.1", 50000), sockname=("127.0.0.1", 7677),
                               timestamp_start=when)
    server = connection.Server(address=(url.hostname or "", port))
    flow = http.HTTPFlow(client, server)
    flow.request = http.Request(
        host=url.hostname or "", port=port, method=req["method"].encode(), scheme=url.scheme.encode(),
        authority=b"", path=(url.path + (f"?{url.query}" if url.query else "")).encode(),
        http_version=b"HTTP/1.1", headers=_headers(req.get("headers")), content=body_bytes(req),
        trailers=None, timestamp_start=when, timestamp_end=when + 0.01,
    )
    headers = _headers(resp.get("headers"))
    content = body_bytes(resp)
    if "content-type" not in headers:
        sse = content.startswith((b"event:", b"data:"))
        headers["content-type"] = "text/event-stream" if sse else "application/json"
    flow.response = http.Response(
        http_version=b"HTTP/1.1", status_code=resp["status"]["code"], reason=b"", headers=headers,
        content=content, trailers=None, timestamp_start=when + 0.2, timestamp_end=when + 0.5,
    )
    return flow


def convert(cassettes: list[Path], out: Path) -> int:
    """Write every interaction of the cassettes into one mitmproxy flow file."""
    n = 0
    with open(out, "wb") as f:
        writer = io.FlowWriter(f)
        for path in cassettes:
            for interaction in interactions(path):
                writer.add(to_flow(interaction))
                n += 1
    return n
