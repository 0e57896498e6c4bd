"""The Compress addon's request hook on the event loop, in process: microseconds
per request when every tool output was seen before (an agent resending its
whole history every turn, the common case).

Two request shapes: the hot-path benchmark's agent request (a 46 KB 40-turn
Anthropic history plus a new last turn; no client breakpoints, so the hints
are placed) and the largest recorded Claude Code request of tests/flows (its
own breakpoints). Each request runs through Store, Intake, Compress and Outlet
over mitmproxy's addon manager; only the Compress hook is timed (not the
body's parse, which whichever addon reads the body first pays for).

    .venv/bin/python benchmarks/bench_compress_hook.py [--requests 2000] [--rounds 3]

Prints the median microseconds per request of each round (the lowest first:
this box is shared, and other work only ever adds time), wall time and the
event loop thread's CPU time (what other processes' load changes least), and
the same with compression and hints off (the hook's floor: its early return).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mitmproxy import io as flow_io
from mitmproxy.test import taddons

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_hotpath import HISTORY, TOOLS  # noqa: E402

from tokenaddons.addons.compress import Compress  # noqa: E402
from tokenaddons.addons.intake import Intake  # noqa: E402
from tokenaddons.addons.outlet import Outlet  # noqa: E402
from tokenaddons.addons.store import Store  # noqa: E402
from tokenaddons.exchange import Exchange  # noqa: E402
from tokenaddons.test.flows import make_flow  # noqa: E402
from tokenaddons.test.pipeline import arun_flow  # noqa: E402

HEADERS = {"content-type": "application/json", "x-api-key": "bench-key", "anthropic-version": "2023-06-01"}


def agent_request(i: int) -> tuple[str, bytes]:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "You are a coding agent. " * 40,
            "tools": TOOLS, "messages": HISTORY + [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_0021", "content": f"run {i}: 3 passed, 1 failed"}]}]}
    return "/v1/messages", json.dumps(body).encode()


def claude_code_request() -> tuple[str, bytes]:
    with open(ROOT / "tests" / "flows" / "claude_code.flow", "rb") as f:
        flows = [fl for fl in flow_io.FlowReader(f).stream() if fl.request.path.startswith("/v1/messages")]
    largest = max(flows, key=lambda fl: len(fl.request.content or b""))
    return largest.request.path, largest.request.content


async def measure(shape, n: int, **options) -> tuple[list[float], list[float]]:
    """Microseconds of Compress.request for each of n requests of `shape(i)`, after one warm-up:
    wall time, and the event loop thread's CPU time (steadier on a shared box)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store()
        compress = Compress(store)
        addons = [store, Intake(), compress, Outlet()]
        spent: list[float] = []
        cpu: list[float] = []
        hook = compress.request

        async def timed(flow):
            Exchange.of(flow).body  # parsed by the first addon that reads it (Intake leaves it to them): not timed
            t, c = time.perf_counter(), time.thread_time()
            await hook(flow)
            spent.append((time.perf_counter() - t) * 1e6)
            cpu.append((time.thread_time() - c) * 1e6)

        compress.request = timed
        with taddons.context(*addons) as tctx:
            tctx.configure(store, store_path=str(Path(tmp) / "events.db"))
            tctx.configure(compress, **options)
            for i in range(n + 1):
                if i == 1:
                    spent.clear()  # the first request computes; every later one has seen its outputs
                    cpu.clear()
                path, content = shape(i)
                flow = make_flow(path, content, dict(HEADERS))
                await arun_flow(addons, flow)
        store.done()
        return spent, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    recorded = claude_code_request()
    shapes = {"agent history (bench_hotpath)": agent_request, "Claude Code (tests/flows)": lambda i: recorded}
    for name, shape in shapes.items():
        on = [[statistics.median(x) for x in asyncio.run(measure(shape, args.requests))] for _ in range(args.rounds)]
        off = [statistics.median(asyncio.run(measure(shape, args.requests, compress=False, cache_hints=False))[0])
               for _ in range(args.rounds)]
        wall, cpu = [w for w, _ in on], [c for _, c in on]
        print(f"{name:30} Compress.request p50 {min(wall):7.1f} us (rounds {', '.join(f'{x:.1f}' for x in wall)}), "
              f"CPU {min(cpu):7.1f} us (rounds {', '.join(f'{x:.1f}' for x in cpu)}); off: {min(off):5.1f} us")


if __name__ == "__main__":
    main()
