"""Cache hit latency end to end on loopback: a hit through the bundle, against a
miss through the bundle and a request through bare mitmdump (no addons), all
against the simulator in the same run.

    .venv/bin/python benchmarks/bench_cache.py [--requests 300]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tokenaddons.process import Mitmdump
from tokenaddons.sim import Simulator

HEADERS = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def body(i: int | str) -> bytes:
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 100,
                       "messages": [{"role": "user", "content": f"benchmark question {i}"}]}).encode()


def timed(client: httpx.Client, url: str, payload: bytes, expect: str | None = None) -> float:
    start = time.perf_counter()
    r = client.post(url + "/v1/messages", content=payload, headers=HEADERS)
    elapsed = (time.perf_counter() - start) * 1000
    assert r.status_code == 200, r.text
    if expect:
        assert r.headers.get("x-tokenaddons-cache") == expect, r.headers
    return elapsed


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    n = ap.parse_args().requests
    work = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    with Simulator() as sim, Mitmdump(sim.url, work / "bare", script=False) as bare, \
            Mitmdump(sim.url, work / "bundle") as proxy, httpx.Client(timeout=30) as client:
        for i in range(20):  # warm up connections, imports, the SQLite reader
            timed(client, bare.url, body(f"w{i}"))
            timed(client, proxy.url, body(f"w{i}"))
        direct = [timed(client, sim.url, body(f"d{i}")) for i in range(n)]
        bare_ms = [timed(client, bare.url, body(f"b{i}")) for i in range(n)]
        miss = [timed(client, proxy.url, body(f"m{i}"), "MISS") for i in range(n)]
        hit = [timed(client, proxy.url, body(f"m{i}"), "HIT") for i in range(n)]
        calls = sim.upstream_calls
    rows = {"direct to simulator": direct, "bare mitmdump": bare_ms, "tokenaddons miss": miss,
            "tokenaddons hit": hit}
    print(f"{n} sequential requests each, loopback, keep-alive")
    print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}{'p50 / bare':>12}")
    base = statistics.median(bare_ms)
    for name, values in rows.items():
        print(f"{name:<22}{statistics.median(values):>9.2f}{pct(values, 99):>9.2f}{statistics.median(values) / base:>12.2f}")
    print(f"upstream calls: {calls} (hits never reached the simulator)")


if __name__ == "__main__":
    main()
