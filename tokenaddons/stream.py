"""The stream pump: `flow.response.stream` for a streamed answer, handing each
chunk to the exchange's taps in stage order as it arrives."""
from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable

from tokenaddons.exchange import BoundedCopy, Exchange, Tap
from tokenaddons.providers.sse import Event, SSEParser

log = logging.getLogger(__name__)


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

    def end(self) -> list[Event]:
        if (body := self.body()) is not None:
            self.exchange.upstream_body = body
        return []


class StreamPump:
    """`flow.response.stream` for a streamed answer: every chunk passes the taps
    in stage order as it arrives; only an unfinished event waits for its end.

    Server-sent events are split once here and the taps get parsed events; a
    stream that is not SSE (Gemini's JSON array) goes as bytes to the taps that
    read bytes (`feed_bytes`). A compressed stream is decoded first (the taps
    read events, and the client gets it decoded)."""

    def __init__(self, exchange: Exchange, decode: Callable[[bytes], bytes] | None = None, sse: bool = True):
        self.exchange = exchange
        self.decode = decode
        self.parser = SSEParser() if sse else None
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
        end = not chunk
        if self.parser is None:
            out = self._bytes(chunk, end)
        else:
            events = self.parser.feed(chunk) if chunk else []
            for _, tap in list(ex.taps):
                events = self._run(tap, events, end)
            out = b"".join(e.raw for e in events)
            if end:  # a stream cut mid-event: its last bytes go out as they are
                out += self.parser.rest()
        # An empty bytes object mid-stream would go out as HTTP/1.1's last chunk
        # and end the client's response early: send nothing instead.
        return out if out or end else []

    def _run(self, tap: Tap, events: list[Event], end: bool) -> list[Event]:
        try:
            out = tap.feed(events) if events else []
            return out + tap.end() if end else out
        except Exception:
            # A broken tap must not break the stream: drop it, pass events on.
            self._drop(tap)
            return events

    def _bytes(self, chunk: bytes, end: bool) -> bytes:
        """A stream that is not SSE: the bytes pass the taps that read bytes, in
        stage order, each handing on what it returns (scrub's restorer rewrites)."""
        for _, tap in list(self.exchange.taps):
            feed = getattr(tap, "feed_bytes", None)
            if feed is None:
                continue  # reads events only: nothing for it in a stream that is not SSE
            try:
                if chunk:
                    chunk = feed(chunk)
                if end:
                    tap.end()
                    if (tail := getattr(tap, "end_bytes", None)) is not None:
                        chunk += tail()
            except Exception:
                self._drop(tap)
        return chunk

    def _drop(self, tap: Tap) -> None:
        log.exception("tokenaddons: stream tap %r failed; bypassing it", tap)
        self.exchange.taps = [(s, t) for s, t in self.exchange.taps if t is not tap]
