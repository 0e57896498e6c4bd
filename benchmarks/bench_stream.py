"""Is a stream buffered? Time to first byte and to last byte of a slow SSE
stream: direct to the simulator, through bare mitmdump, and through mitmdump
with the tokenaddons bundle, in the same run.

    .venv/bin/python benchmarks/bench_stream.py [--runs 5] [--delay-ms 200] [--events 10]
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

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 400, "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]}


SENT = iter(range(10**9))


def measure(base: str, delay_ms: int, chunk_chars: int) -> tuple[float, float]:
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01",
               "x-sim-delay-ms": str(delay_ms), "x-sim-chunk-chars": str(chunk_chars)}
    # a new prompt each time: through the bundle every run is a cache miss that
    # really streams from upstream, never a replay of an earlier run
    body = {**BODY, "messages": [{"role": "user", "content": f"{BODY['messages'][0]['content']} ({next(SENT)})"}]}
    start = time.perf_counter()
    first = None
    with httpx.Client(timeout=60) as c, c.stream("POST", base + "/v1/messages", json=body, headers=headers) as r:
        assert r.headers.get("x-tokenaddons-cache") in (None, "MISS"), "a cache hit is no stream measurement"
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter()
    return (first - start) * 1000, (time.perf_counter() - start) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--chunk-chars", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    with Simulator() as sim, Mitmdump(sim.url, work / "bare", script=False) as bare, \
            Mitmdump(sim.url, work / "bundle") as bundle:
        targets = {"direct": sim.url, "bare mitmdump": bare.url, "tokenaddons": bundle.url}
        results = {}
        for name, url in targets.items():
            measure(url, 0, args.chunk_chars)  # warm up connections and imports
            runs = [measure(url, args.delay_ms, args.chunk_chars) for _ in range(args.runs)]
            results[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base_ttfb = results["direct"][0]
    print(f"slow stream: {args.delay_ms} ms between events, median of {args.runs} runs")
    print(f"{'path':<15}{'ttfb ms':>10}{'total ms':>11}{'ttfb/direct':>13}")
    for name, (ttfb, total) in results.items():
        print(f"{name:<15}{ttfb:>10.1f}{total:>11.1f}{ttfb / base_ttfb:>13.2f}")
    print(json.dumps({k: {"ttfb_ms": round(v[0], 1), "total_ms": round(v[1], 1)} for k, v in results.items()}))


if __name__ == "__main__":
    main()
