"""Where a sequential cache miss's time goes, inside mitmdump: the bundle
against mitmdump with only tokenaddons.lean, in the same run.

bench_hotpath.py's request, one at a time, alternating between the two
proxies (each a mitmdump with timeline_launcher.py's probes first and last in
its chain). Prints each proxy's client-side p50, then the medians of each
stretch between the probes' moments, wall and event-loop CPU: mitmproxy
reading the body, the request hooks (the bundle's request phase), sending the
request and reading the answer's headers (the upstream answers at once), the
answer's body, the response hooks (what the bundle does before the answer
leaves; the accounting runs after it).

    .venv/bin/python benchmarks/bench_timeline.py [--requests 400]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench_hotpath import Connection, concurrent, start_upstream

from tokenaddons.process import Mitmdump

LAUNCHER = Path(__file__).with_name("timeline_launcher.py")
STRETCHES = [("request headers read", "request read", "the body read"),
             ("request read", "request hooks done", "request hooks"),
             ("request hooks done", "response headers read", "sent, answer's headers read"),
             ("response headers read", "response read", "answer's body read"),
             ("response read", "response hooks done", "response hooks")]
WARM = 60


def proxy(url: str, work: Path, name: str, bundle: bool) -> Mitmdump:
    os.environ["TIMELINE_OUT"] = str(work / f"{name}.json")
    if bundle:
        os.environ["TIMELINE_BUNDLE"] = "1"
    else:
        os.environ.pop("TIMELINE_BUNDLE", None)
    return Mitmdump(url, work / name, launcher=LAUNCHER)


async def sequential(ports: dict[str, int], n: int) -> dict[str, list[float]]:
    conns = {name: await Connection(port).open() for name, port in ports.items()}
    out: dict[str, list[float]] = {name: [] for name in ports}
    for i in range(n):
        for name, conn in list(conns.items())[:: 1 if i % 2 else -1]:
            out[name].append(await conn.timed(f"{name}{i}", b"MISS" if name == "bundle" else None))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    upstream, url = start_upstream()
    try:
        proxies = {"lean mitmdump": proxy(url, work, "lean", False), "bundle": proxy(url, work, "bundle", True)}
        try:
            for p in proxies.values():
                asyncio.run(concurrent(p.port, [f"warm{i}" for i in range(WARM)], 1))
            client = asyncio.run(sequential({name: p.port for name, p in proxies.items()}, WARM + args.requests))
        finally:
            for p in proxies.values():
                p.stop()  # the probes write their moments as mitmdump stops
    finally:
        upstream.terminate()
    print(f"{args.requests} sequential misses per proxy, 46 KB agent requests, after {WARM} more")
    print(f"{'':34}" + "".join(f"{name:>28}" for name in proxies))
    print(f"{'client p50 (ms)':34}" + "".join(f"{statistics.median(client[name][WARM:]):>28.3f}" for name in proxies))
    moments = {name: json.loads((work / f"{file}.json").read_text())[2 * WARM:]
               for name, file in (("lean mitmdump", "lean"), ("bundle", "bundle"))}
    for start, end, label in STRETCHES + [("request headers read", "response hooks done", "all of it")]:
        cells = []
        for name in proxies:
            done = [m for m in moments[name] if start in m and end in m]
            wall = statistics.median((m[end] - m[start]) / 1e6 for m in done)
            cpu = statistics.median((m[end + " cpu"] - m[start + " cpu"]) / 1e6 for m in done)
            cells.append(f"{wall:.3f} (CPU {cpu:.3f})")
        print(f"{label + ' (ms)':34}" + "".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
