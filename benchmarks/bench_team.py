"""What team mode's Redis costs on a hit and on a miss, against the SQLite-only
bundle, in the same run.

Three proxies against the minimal upstream of bench_hotpath (answers at once,
agent-shaped 48 KB requests): one SQLite-only (no redis_url), and two, A and B,
sharing a real redis-server on loopback. All three have a daily budget and a
requests-per-minute limit set (far above what the run uses), so a miss pays
for every step team mode moves into Redis: the cache lookup and claim, the
rate-limit take, the budget's check-and-reserve (the cache fill and the
budget's report run after the answer, in the background). Each round sends,
one after the other, so that all meet the same machine load (which of the two
setups goes first alternates from round to round):

  SQLite miss          a new request to the SQLite-only proxy
  team miss            a new request to A
  SQLite hit           the SQLite-only proxy's request again (its memory tier)
  team hit             A's request again (A's memory tier: Redis is not asked,
                       so any difference from the SQLite hit is this machine's noise)
  team hit via Redis   A's request on B (B's memory misses, Redis answers)

    .venv/bin/python benchmarks/bench_team.py [--requests 300]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_hotpath import Connection, p, request, start_upstream  # noqa: E402

from tokenaddons.process import Mitmdump  # noqa: E402
from tokenaddons.test.redis import RedisServer, available  # noqa: E402

LIMITS = {"budget_daily_usd": "100000", "ratelimit_rpm": 1_000_000}


async def rounds(sqlite_port: int, a_port: int, b_port: int, n: int, tag: str = "") -> dict[str, list[float]]:
    sqlite, a, b = [await Connection(port).open() for port in (sqlite_port, a_port, b_port)]
    out: dict[str, list[float]] = {"SQLite miss": [], "team miss": [], "SQLite hit": [], "team hit": [],
                                   "team hit via Redis": []}
    for i in range(n):
        mine, team = f"{tag}s{i}", f"{tag}t{i}"
        pairs = [("SQLite", sqlite, mine), ("team", a, team)]
        if i % 2:  # which setup goes first alternates: neither always meets the other's after-work
            pairs.reverse()
        for name, proxy, text in pairs:
            out[f"{name} miss"].append(await proxy.timed(text, b"MISS"))
        for name, proxy, text in pairs:
            out[f"{name} hit"].append(await proxy.timed(text, b"HIT"))
        out["team hit via Redis"].append(await b.timed(team, b"HIT"))
    for c in (sqlite, a, b):
        c.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    n = ap.parse_args().requests
    if not available():
        sys.exit("redis-server is not installed (scripts/setup.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    upstream, url = start_upstream()
    print(f"request body {len(request(0)) / 1024:.1f} KB; {n} interleaved rounds of five requests")
    try:
        with RedisServer(work / "redis") as redis:
            team = {**LIMITS, "redis_url": redis.url}
            with Mitmdump(url, work / "sqlite", LIMITS) as sqlite, Mitmdump(url, work / "a", team) as a, \
                    Mitmdump(url, work / "b", team) as b:
                asyncio.run(rounds(sqlite.port, a.port, b.port, 20, "warm"))  # warm: first requests load the engines
                results = asyncio.run(rounds(sqlite.port, a.port, b.port, n))
    finally:
        upstream.terminate()
    print(f"{'path':<22}{'p50 ms':>9}{'p99 ms':>9}")
    for name, values in results.items():
        print(f"{name:<22}{statistics.median(values):>9.2f}{p(values, 99):>9.2f}")
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"Redis on a miss:               {med['team miss'] - med['SQLite miss']:+.2f} ms p50 "
          f"({med['team miss'] / med['SQLite miss']:.2f}x the SQLite-only miss)")
    print(f"Redis on a hit (memory):       {med['team hit'] - med['SQLite hit']:+.2f} ms p50 "
          f"({med['team hit'] / med['SQLite hit']:.2f}x the SQLite-only hit)")
    print(f"a hit from Redis (other proxy): {med['team hit via Redis'] - med['SQLite hit']:+.2f} ms p50 "
          f"over a memory hit; {med['team hit via Redis'] / med['SQLite miss']:.2f}x a SQLite-only miss "
          f"(which would have paid the provider)")


if __name__ == "__main__":
    main()
