"""What knowing the conversation a request continues saves, history on against off.

Guard, scrub and compress take what they learnt of the turns a request shares
with the one it continues (tokenaddons/engines/history.py) instead of working
on every turn again. This bench runs the hot path's request (a stable 40-turn
Anthropic history of 46 KB plus a new last turn) with that on and off,
interleaved in blocks so both meet the same machine load:

- in process (the bundle's hooks through mitmproxy's addon manager, as
  bench_parts.py runs them): the event loop thread's CPU per miss;
- with --real, also through two real mitmdump processes (one with history
  off) at 32 concurrent clients: each process's CPU per request and requests/s;
- with --flows FILE, in process on a captured session instead (its
  /v1/messages requests in order, answered with their recorded answers; each
  block a session of its own: its first message marked with the block's
  number, so nothing is a cache hit or a body seen before), per request.

    .venv/bin/python benchmarks/bench_history.py [--blocks 24] [--real] [--flows tests/flows/claude_code.flow]

Prints medians of the blocks and the ratio on/off.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hotpath import concurrent, measured_round, start_upstream  # noqa: E402
from bench_parts import run, running  # noqa: E402
from mitmproxy import http, io  # noqa: E402

from tokenaddons import bundle  # noqa: E402
from tokenaddons.addons.intake import Intake  # noqa: E402
from tokenaddons.engines.history import History  # noqa: E402
from tokenaddons.process import Mitmdump  # noqa: E402
from tokenaddons.test.flows import make_flow  # noqa: E402
from tokenaddons.test.pipeline import arun_flow  # noqa: E402

# a launcher for the mitmdump without history: the bundle, its intake remembering no turns
WITHOUT = '''from tokenaddons.bundle import addons, loaded
from tokenaddons.addons.intake import Intake
parts = addons()
next(p for p in parts if isinstance(p, Intake)).history = None
addons = loaded(parts)
'''
BLOCK = 25  # requests per block


def in_process(blocks: int) -> dict[str, list[float]]:
    """Event-loop CPU µs per miss of each block, history on and off in turn."""
    parts = bundle.addons()
    intake = next(p for p in parts if isinstance(p, Intake))
    out: dict[str, list[float]] = {"on": [], "off": []}
    with running(parts, warm=60) as (loop, port):
        for block in range(blocks):
            mode = "on" if block % 2 == 0 else "off"
            intake.history = History() if mode == "on" else None
            loop.run_until_complete(run(parts, port, [f"first{block}"]))  # what the next ones continue
            start = time.thread_time()
            loop.run_until_complete(run(parts, port, [f"b{block}-{i}" for i in range(BLOCK)]))
            out[mode].append((time.thread_time() - start) / BLOCK * 1e6)
    return out


def session(path: Path) -> list[http.HTTPFlow]:
    """The captured session's Messages requests, in order."""
    with path.open("rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if isinstance(fl, http.HTTPFlow) and fl.response
                and fl.request.path.split("?")[0] == "/v1/messages"]


def marked(flow: http.HTTPFlow, block: int) -> bytes:
    """The request's body with its first message marked as the block's own."""
    body = json.loads(flow.request.content)
    first = body["messages"][0]
    if isinstance(first["content"], str):
        first["content"] += f" (session {block})"
    else:
        first["content"].append({"type": "text", "text": f"(session {block})"})
    return json.dumps(body).encode()


def in_process_session(path: Path, blocks: int) -> dict[str, list[float]]:
    """Event-loop CPU µs per request of each block (one session), history on and off in turn."""
    flows = session(path)
    parts = bundle.addons()
    intake = next(p for p in parts if isinstance(p, Intake))
    out: dict[str, list[float]] = {"on": [], "off": []}
    with running(parts) as (loop, port):
        for block in range(-2, blocks):  # two sessions to warm up
            mode = "on" if block % 2 == 0 else "off"
            intake.history = History() if mode == "on" else None
            bodies = [marked(fl, block) for fl in flows]  # made before the clock starts
            spent = 0.0
            for fl, body in zip(flows, bodies):
                flow = make_flow(fl.request.path, body, dict(fl.request.headers), copy.copy(fl.response))
                flow.request.host, flow.request.port = "127.0.0.1", port
                start = time.thread_time()
                loop.run_until_complete(arun_flow(parts, flow))
                spent += time.thread_time() - start
            if block >= 0:
                out[mode].append(spent / len(flows) * 1e6)
    return out


def real(rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """CPU ms per request and requests/s of each 32-way round, per mitmdump."""
    upstream, url = start_upstream()
    work = Path(tempfile.mkdtemp(prefix="bench-history-"))
    without = work / "without_history.py"
    without.write_text(WITHOUT)
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    rates: dict[str, list[float]] = {"on": [], "off": []}
    try:
        with Mitmdump(url, work / "on") as on, Mitmdump(url, work / "off", launcher=without) as off:
            proxies = {"on": on, "off": off}
            for name, proxy in proxies.items():
                asyncio.run(concurrent(proxy.port, [f"warm-{name}{i}" for i in range(100)], 4))
            for r in range(rounds):
                for name, proxy in (proxies.items() if r % 2 == 0 else reversed(proxies.items())):
                    rate, main_s, other_s = measured_round(proxy, [f"{name}{r}-{i}" for i in range(320)], 32)
                    rates[name].append(rate)
                    cpu[name].append((main_s + other_s) / 320 * 1000)
    finally:
        upstream.terminate()
    return cpu, rates


def report(title: str, unit: str, values: dict[str, list[float]]) -> None:
    on, off = statistics.median(values["on"]), statistics.median(values["off"])
    print(f"{title:<36}on {on:8.2f}   off {off:8.2f}  {unit}   on/off {on / off:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=24, help=f"in-process blocks of {BLOCK} misses, alternating")
    ap.add_argument("--real", action="store_true", help="also two real mitmdumps, 32-way rounds")
    ap.add_argument("--rounds", type=int, default=10, help="32-way rounds per mitmdump, alternating")
    ap.add_argument("--flows", type=Path, default=None, help="a captured session instead of the hot path's request")
    args = ap.parse_args()
    if args.flows is not None:
        report(f"{args.flows.name}, event loop CPU per request", "µs", in_process_session(args.flows, args.blocks))
        return
    report("in process, event loop CPU per miss", "µs", in_process(args.blocks))
    if args.real:
        cpu, rates = real(args.rounds)
        report("mitmdump, CPU per request (32-way)", "ms", cpu)
        report("mitmdump, requests/s (32-way)", "/s", rates)


if __name__ == "__main__":
    main()
