"""One stats refresh on a store of a million realistic rows, and what the rollup
triggers cost the writer, measured in the same run.

    .venv/bin/python benchmarks/bench_stats.py [--rows 1000000]
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from tokenaddons.store import EventStore, open_for_reading
from tokenaddons.ui.views import StatsView

MODELS = [("anthropic", "claude-sonnet-4-5", 3e-6, 15e-6), ("anthropic", "claude-haiku-4-5", 1e-6, 5e-6),
          ("openai", "gpt-4o-mini", 0.15e-6, 0.6e-6), ("openai", "gpt-4.1", 2e-6, 8e-6),
          ("gemini", "gemini-2.5-flash", 0.3e-6, 2.5e-6)]
PROJECTS = ["checkout", "support", "research", "infra", None]


def rows(n: int, now: float, seed: int = 7):
    rnd = random.Random(seed)
    span = 30 * 86400  # a month of traffic
    for i in range(n):
        provider, model, pin, pout = rnd.choice(MODELS)
        inp = rnd.randint(200, 60_000)
        read = inp * rnd.choice((0, 0, 0.6, 0.9)) // 1
        out = rnd.randint(10, 2000)
        hit = rnd.random() < 0.1
        yield {"exchange_id": f"e{i}", "ts": now - span + span * i / n, "provider": provider, "api": "x",
               "model": model, "project": rnd.choice(PROJECTS), "stream": 1, "status": 200,
               "input_tokens": 0 if hit else inp, "cache_read_tokens": 0 if hit else read,
               "output_tokens": 0 if hit else out, "cost_usd": 0.0 if hit else inp * pin + out * pout,
               "latency_ms": rnd.lognormvariate(7, 0.6), "ttfb_ms": rnd.lognormvariate(6, 0.5),
               "cache_status": "HIT" if hit else "MISS", "answered_by": "cache" if hit else None}


def fill(path: Path, n: int, now: float, triggers: bool = True) -> float:
    store = EventStore(path, batch_max=5000)
    store.start()
    if not triggers:
        store.submit(lambda c: c.executescript("DROP TRIGGER requests_rollup; DROP TRIGGER decisions_rollup;"))
        store.flush()
    start = time.perf_counter()
    for row in rows(n, now):
        store.put_request(row)
    store.flush(timeout=3600)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    n = ap.parse_args().rows
    work = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    now = time.time()
    sample = min(n, 100_000)
    plain = fill(work / "plain.db", sample, now, triggers=False)
    rolled = fill(work / "rolled.db", sample, now, triggers=True)
    print(f"writer: {sample:,} rows  without triggers {sample / plain:,.0f} rows/s, "
          f"with rollup triggers {sample / rolled:,.0f} rows/s ({rolled / plain:.2f}x the time)")
    big = work / "big.db"
    t = fill(big, n, now)
    print(f"filled {n:,} rows in {t:.1f} s ({big.stat().st_size / 1e6:.0f} MB)")
    console = Console(file=open("/dev/null", "w"), width=160)
    for window in ("h", "d", "m"):
        view = StatsView(big, window)
        times = []
        with open_for_reading(big) as conn:
            for _ in range(7):
                start = time.perf_counter()
                console.print(view.frame(conn, now, 160))
                times.append((time.perf_counter() - start) * 1000)
        print(f"one refresh, window {window}: median {statistics.median(times):.1f} ms, max {max(times):.1f} ms "
              f"(query + render, {n:,} rows)")


if __name__ == "__main__":
    main()
