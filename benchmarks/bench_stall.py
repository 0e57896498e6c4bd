"""Does one heavy request stall every other client? Another client's small
requests, paced every 20 ms through a real mitmdump with the bundle, timed
while each heavy case runs, side by side with the same client on the idle proxy.

    .venv/bin/python benchmarks/bench_stall.py [--rounds 5] [--bare] [--guard-kb 1000] [--scrub-kb 100] [--event-mb 4]

Cases:
- guard: a tool result of 1 MB of blank lines (the role-spoofing rule was
  quadratic in them: 60 KB took 30 s, on the event loop);
- scrub: first-time requests of 100 KB of prose, code and contact details
  (scanned on a worker thread, not the loop);
- start-up: a fresh proxy, small requests from the moment it listens and a
  request with PII at once (what the detector loads on first use once loaded
  at the first request: now it loads before the proxy listens);
- stream: one 4 MB SSE event arriving in 4 KB pieces (taps must not re-buffer
  quadratically), with a placeholder to restore in it.

Target: the small requests' p99 stays within 50 ms of their p99 on the idle proxy.
`--bare` runs the same cases through mitmdump without the bundle: what mitmproxy
itself costs on this machine.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tokenaddons.process import Mitmdump

SMALL_ANSWER = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                           "usage": {"input_tokens": 12, "output_tokens": 1}}).encode()
PACE = 0.020  # seconds between the small client's requests


class Upstream(BaseHTTPRequestHandler):
    """A provider: a tiny answer at once, or (x-bench-event-mb) one huge SSE event in 4 KB writes."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait between them

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        mb = self.headers.get("x-bench-event-mb")
        if not mb:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(SMALL_ANSWER)))
            self.end_headers()
            self.wfile.write(SMALL_ANSWER)
            return
        text = ("lorem ipsum dolor sit amet " * (int(float(mb) * 1_000_000) // 27 + 1))[:int(float(mb) * 1_000_000)]
        events = [
            {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 10}}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                                  "text": text + " mail <EMAIL_1>"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
            {"type": "message_stop"}]
        body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for i in range(0, len(body), 4096):
            piece = body[i:i + 4096]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class SmallClient:
    """Sends a small request every PACE seconds, each new (no cache hit), and
    keeps (when sent, how long it took)."""

    def __init__(self, url: str):
        self.url = url
        self.times: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.n = 0

    def run(self) -> None:
        with httpx.Client(timeout=120) as c:
            while not self.stop.is_set():
                self.n += 1
                body = {"model": "claude-sonnet-4-5", "max_tokens": 10,
                        "messages": [{"role": "user", "content": f"small question number {self.n}"}]}
                start = time.perf_counter()
                try:
                    r = c.post(self.url + "/v1/messages", json=body, headers={"x-api-key": "small"})
                    r.raise_for_status()
                except httpx.HTTPError:
                    pass
                took = time.perf_counter() - start
                self.times.append((start, took))
                time.sleep(max(0.0, PACE - took))

    def __enter__(self) -> SmallClient:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def during(self, t0: float, t1: float) -> list[float]:
        return [took * 1000 for start, took in self.times if t0 <= start <= t1]


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else float("nan"))


def heavy_guard(url: str, kb: int, variant: int = 0) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": "read it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                     "content": "\n" * (kb * 1000 + variant)}]}]}
    httpx.post(url + "/v1/messages", json=body, headers={"x-api-key": "heavy"}, timeout=3600)


def agent_text(rng: random.Random, kb: int) -> str:
    words = ("the build failed because the config file references a module that was renamed last week so we "
             "should update the import path run the tests again and check the logs").split()
    parts, size, i = [], 0, 0
    while size < kb * 1000:
        part = " ".join(rng.choices(words, k=60)) + "\ndef handler(event):\n    return [i * 2 for i in event]\n"
        if i % 5 == 0:
            part += f"Ping ops-{rng.randint(1, 10**6)}@example.com or call +1 415 555 {rng.randint(1000, 9999)}.\n"
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts)


def heavy_scrub(url: str, kb: int, seed: int) -> None:
    rng = random.Random(seed)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
        {"role": "user", "content": agent_text(rng, kb)}]}
    httpx.post(url + "/v1/messages", json=body, headers={"x-api-key": "heavy"}, timeout=3600)


def heavy_stream(url: str, mb: float, restored: bool = True) -> None:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True,
            "messages": [{"role": "user", "content": "write to jane.roe@acme.io please"}]}
    with httpx.stream("POST", url + "/v1/messages", json=body, timeout=3600,
                      headers={"x-api-key": "stream", "x-bench-event-mb": str(mb)}) as r:
        got = b"".join(r.iter_raw())
    assert not restored or b"jane.roe@acme.io" in got[-2000:], "the placeholder was not restored"


