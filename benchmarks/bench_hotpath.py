"""The bundle's cost on the hot path, against bare mitmdump in the same run.

Agent-shaped requests (a stable 40-turn Anthropic history of about 48 KB plus a
new last turn) go to a minimal upstream that answers at once, so what is
measured is the proxy, not the provider. Each process (load, proxy, upstream)
is its own, as in real use.

    .venv/bin/python benchmarks/bench_hotpath.py [--requests 400] [--concurrency 32] [--profile DIR]

Prints p50/p99 of sequential misses (bare mitmdump, the bundle's first and
second hundreds on a fresh proxy), hits, 32-way throughput on misses with the
proxies' CPU time per request in those rounds (on the event loop's thread and
the others: throughput is CPU-bound), and the three ratios the bundle must meet:
  miss p50 - bare p50          <= 1 ms
  hit p50 / bare p50           <= 0.8
  32-way misses / bare 32-way  >= 0.8
The bundle installs tokenaddons.lean (mitmproxy's event dispatch and message
type checks without their overhead), which takes work off mitmproxy's own
share of every request: a third proxy, mitmdump with that alone
(benchmarks/lean_launcher.py), shows how much, and the same three figures
against it are the bundle's own work.
With --profile, the bundle's mitmdump runs under cProfile and the top
functions of each phase are written to DIR. --set OPTION=VALUE sets a bundle option
(`--set lean_mitmproxy=false`: the bundle on mitmproxy's own dispatch and checks).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

from tokenaddons.process import LAUNCHER, Mitmdump, free_port, wait_port

BARE, LEAN = "bare mitmdump", "mitmdump, lean"
LEAN_LAUNCHER = Path(__file__).with_name("lean_launcher.py")
HEADERS = {"x-api-key": "bench-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}
ANSWER = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Done. The tests pass now."}], "stop_reason": "end_turn",
    "usage": {"input_tokens": 12000, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
              "output_tokens": 9}}).encode()

TOOL_OUTPUT = "\n".join(f"src/module_{i % 7}.py:{i * 3}: def handler_{i}(request, context): return process(request)"
                        for i in range(24))


def history() -> list[dict]:
    """40 turns of a coding agent's session: instructions, tool calls, tool output."""
    turns: list[dict] = []
    for i in range(20):
        turns.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i:04d}", "content": f"$ grep -n handler src\n{TOOL_OUTPUT}"}]
            if i else f"Fix the failing tests in src/. Start by reading the code. {TOOL_OUTPUT}"})
        turns.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {i}: I will look at the handlers next and compare them with the tests."},
            {"type": "tool_use", "id": f"toolu_{i + 1:04d}", "name": "bash",
             "input": {"command": f"grep -n handler_{i} src -r"}}]})
    return turns


HISTORY = history()
TOOLS = [{"name": "bash", "description": "Run a shell command. " * 20,
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]


def request(i: int | str) -> bytes:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a coding agent. " * 40,
            "tools": TOOLS, "messages": HISTORY + [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_0021", "content": f"run {i}: 3 passed, 1 failed"}]}]}
    return json.dumps(body).encode()


def raw_request(i: int | str, port: int) -> bytes:
    payload = request(i)
    head = ["POST /v1/messages HTTP/1.1", f"host: 127.0.0.1:{port}", f"content-length: {len(payload)}"]
    head += [f"{k}: {v}" for k, v in HEADERS.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


# ---------------------------------------------------------------- the upstream: answers at once

def serve_upstream(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        response = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(ANSWER), ANSWER))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_upstream() -> tuple[multiprocessing.Process, str]:
    """The minimal upstream in a process of its own; its URL."""
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=serve_upstream, args=(port,), daemon=True)
    process.start()
    wait_port(port)
    return process, f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- the load: raw HTTP/1.1, keep-alive

async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes) -> bytes:
    writer.write(payload)
    head = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
    else:  # chunked
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    status = head.split(b" ", 2)[1]
    assert status == b"200", head
    return headers.get(b"x-tokenaddons-cache", b"")


