"""The Exchange's way in and out.

`Intake` (first in the bundle) recognizes the API, parses the JSON body once,
reads the project tag and starts the stream pump; `Outlet` (last in the
request phase) serializes the body back once, and only if an addon changed it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import zlib
from collections.abc import Callable

from mitmproxy import ctx, http

from tokenaddons import providers
from tokenaddons.exchange import OBSERVE, BoundedCopy, Exchange, Tap
from tokenaddons.providers.sse import is_sse

log = logging.getLogger(__name__)

PROJECT_HEADER = "x-tokenaddons-project"
AUTH_HEADERS = ("x-api-key", "authorization", "x-goog-api-key", "api-key")


def auth_identity(flow: http.HTTPFlow) -> str | None:
    """A short hash naming the caller's credential (the credential itself is never kept)."""
    for name in AUTH_HEADERS:
        if value := flow.request.headers.get(name):
            return hashlib.sha256(f"{name}:{value}".encode()).hexdigest()[:16]
    if key := flow.request.query.get("key"):  # Gemini's ?key=
        return hashlib.sha256(f"key:{key}".encode()).hexdigest()[:16]
    return None


def stream_decoder(encoding: str | None) -> Callable[[bytes], bytes] | None:
    """An incremental decoder for a compressed streamed body (None: not
    compressed). Raises ValueError for an encoding we cannot decode."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return None
    if name in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=31).decompress
    if name == "deflate":
        return zlib.decompressobj(wbits=47).decompress
    if name == "br":
        import brotli  # a mitmproxy dependency

        return brotli.Decompressor().process
    if name == "zstd":
        import zstandard  # a mitmproxy dependency

        return zstandard.ZstdDecompressor().decompressobj().decompress
    raise ValueError(f"unknown content-encoding {encoding!r}")


class CopyTap(BoundedCopy):
    """Keeps what passed of a stream that is not SSE, up to a limit, as the
    exchange's upstream body: the meter reads usage from it at the end."""

    def __init__(self, exchange: Exchange, limit: int):
        super().__init__(limit)
        self.exchange = exchange

    def end(self) -> bytes:
        if (body := self.body()) is not None:
            self.exchange.upstream_body = body
        return b""


class StreamPump:
    """`flow.response.stream` for an SSE answer: every chunk passes the taps in
    stage order as it arrives; nothing is buffered here. A compressed stream
    is decoded first (the taps read events, and the client gets it decoded)."""

    def __init__(self, exchange: Exchange, decode: Callable[[bytes], bytes] | None = None):
        self.exchange = exchange
        self.decode = decode
        self.ended = False

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        ex = self.exchange
        if chunk and ex.first_byte is None:
            ex.first_byte = time.time()
        if chunk and self.decode is not None:
            chunk = self.decode(chunk)
            if not chunk:
                return []  # the decoder needs more input first
        elif not chunk:  # mitmproxy's end-of-stream call
            if self.ended:
                return b""
            self.ended = True
        out = chunk
        for _, tap in list(ex.taps):
            out = self._run(tap, out, end=not chunk)
        # An empty bytes object mid-stream would go out as HTTP/1.1's last chunk
        # and end the client's response early: send nothing instead.
        return out if out or not chunk else []

    def _run(self, tap: Tap, data: bytes, end: bool) -> bytes:
        try:
            out = tap.feed(data) if data else b""
            return out + tap.end() if end else out
        except Exception:
            # A broken tap must not break the stream: drop it, pass bytes on.
            log.exception("tokenaddons: stream tap %r failed; bypassing it", tap)
            self.exchange.taps = [(s, t) for s, t in self.exchange.taps if t is not tap]
            return data


class Intake:
    def load(self, loader) -> None:
        loader.add_option("intake_max_body", int, 64 * 1024 * 1024,
                          "Request bodies larger than this many bytes pass through unparsed.")

    def running(self) -> None:
        # mitmproxy's default "eager" strategy connects upstream when a client
        # connects, before any request exists: an unreachable provider would then
        # drop clients unmetered, and no addon could answer or reroute in time.
        if ctx.options.connection_strategy == "eager":
            ctx.options.connection_strategy = "lazy"
            log.info("tokenaddons: connection_strategy set to lazy (connect upstream per request)")

    def request(self, flow: http.HTTPFlow) -> None:
        if Exchange.of(flow) is not None:
            return
        req = flow.request
        ex = Exchange(api=providers.detect(req.method, req.path))
        ex.project = req.headers.pop(PROJECT_HEADER, None)
        ex.client = req.headers.get("user-agent")
        ex.auth_hash = auth_identity(flow)
        if ex.api is not None:
            ex.body = self._parse(req)
            if not isinstance(ex.body, (dict, list)):
                ex.api, ex.body = None, None  # not JSON: passes through byte for byte, metered as other
            else:
                ex.requested_model = ex.model = ex.api.model(ex.body, req.path)
                ex.stream = ex.api.is_stream(ex.body, req.path)
                if ex.stream:  # the taps read the events as they pass: ask for them uncompressed
                    req.headers["accept-encoding"] = "identity"
        ex.attach(flow)

    @staticmethod
    def _parse(req: http.Request):
        raw = req.raw_content
        if not raw or len(raw) > ctx.options.intake_max_body:
            return None
        try:
            return json.loads(req.get_content(strict=True))
        except (ValueError, UnicodeDecodeError) as e:
            log.info("tokenaddons: %s %s: body is not JSON we can read (%s); passing it through",
                     req.method, req.path, e.__class__.__name__)
            return None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or flow.response is None or flow.response.raw_content is not None:
            return  # an answer made here already has its whole body: nothing to stream
        sse = is_sse(flow.response.headers.get("content-type"))
        if not sse and not (ex.stream and flow.response.status_code == 200):
            return  # a whole answer: mitmproxy reads it, the addons see it in `response`
        headers = flow.response.headers
        try:
            decode = stream_decoder(headers.get("content-encoding"))
        except ValueError as e:
            log.warning("tokenaddons: %s stream: %s; passing it through unread", flow.request.path, e)
            flow.response.stream = True
            return
        if decode is not None:  # the client gets it decoded
            del headers["content-encoding"]
            if headers.pop("content-length", None) is not None and flow.response.http_version == "HTTP/1.1":
                headers["transfer-encoding"] = "chunked"
        if not sse:
            # a stream that is not SSE (Gemini without alt=sse: one JSON array, an
            # element at a time): passed on as it comes, a copy kept for the meter
            ex.add_tap(CopyTap(ex, ctx.options.intake_max_body), OBSERVE)
        flow.response.stream = StreamPump(ex, decode)

    def response(self, flow: http.HTTPFlow) -> None:
        # Keep what upstream sent, before any addon rewrites it for the client
        # (scrub restores real values): stored bodies must be the scrubbed ones.
        ex = Exchange.of(flow)
        if ex is not None and flow.response is not None and not flow.response.stream:
            # decoded: providers compress JSON answers (gzip, br, zstd) for SDKs that accept it
            try:
                ex.upstream_body = flow.response.get_content(strict=True)
            except ValueError:
                log.info("tokenaddons: %s: answer in an encoding we cannot read; kept as sent",
                         flow.request.path)
                ex.upstream_body = flow.response.raw_content


class Outlet:
    """Serializes the request body once, at the end of the request phase."""

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.dirty or flow.response is not None:
            return
        flow.request.content = json.dumps(ex.body, ensure_ascii=False, separators=(",", ":")).encode()
        ex.dirty = False