def window(client: SmallClient, heavy) -> tuple[list[float], float]:
    """The small requests sent while `heavy()` ran, and how long it ran."""
    time.sleep(0.3)
    t0 = time.perf_counter()
    heavy()
    t1 = time.perf_counter()
    time.sleep(0.3)
    return client.during(t0, t1), t1 - t0


def idle(client: SmallClient, seconds: float) -> list[float]:
    t0 = time.perf_counter()
    time.sleep(max(1.0, seconds))
    return client.during(t0, time.perf_counter())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guard-kb", type=int, default=1000)
    ap.add_argument("--scrub-kb", type=int, default=100)
    ap.add_argument("--scrub-requests", type=int, default=5)
    ap.add_argument("--event-mb", type=float, default=4)
    ap.add_argument("--cases", default="start-up,guard,scrub,stream", help="which cases to run (comma-separated)")
    ap.add_argument("--bare", action="store_true", help="bare mitmdump, no bundle: what mitmproxy itself costs")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="NAME=VALUE",
                    help="an option for the bundle (to see which step a stall comes from)")
    ap.add_argument("--rounds", type=int, default=5, help="each case this many times, its samples pooled")
    args = ap.parse_args()
    chosen = set(args.cases.split(","))
    work = Path(tempfile.mkdtemp(prefix="bench-stall-"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}"
    sets = {"upstream_check": "false", "termlog_verbosity": "info", **dict(s.split("=", 1) for s in args.extra)}
    rows = []

    if "start-up" in chosen:  # small requests from the moment the proxy listens, a first request with PII at once
        base, during = [], []
        for r in range(args.rounds):
            with Mitmdump(upstream, work / f"startup{r}", sets, script=not args.bare) as proxy, \
                    SmallClient(proxy.url) as client:
                t0 = time.perf_counter()
                heavy_scrub(proxy.url, 5, seed=1)
                time.sleep(max(0.0, t0 + 3 - time.perf_counter()))  # the proxy's first 3 seconds
                during += client.during(t0, time.perf_counter())
                base += idle(client, 3)
        rows.append(("start-up: first 3 s, a PII request at once", 3.0, base, during))

    cases = [
        # each round new text: nothing remembered from the round before
        ("guard", f"guard: {args.guard_kb} KB of blank lines", lambda url, r: heavy_guard(url, args.guard_kb, r)),
        ("scrub", f"scrub: {args.scrub_requests} first-time {args.scrub_kb} KB requests", lambda url, r: [
            heavy_scrub(url, args.scrub_kb, seed=1000 * r + i) for i in range(args.scrub_requests)]),
        ("stream", f"stream: one {args.event_mb:g} MB SSE event in 4 KB pieces",
         lambda url, r: heavy_stream(url, args.event_mb, restored=not args.bare)),
    ]
    cases = [c for c in cases if c[0] in chosen]
    if cases:
        with Mitmdump(upstream, work / "proxy", sets, script=not args.bare) as proxy:
            heavy_scrub(proxy.url, 5, seed=2)
            with SmallClient(proxy.url) as client:
                time.sleep(1.0)
                for _, name, heavy in cases:
                    base, during, seconds = [], [], []
                    for r in range(args.rounds):
                        got, took = window(client, lambda: heavy(proxy.url, r))
                        during += got
                        seconds.append(took)
                        base += idle(client, took)
                    rows.append((name, statistics.median(seconds), base, during))
    server.shutdown()

    print(f"small requests every {PACE * 1000:.0f} ms through {'bare mitmdump' if args.bare else 'mitmdump with the bundle'}"
          f", each case {args.rounds} times (samples pooled); latency in ms")
    print(f"{'case':<46}{'ran s':>7}{'n':>5}{'idle p50':>9}{'idle p99':>9}{'p50':>7}{'p99':>8}{'p99-idle':>9}")
    out = {}
    for name, seconds, base, during in rows:
        b50, b99 = statistics.median(base), p99(base)
        d50, d99 = (statistics.median(during), p99(during)) if during else (float("nan"),) * 2
        print(f"{name:<46}{seconds:>7.2f}{len(during):>5}{b50:>9.1f}{b99:>9.1f}{d50:>7.1f}{d99:>8.1f}{d99 - b99:>9.1f}")
        out[name] = {"seconds": round(seconds, 2), "n": len(during), "idle_p99_ms": round(b99, 1),
                     "p99_ms": round(d99, 1), "p99_over_idle_ms": round(d99 - b99, 1)}
    print("target: p99-idle < 50 ms")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
