"""The simulator's HTTP server: stdlib, threaded, HTTP/1.1 keep-alive, chunked streams.

Faults, by request header or constructor default:
  x-sim-fault: 429 | 529 | 500 | slow:SECONDS | cut:N
  x-sim-delay-ms: N        pause between streamed events (a slow stream)
  x-sim-chunk-chars: N     characters per streamed delta
  x-sim-echo: 1            answer with the last user message, verbatim
  x-sim-tool: NAME         answer with a call of that tool
  x-sim-gzip: 1            gzip a stream even if the client asked for identity (as some CDNs do)
  x-sim-patch: {JSON}      merged into a JSON answer, error or not (a broken or hostile upstream)

JSON answers are gzipped when the client accepts gzip, as the providers' are.
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from gzip import compress as gzip_compress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tokenaddons import providers
from tokenaddons.sim import answers
from tokenaddons.sim.prompt_cache import PromptCache

log = logging.getLogger(__name__)

FAULT_STATUS = {"429": ("rate_limit", 429), "500": ("upstream", 500)}


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    model: str | None = None
    usage: dict | None = None  # what was billed: input (uncached), read, write_5m, write_1h, output


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: twenty clients connecting at once
    # overflowed it, and the connections dropped waited a second for their SYN to
    # be sent again (a proxy's connect check could give up meanwhile)
    request_queue_size = 128


class Simulator:
    """A local provider: `with Simulator() as sim: ... sim.url ... sim.requests`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, echo: bool = False, fault: str | None = None,
                 delay_ms: int = 0, chunk_chars: int = 12, words: int = 30, retry_after: int = 1,
                 clock: Callable[[], float] = time.time, tls: tuple[str, str] | None = None):
        self.host, self.port = host, port
        self.tls = tls  # (certificate file, key file): serve HTTPS, as the providers do
        self.echo, self.fault, self.delay_ms = echo, fault, delay_ms
        self.chunk_chars, self.words, self.retry_after = chunk_chars, words, retry_after
        self.cache = PromptCache(clock)
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> Simulator:
        handler = type("Handler", (_Handler,), {"sim": self})
        self._server = _Server((self.host, self.port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # stop now, not when idle keep-alive clients hang up
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="tokenaddons-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # -- what tests look at
    def record(self, r: Received) -> None:
        with self._lock:
            self.requests.append(r)

    @property
    def upstream_calls(self) -> int:
        return len(self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


def merged(base: Any, patch: Any) -> Any:
    """`patch` laid over `base`, objects merged key by key."""
    if not (isinstance(base, dict) and isinstance(patch, dict)):
        return patch
    return {**base, **{k: merged(base.get(k), v) for k, v in patch.items()}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    sim: Simulator

    def log_message(self, fmt: str, *args) -> None:
        log.debug("sim: " + fmt, *args)

    def do_GET(self) -> None:
        self.sim.record(Received(self.command, self.path, dict(self.headers.items()), None, b""))
        self._json(404, {"error": {"message": f"no such endpoint: {self.path}", "type": "not_found"}})

    def do_HEAD(self) -> None:  # clients probe connectivity with HEAD /
        self.sim.record(Received(self.command, self.path, dict(self.headers.items()), None, b""))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k: v for k, v in self.headers.items()}
        received = Received("POST", self.path, headers, body, raw)
        self.sim.record(received)
        api = providers.detect("POST", self.path)
        if api is None:
            return self._json(404, {"error": {"message": f"no such endpoint: {self.path}", "type": "not_found"}})
        if not isinstance(body, dict):
            return self._error(api, "invalid_request", 400, "the body must be a JSON object")
        if not isinstance(api.model(body, self.path), (str, type(None))):
            return self._error(api, "invalid_request", 400, "model: a string is required")
        low = {k.lower(): v for k, v in headers.items()}
        fault = low.get("x-sim-fault", self.sim.fault) or ""
        if fault.startswith("slow:"):
            time.sleep(float(fault.split(":", 1)[1]))
        elif fault in FAULT_STATUS:
            kind, status = FAULT_STATUS[fault]
            return self._error(api, kind, status, f"simulated {status}",
                               {"retry-after": str(self.sim.retry_after)} if status == 429 else None)
        elif fault == "529":
            status = 529 if api.provider == "anthropic" else 503
            return self._error(api, "overloaded", status, "simulated overload")
        if api.name == "anthropic.count_tokens":
            return self._json(200, {"input_tokens": answers.usage_for(
                providers.BY_NAME["openai.chat"], body, answers.Turn(), api.model(body, self.path) or "", self.sim.cache
            )["input"]})
        if api.name == "anthropic.messages" and (refused := answers.anthropic_cache_error(body)):
            return self._error(api, "invalid_request", 400, refused)
        model = api.model(body, self.path) or "unknown"
        echo = low.get("x-sim-echo", "1" if self.sim.echo else "") == "1"
        turn = answers.plan(api, body, low, echo, self.sim.words)
        turn.usage = answers.usage_for(api, body, turn, model, self.sim.cache)
        received.model, received.usage = model, turn.usage
        size = int(low.get("x-sim-chunk-chars") or self.sim.chunk_chars)
        cut = int(fault.split(":", 1)[1]) if fault.startswith("cut:") else None
        if api.is_stream(body, self.path):
            events = self._events(api, body, model, turn, size)
            delay = int(low.get("x-sim-delay-ms") or self.sim.delay_ms) / 1000
            content_type = "text/event-stream; charset=utf-8"
            if api.name == "gemini.generate" and "alt=sse" not in self.path:
                # without alt=sse Gemini streams one JSON array, an element at a time
                data = [e.split(b"data: ", 1)[1].rstrip(b"\n") for e in events]
                events = [b"[" + data[0]] + [b",\r\n" + d for d in data[1:]] + [b"]"]
                content_type = "application/json; charset=UTF-8"
            return self._stream(events, delay, cut, low.get("x-sim-gzip") == "1", content_type)
        data = {"anthropic.messages": lambda: answers.anthropic_json(model, turn),
                "openai.chat": lambda: answers.chat_json(model, turn),
                "openai.responses": lambda: answers.responses_json(model, body, turn),
                "gemini.generate": lambda: answers.gemini_json(model, turn)}[api.name]()
        return self._json(200, data, cut=cut is not None)

    @staticmethod
    def _events(api, body: dict, model: str, turn: answers.Turn, size: int) -> list[bytes]:
        if api.name == "anthropic.messages":
            return answers.anthropic_events(model, turn, size)
        if api.name == "openai.chat":
            include = bool((body.get("stream_options") or {}).get("include_usage"))
            return answers.chat_events(model, turn, size, include)
        if api.name == "openai.responses":
            return answers.responses_events(model, body, turn, size)
        return answers.gemini_events(model, turn, size)

    # -- writing
    def _json(self, status: int, data: Any, headers: dict | None = None, cut: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), headers, cut)

    def _error(self, api, kind: str, status: int, message: str, headers: dict | None = None) -> None:
        self._send(status, api.error_body(status, kind, message), headers)

    def _send(self, status: int, payload: bytes, headers: dict | None = None, cut: bool = False) -> None:
        if patch := self.headers.get("x-sim-patch"):
            payload = json.dumps(merged(json.loads(payload), json.loads(patch))).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if "gzip" in (self.headers.get("accept-encoding") or "").lower():
            # as the providers do for clients that accept it (the SDKs do)
            payload = gzip_compress(payload)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if cut:  # half a body, then the connection drops
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _stream(self, events: list[bytes], delay: float, cut: int | None, gzip: bool, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        if gzip:  # one gzip member across the stream, flushed per event
            self.send_header("content-encoding", "gzip")
            packer = zlib.compressobj(wbits=31)
            events = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in events]
            events[-1] += packer.flush()
        self.end_headers()
        try:
            for i, event in enumerate(events):
                if cut is not None and i >= cut:
                    self.wfile.flush()
                    self.close_connection = True
                    return  # no terminating chunk: the client sees a cut stream
                if delay and i:
                    time.sleep(delay)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def serve(host: str = "127.0.0.1", port: int = 7678, **defaults) -> None:
    """Run the simulator in the foreground until interrupted."""
    sim = Simulator(host, port, **defaults).start()
    print(f"tokenaddons simulator on {sim.url} (Anthropic /v1/messages, OpenAI /v1/chat/completions "
          f"and /v1/responses, Gemini /v1beta/models/M:generateContent); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()
