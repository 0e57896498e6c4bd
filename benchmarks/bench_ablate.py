"""What each feature costs a cache miss in a running mitmdump, against bare
mitmdump and against the least any miss costs (benchmarks/floor_addon.py).

bench_hotpath.py's request at 32-way concurrency through several mitmdumps at
once, in alternating rounds so each meets the same machine load: bare
mitmdump; the floor addon; the bundle with every optional feature off (guard,
scrub, cache, compress, cache hints: what is left is intake, metering, the
event store and the rest of the pipeline); the bundle with one of them on; the
whole bundle. Prints each one's requests/s and CPU per request (the event
loop's thread, then the others: the bundle's event store writer), and the
medians of the per-round ratios to bare mitmdump. Throughput here is the event
loop's CPU per request (bare mitmdump saturates one core): 0.8x bare's
throughput is at most 1.25x its event-loop CPU.

    .venv/bin/python benchmarks/bench_ablate.py [--rounds 8] [--only full,floor] [--pin]

--pin puts the load and the upstream on CPU 0 and the proxies on the others
(less noise between rounds; the bundle's writer thread then shares the proxies'
CPUs).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from bench_hotpath import concurrent, measured_round, start_upstream

from tokenaddons.process import Mitmdump

FLOOR = Path(__file__).with_name("floor_addon.py")
OFFLOAD = Path(__file__).with_name("offload_addon.py")
FEATURES = {"guard": "guard_enabled", "scrub": "scrub_enabled", "cache": "cache_enabled",
            "compress": "compress", "hints": "cache_hints"}


def variants() -> dict[str, dict | None]:
    """name -> the options of a bundle (None: bare mitmdump, "floor": the floor addon)."""
    off = {option: "false" for option in FEATURES.values()}
    out: dict = {"bare": None, "floor": "floor", "bundle, all off": off}
    for name, option in FEATURES.items():
        out[f"only {name}"] = {**off, option: "true"}
    out["full bundle"] = {}
    out["offload"] = "offload"  # the whole bundle in a worker process (offload_addon.py)
    return out


def start(name: str, sets, upstream: str, work: Path) -> Mitmdump:
    folder = work / name.replace(" ", "_").replace(",", "")
    if sets is None:
        return Mitmdump(upstream, folder, script=False)
    if sets == "floor":
        return Mitmdump(upstream, folder, launcher=FLOOR, sets={"floor_db": folder / "floor.db"})
    if sets == "offload":
        return Mitmdump(upstream, folder, launcher=OFFLOAD)
    return Mitmdump(upstream, folder, sets=sets)


def pin(pid: int, cpus: set[int]) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that ended meanwhile
            pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=320, help="per round and proxy")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--only", default="", help="comma-separated variant names or words of them, e.g. "
                    "floor,full,guard (bare always runs)")
    ap.add_argument("--pin", action="store_true")
    args = ap.parse_args()
    chosen = variants()
    if args.only:
        wanted = {"bare", *(n.strip() for n in args.only.split(","))}
        chosen = {k: v for k, v in chosen.items() if k in wanted or wanted & set(k.replace(",", "").split())}
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    if pinned:
        os.sched_setaffinity(0, {cpus[0]})  # the load, and the upstream started from here
    work = Path(tempfile.mkdtemp(prefix="bench-ablate-"))
    upstream, url = start_upstream()
    proxies: dict[str, Mitmdump] = {}
    results: dict[str, list[tuple[float, float, float]]] = {}
    try:
        for name, sets in chosen.items():
            proxies[name] = start(name, sets, url, work)
        for name, proxy in proxies.items():
            asyncio.run(concurrent(proxy.port, [f"warm-{name}-{i}" for i in range(200)], 4))
            if pinned:  # after the warm-up: the bundle's threads have started
                pin(proxy.proc.pid, set(cpus[1:]))
        print(f"{len(proxies)} proxies, {args.rounds} alternating rounds of {args.requests} misses at "
              f"{args.concurrency}-way{' (pinned)' if pinned else ''}")
        for r in range(args.rounds):
            for name, proxy in proxies.items():
                rate, main_s, other_s = measured_round(
                    proxy, [f"{name}-{r}-{i}" for i in range(args.requests)], args.concurrency)
                results.setdefault(name, []).append(
                    (rate, main_s / args.requests * 1000, other_s / args.requests * 1000))
    finally:
        for proxy in proxies.values():
            proxy.stop()
        upstream.terminate()
    bare = results["bare"]
    print(f"{'':<18}{'req/s':>7}{'loop ms':>9}{'other ms':>10}{'loop - bare':>13}{'rate / bare':>13}"
          f"{'loop / bare':>13}")
    for name, rounds in results.items():
        rate = statistics.median(x[0] for x in rounds)
        loop = statistics.median(x[1] for x in rounds)
        other = statistics.median(x[2] for x in rounds)
        over = statistics.median(x[1] - b[1] for x, b in zip(rounds, bare))
        ratio = statistics.median(x[0] / b[0] for x, b in zip(rounds, bare))
        cpu = statistics.median(x[1] / b[1] for x, b in zip(rounds, bare))
        print(f"{name:<18}{rate:>7.0f}{loop:>9.2f}{other:>10.2f}{over:>+13.2f}{ratio:>13.2f}{cpu:>13.2f}")
    print("throughput target: rate / bare >= 0.80 (loop / bare <= 1.25)")


if __name__ == "__main__":
    main()
