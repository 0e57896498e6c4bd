"""How long a proxy with the bundle takes to start, and what an idle one holds in
memory, against bare mitmdump started the same way in the same run.

    .venv/bin/python benchmarks/bench_startup.py [--rounds 5]

Start-up: from spawning `mitmdump -s tokenaddons` (tokenaddons.process.Mitmdump)
until it accepts a connection; the bundle loads everything it would otherwise
load at a first request (the scrubber's detector, tiktoken's encodings) before it
listens. The test suite starts some 150 proxies, so every second counts there.
Memory: the resident set (VmRSS) of the idle proxy two seconds after it listens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tokenaddons.process import Mitmdump

UPSTREAM = "http://127.0.0.1:9"  # never reached: connections are lazy and no request is sent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start(work: Path, script: bool) -> tuple[float, float]:
    """Seconds until the proxy listens, and its idle RSS in MB."""
    t0 = time.perf_counter()
    with Mitmdump(UPSTREAM, work, {"connection_strategy": "lazy", "upstream_check": "false"} if script else
                  {"connection_strategy": "lazy"}, script=script) as proxy:
        seconds = time.perf_counter() - t0
        time.sleep(2.0)  # the running hooks have run (the heap is frozen), nothing else to do
        return seconds, rss_mb(proxy.proc.pid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    runs: dict[str, list[tuple[float, float]]] = {"bare mitmdump": [], "mitmdump with the bundle": []}
    for r in range(args.rounds):  # interleaved: the machine's load falls on both alike
        runs["bare mitmdump"].append(start(work / f"bare{r}", script=False))
        runs["mitmdump with the bundle"].append(start(work / f"bundle{r}", script=True))
    print(f"{'':<26}{'start-up s (median, min..max)':>32}{'idle RSS MB (median)':>24}")
    out = {}
    for name, samples in runs.items():
        secs = [s for s, _ in samples]
        mem = statistics.median(m for _, m in samples)
        print(f"{name:<26}{statistics.median(secs):>14.2f} ({min(secs):.2f}..{max(secs):.2f}){'':>6}{mem:>18.0f}")
        out[name] = {"startup_s": round(statistics.median(secs), 2), "rss_mb": round(mem)}
    bare, bundle = out["bare mitmdump"], out["mitmdump with the bundle"]
    print(f"the bundle adds {bundle['startup_s'] - bare['startup_s']:.2f} s of start-up "
          f"({bundle['startup_s'] / bare['startup_s']:.1f}x bare) and {bundle['rss_mb'] - bare['rss_mb']} MB")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