class Connection:
    """One keep-alive client connection, timing each request."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def timed(self, name: str, expect: bytes | None = None) -> float:
        payload = raw_request(name, self.port)
        start = time.perf_counter()
        status = await exchange(self.reader, self.writer, payload)
        elapsed = (time.perf_counter() - start) * 1000
        if expect is not None:
            assert status == expect, (name, status, expect)
        return elapsed

    def close(self) -> None:
        self.writer.close()


async def interleaved(bare_port: int, lean_port: int, bundle_port: int, n: int) -> dict[str, list[float]]:
    """Bare mitmdump, lean mitmdump, a bundle miss and the same request again (a
    hit), one after the other, n times: all of them meet the same machine load."""
    bare, lean, bundle = [await Connection(port).open() for port in (bare_port, lean_port, bundle_port)]
    out: dict[str, list[float]] = {BARE: [], LEAN: [], "bundle miss": [], "bundle hit": []}
    for i in range(n):
        for name, conn in ((BARE, bare), (LEAN, lean))[:: 1 if i % 2 else -1]:
            out[name].append(await conn.timed(f"b{i}"))
        out["bundle miss"].append(await bundle.timed(f"m{i}", b"MISS"))
        out["bundle hit"].append(await bundle.timed(f"m{i}", b"HIT"))
    for conn in (bare, lean, bundle):
        conn.close()
    return out


async def concurrent(port: int, names: list[str], width: int) -> float:
    """Requests per second with `width` connections each sending in turn."""
    queue = list(reversed(names))
    payloads = {n: raw_request(n, port) for n in names}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            await exchange(reader, writer, payloads[queue.pop()])
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(width)))
    return len(names) / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) a process has used: its main thread (mitmproxy's
    event loop), and its other threads together (the event store's writer,
    worker threads) with its child processes' (a worker process)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # a child process that ended meanwhile
        return main, other
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:  # a thread that ended meanwhile
            continue
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(tid) == pid:
            main += used
        else:
            other += used
        other += sum(sum(cpu_seconds(child)) for child in children)
    return main, other


def measured_round(proxy: Mitmdump, names: list[str], width: int) -> tuple[float, float, float]:
    """One throughput round through `proxy`: requests/s, and the CPU seconds the
    proxy used in it on its event loop and on its other threads (`cpu_seconds`)."""
    before = cpu_seconds(proxy.proc.pid)
    rate = asyncio.run(concurrent(proxy.port, names, width))
    after = cpu_seconds(proxy.proc.pid)
    return rate, after[0] - before[0], after[1] - before[1]


def p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds per proxy")
    ap.add_argument("--profile", type=Path, default=None)
    ap.add_argument("--launcher", type=lambda p: Path(p).resolve(), default=LAUNCHER,
                    help="the bundle's launcher (benchmarks/offload_addon.py: the bundle in a worker process)")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="a bundle option")
    args = ap.parse_args()
    sets = dict(s.split("=", 1) for s in args.set)
    n, width = args.requests, args.concurrency
    work = Path(tempfile.mkdtemp(prefix="bench-hotpath-"))
    upstream, url = start_upstream()
    print(f"request body {len(request(0)) / 1024:.1f} KB; {n} interleaved sequential requests per path; "
          f"{args.rounds} alternating rounds of {10 * width} requests at {width}-way concurrency")
    rates: dict[str, list[float]] = {BARE: [], LEAN: [], "bundle misses": []}
    cpu = {name: [0.0, 0.0] for name in rates}  # seconds used in the throughput rounds: event loop, other threads
    try:
        with Mitmdump(url, work / "bare", script=False) as bare, \
                Mitmdump(url, work / "lean", launcher=LEAN_LAUNCHER) as lean, \
                Mitmdump(url, work / "bundle", launcher=args.launcher, profile=args.profile, sets=sets) as proxy:
            for warmed in (bare, lean):
                asyncio.run(concurrent(warmed.port, [f"warm{i}" for i in range(50)], 1))
            # a fresh bundle: its first requests, then the steady state, each beside bare mitmdump
            results = asyncio.run(interleaved(bare.port, lean.port, proxy.port, 2 * n))
            first = {k: v[:n] for k, v in results.items()}
            results = {k: v[n:] for k, v in results.items()}
            for r in range(args.rounds):
                order = ((BARE, bare, "bc"), (LEAN, lean, "lc"), ("bundle misses", proxy, "mc"))
                for name, proxy_, tag in order[:: 1 if r % 2 == 0 else -1]:
                    rate, main_s, other_s = measured_round(proxy_, [f"{tag}{r}-{i}" for i in range(10 * width)],
                                                           width)
                    rates[name].append(rate)
                    cpu[name][0] += main_s
                    cpu[name][1] += other_s
    finally:
        upstream.terminate()
    print(f"{'path':<28}{'p50 ms':>9}{'p99 ms':>9}{'first ' + str(n) + ' p50':>16}")
    for name, values in results.items():
        print(f"{name:<28}{statistics.median(values):>9.2f}{p(values, 99):>9.2f}"
              f"{statistics.median(first[name]):>16.2f}")
    for name, rate in rates.items():
        print(f"{name + f' {width}-way':<28}{statistics.median(rate):>9.1f} req/s   rounds: "
              + " ".join(f"{r:.0f}" for r in rate))
    served = args.rounds * 10 * width
    for name, (main, other) in cpu.items():
        print(f"{name + ' CPU':<28}{(main + other) / served * 1000:>9.2f} ms per request   "
              f"(event loop {main / served * 1000:.2f}, other threads {other / served * 1000:.2f})")
    bare_p50, lean_p50 = statistics.median(results[BARE]), statistics.median(results[LEAN])
    miss_p50 = statistics.median(results["bundle miss"])
    hit_p50 = statistics.median(results["bundle hit"])

    def per_round(base: str) -> float:
        return statistics.median(b / a for a, b in zip(rates[base], rates["bundle misses"]))

    fresh = (statistics.median(first["bundle miss"]) / statistics.median(first[BARE])) / (miss_p50 / bare_p50)
    print(f"miss p50 - bare p50:            {miss_p50 - bare_p50:+.2f} ms  (target <= +1 ms)")
    print(f"hit p50 / bare p50:             {hit_p50 / bare_p50:.2f}      (target <= 0.80)")
    print(f"{width}-way misses / bare (per round): {per_round(BARE):.2f}      (target >= 0.80)")
    print(f"fresh proxy: first {n} misses / next {n}, relative to bare: {fresh:.2f}x")
    lean_rate = statistics.median(b / a for a, b in zip(rates[BARE], rates[LEAN]))
    print(f"tokenaddons.lean alone: p50 {lean_p50 - bare_p50:+.2f} ms, {width}-way {lean_rate:.2f}x bare; "
          f"the bundle's own work over it: miss {miss_p50 - lean_p50:+.2f} ms, hit {hit_p50 / lean_p50:.2f}x, "
          f"{width}-way {per_round(LEAN):.2f}x")


if __name__ == "__main__":
    main()
