"""Read the recorded provider traffic (VCR YAML) into mitmproxy flows."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from mitmproxy import http
from mitmproxy.test import tflow

from conftest import SHARED

TRAFFIC = SHARED / "traffic" / "pydantic-ai"
SKIP_HEADERS = {"content-length", "content-encoding", "transfer-encoding"}


def files(pattern: str = "*/*.yaml") -> list[Path]:
    return sorted(TRAFFIC.glob(pattern))


def interactions(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["interactions"]


def _headers(raw: dict | None) -> list[tuple[bytes, bytes]]:
    out = []
    for k, vs in (raw or {}).items():
        if k.lower() in SKIP_HEADERS:
            continue
        for v in vs if isinstance(vs, list) else [vs]:
            out.append((k.encode(), str(v).encode()))
    return out


def _body(part: dict) -> bytes:
    if "parsed_body" in part:
        return json.dumps(part["parsed_body"]).encode()
    body = part.get("body")
    if isinstance(body, dict):
        body = body.get("string")
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def response_json(interaction: dict):
    """The recorded response body as JSON (None for streams and non-JSON)."""
    resp = interaction["response"]
    if "parsed_body" in resp:
        return resp["parsed_body"]
    try:
        return json.loads(_body(resp))
    except ValueError:
        return None


def to_flow(interaction: dict) -> http.HTTPFlow:
    req, resp = interaction["request"], interaction["response"]
    url = urlsplit(req["uri"])
    flow = tflow.tflow(resp=False)
    flow.request = http.Request(
        host=url.hostname or "", port=url.port or (443 if url.scheme == "https" else 80),
        method=req["method"].encode(), scheme=url.scheme.encode(), authority=b"",
        path=(url.path + (f"?{url.query}" if url.query else "")).encode(), http_version=b"HTTP/1.1",
        headers=http.Headers(_headers(req.get("headers"))), content=_body(req), trailers=None,
        timestamp_start=1.0, timestamp_end=1.1,
    )
    headers = http.Headers(_headers(resp.get("headers")))
    content = _body(resp)
    if "content-type" not in headers:
        headers["content-type"] = ("text/event-stream" if content.startswith((b"event:", b"data:"))
                                   else "application/json")
    flow.response = http.Response(
        http_version=b"HTTP/1.1", status_code=resp["status"]["code"], reason=b"",
        headers=headers, content=content, trailers=None, timestamp_start=1.2, timestamp_end=1.5,
    )
    return flow
