"""What capturing costs, and how fast a capture replays.

1. Capture: Claude Code's real requests (~115 KB each, from tests/flows) sent
   through the bundle with `capture_path` off and on, in alternating turns
   against the simulator; per-request latency and the ratio on / off.
2. Replay: `tokenaddons replay` of a capture of N such exchanges, against
   `mitmdump -r` metering the same file (both start the same mitmdump with the
   bundle; the difference is the pipeline and server playback per exchange).

    .venv/bin/python benchmarks/bench_capture.py [--requests 100] [--replayed 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from mitmproxy import io

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokenaddons import whatif  # noqa: E402
from tokenaddons.process import LAUNCHER, Mitmdump, run_mitmdump  # noqa: E402
from tokenaddons.sim import Simulator  # noqa: E402

SESSION = ROOT / "tests" / "flows" / "claude_code.flow"


def agent_requests() -> list[tuple[str, bytes, dict]]:
    with open(SESSION, "rb") as f:
        return [(flow.request.path, flow.request.content, dict(flow.request.headers))
                for flow in io.FlowReader(f).stream() if flow.request.path.startswith("/v1/messages")]


def send(client: httpx.Client, url: str, request: tuple[str, bytes, dict], i: int) -> float:
    path, body, headers = request
    headers = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length")}
    headers["x-tokenaddons-cache"] = "bypass"  # every request goes through the whole pipeline
    body = body.replace(b'"max_tokens"', f'"x_bench":{i},"max_tokens"'.encode(), 1)  # no two alike
    start = time.perf_counter()
    with client.stream("POST", url + path, content=body, headers=headers) as r:
        r.read()
    assert r.status_code == 200, r.text
    return (time.perf_counter() - start) * 1000


def bench_capture(n: int, work: Path) -> None:
    requests = agent_requests()
    with Simulator() as sim, Mitmdump(sim.url, work / "off") as off, \
            Mitmdump(sim.url, work / "on", {"capture_path": work / "on.flow"}) as on, \
            httpx.Client(timeout=60) as client:
        times: dict[str, list[float]] = {"capture off": [], "capture on": []}
        for i in range(n + 5):
            request = requests[i % len(requests)]
            for name, proxy in (("capture off", off), ("capture on", on)) if i % 2 else \
                    (("capture on", on), ("capture off", off)):
                ms = send(client, proxy.url, request, i)
                if i >= 5:  # warm-up turns left out
                    times[name].append(ms)
    size = (work / "on.flow").stat().st_size
    base = statistics.median(times["capture off"])
    print(f"capture: {n} Claude Code requests each (~{len(requests[0][1]) // 1000} KB), streamed answers, "
          "alternating turns")
    print(f"{'':<14}{'p50 ms':>9}{'p90 ms':>9}{'p50 / off':>11}")
    for name, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<14}{statistics.median(values):>9.2f}{p90:>9.2f}{statistics.median(values) / base:>11.2f}")
    print(f"captured: {size / 1e6:.1f} MB for {n + 5} exchanges")


def bench_replay(n: int, work: Path) -> None:
    with open(SESSION, "rb") as f:
        session = [flow for flow in io.FlowReader(f).stream() if flow.request.path.startswith("/v1/messages")]
    capture = work / "replayed.flow"
    with open(capture, "wb") as f:
        writer = io.FlowWriter(f)
        for i in range(n):
            flow = session[i % len(session)].copy()
            flow.id = str(uuid.uuid4())
            flow.request.timestamp_start = float(i)
            writer.add(flow)
    start = time.perf_counter()
    run_mitmdump(["-n", "-r", str(capture), "-s", str(LAUNCHER), "--set", f"store_path={work / 'r.db'}",
                  "--set", f"confdir={work / 'conf'}", *whatif.QUIET], work)
    metered = time.perf_counter() - start
    start = time.perf_counter()
    data = whatif.run([capture], sets=("cache_enabled=false",))
    replayed = time.perf_counter() - start
    assert data["exchanges"] == n
    print(f"replay: {n} Claude Code exchanges (~{capture.stat().st_size / 1e6:.1f} MB)")
    print(f"  mitmdump -r (metered as captured)   {metered:6.1f} s")
    print(f"  tokenaddons replay (whole pipeline) {replayed:6.1f} s   {replayed / metered:.2f}x, "
          f"{(replayed - metered) / n * 1000:.1f} ms more per exchange")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--replayed", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        bench_capture(args.requests, Path(tmp))
        bench_replay(args.replayed, Path(tmp))


if __name__ == "__main__":
    main()
