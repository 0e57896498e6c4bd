"""Where the bundle's event-loop CPU goes inside a running mitmdump, part by
part, against bare mitmdump in the same run.

bench_parts.py times the parts in this process, with warm CPU caches; in a
running proxy, beside the load and the upstream, the same code costs more.
Here the bundle runs in mitmdump (hooks_launcher.py) with each part's hooks
timed on the event loop's thread, through bench_hotpath's rounds: misses at
32-way alternating with bare mitmdump, then sequential hits alternating with
bare mitmdump's sequential requests. Prints each part's CPU per request, their
sum, the garbage collector's, and what is left of the loop's CPU: mitmproxy's
own work (and the timers' own cost, about 2 µs per hook call), to compare with
bare mitmdump's.

    .venv/bin/python benchmarks/bench_hooks.py [--rounds 4] [--requests 320] [--set OPTION=VALUE ...]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import urllib.request
from pathlib import Path

from bench_hotpath import Connection, concurrent, cpu_seconds, measured_round, start_upstream
from hooks_launcher import REPORT_PATH

from tokenaddons.process import Mitmdump

LAUNCHER = Path(__file__).with_name("hooks_launcher.py")


def report(proxy: Mitmdump) -> dict:
    with urllib.request.urlopen(f"{proxy.url}{REPORT_PATH}", timeout=30) as r:
        return json.loads(r.read())


def since(before: dict, after: dict) -> dict:
    """Totals between two reports: parts' seconds, GC seconds, answers."""
    parts = {k: v - before["parts"].get(k, 0.0) for k, v in after["parts"].items()}
    return {"parts": parts, "gc": after["gc"] - before["gc"], "answers": after["answers"] - before["answers"]}


async def sequential(port: int, names: list[str], expect: bytes | None = None) -> None:
    connection = await Connection(port).open()
    for name in names:
        await connection.timed(name, expect)
    connection.close()


def sequential_round(proxy: Mitmdump, names: list[str], expect: bytes | None = None) -> float:
    """Event-loop CPU seconds `proxy` used for `names` sent one after the other."""
    before = cpu_seconds(proxy.proc.pid)[0]
    asyncio.run(sequential(proxy.port, names, expect))
    return cpu_seconds(proxy.proc.pid)[0] - before


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--requests", type=int, default=320, help="per round and proxy")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="a bundle option")
    args = ap.parse_args()
    n, width = args.requests, args.concurrency
    work = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    upstream, url = start_upstream()
    loop_s = {"bare misses": 0.0, "bundle misses": 0.0, "bare sequential": 0.0, "bundle hits": 0.0}
    try:
        with Mitmdump(url, work / "bare", script=False) as bare, \
                Mitmdump(url, work / "bundle", launcher=LAUNCHER,
                         sets=dict(o.split("=", 1) for o in args.set)) as proxy:
            for p in (bare, proxy):
                asyncio.run(concurrent(p.port, [f"warm{i}" for i in range(200)], 4))
            start = report(proxy)
            for r in range(args.rounds):
                loop_s["bare misses"] += measured_round(bare, [f"b{r}-{i}" for i in range(n)], width)[1]
                loop_s["bundle misses"] += measured_round(proxy, [f"m{r}-{i}" for i in range(n)], width)[1]
            misses = since(start, report(proxy))
            hits = None
            for r in range(args.rounds):
                names = [f"m{r}-{i}" for i in range(n)]  # each answered in the misses' rounds
                loop_s["bare sequential"] += sequential_round(bare, [f"s{r}-{i}" for i in range(n)])
                before = report(proxy)
                loop_s["bundle hits"] += sequential_round(proxy, names, b"HIT")
                got = since(before, report(proxy))
                hits = got if hits is None else {
                    "parts": {k: v + hits["parts"].get(k, 0.0) for k, v in got["parts"].items()},
                    "gc": hits["gc"] + got["gc"], "answers": hits["answers"] + got["answers"]}
    finally:
        upstream.terminate()
    served = args.rounds * n
    us = lambda seconds, count: seconds / count * 1e6  # noqa: E731
    print(f"{args.rounds} rounds of {n} misses at {width}-way and {n} sequential hits, each beside bare mitmdump's")
    print(f"\n{'event-loop CPU per request':<32}{'misses':>10}{'hits':>10}")
    names = sorted(misses["parts"], key=lambda k: -misses["parts"][k])
    for name in names:
        m, h = us(misses["parts"][name], misses["answers"]), us(hits["parts"].get(name, 0.0), hits["answers"])
        if m >= 1 or h >= 1:
            print(f"  {name:<30}{m:>8.0f} µs{h:>8.0f} µs")
    parts_m, parts_h = sum(misses["parts"].values()), sum(hits["parts"].values())
    print(f"  {'sum of the parts':<30}{us(parts_m, misses['answers']):>8.0f} µs{us(parts_h, hits['answers']):>8.0f} µs")
    print(f"  {'garbage collection (any thread)':<30}{us(misses['gc'], misses['answers']):>8.0f} µs"
          f"{us(hits['gc'], hits['answers']):>8.0f} µs")
    loop_m, loop_h = loop_s["bundle misses"], loop_s["bundle hits"]
    print(f"  {'the whole loop':<30}{us(loop_m, served):>8.0f} µs{us(loop_h, served):>8.0f} µs")
    print(f"  {'  the rest: mitmproxy, timers':<30}{us(loop_m - parts_m, served):>8.0f} µs"
          f"{us(loop_h - parts_h, served):>8.0f} µs")
    print(f"  {'bare mitmdump, the whole loop':<30}{us(loop_s['bare misses'], served):>8.0f} µs"
          f"{us(loop_s['bare sequential'], served):>8.0f} µs   (32-way misses; sequential requests)")
    print(f"\nper round, bundle misses' loop CPU - bare's: "
          f"{us(loop_m - loop_s['bare misses'], served):+.0f} µs per request; "
          f"the parts' sum is {us(parts_m, misses['answers']):.0f} µs of it")


if __name__ == "__main__":
    main()
