"""Where the bundle's time goes, part by part, on the hot path's request.

The bench_hotpath request (a stable 40-turn Anthropic history of about 48 KB
plus a new last turn) runs through the whole bundle in this process, its hooks
dispatched by mitmproxy's real addon manager and the bundle's dispatcher, with
an answer handed over as if upstream had sent it. Each part's hooks are timed
(wall time, awaited work in threads included; and the event loop thread's CPU
time in them, which leaves out waits for the GIL and for other processes), for
misses and for hits, and printed per request next to the whole pipeline's time
per request, the process's CPU time per request, and how it splits between the
event loop's thread and the event store's writer thread (its own CPU clock:
rows, rollup triggers, cache fills, commits).

    .venv/bin/python benchmarks/bench_parts.py [--requests 300] [--profile FILE] [--set OPTION=VALUE ...]

With --set, the bundle runs with those options (`--set guard_enabled=false`:
what the rest costs without guard).

With --profile, each phase runs under cProfile and its top functions by own
time are written to FILE.misses and FILE.hits (cProfile inflates Python-heavy code about 3x: read
its figures as shares, the table above as times).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import gc
import inspect
import pstats
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from mitmproxy import hooks, http
from mitmproxy.test import taddons

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hotpath import ANSWER, HEADERS, request  # noqa: E402

from tokenaddons import bundle  # noqa: E402
from tokenaddons.test.flows import make_flow  # noqa: E402
from tokenaddons.test.pipeline import arun_flow  # noqa: E402

PHASE_EVENTS = {"requestheaders", "request", "responseheaders", "response", "error"}


def timed_parts(parts: list, spent: dict, spent_cpu: dict) -> None:
    """Wrap each part's per-flow hooks so their wall time adds up in `spent[part name]`
    and the event loop thread's CPU time in them in `spent_cpu[part name]` (an
    await counts the other tasks that ran meanwhile: compare parts by wall time)."""
    for part in parts:
        name = type(part).__name__
        for event in hooks.all_hooks:
            fn = getattr(part, event, None)
            if event not in PHASE_EVENTS or not callable(fn):
                continue
            if inspect.iscoroutinefunction(fn):
                async def wrapped(*args, _fn=fn, _name=name):
                    start, cpu = time.perf_counter(), time.thread_time()
                    try:
                        return await _fn(*args)
                    finally:
                        spent[_name] += time.perf_counter() - start
                        spent_cpu[_name] += time.thread_time() - cpu
            else:
                def wrapped(*args, _fn=fn, _name=name):
                    start, cpu = time.perf_counter(), time.thread_time()
                    try:
                        res = _fn(*args)
                    finally:
                        spent[_name] += time.perf_counter() - start
                        spent_cpu[_name] += time.thread_time() - cpu
                    if inspect.isawaitable(res):
                        return _awaited(res, _name, spent, spent_cpu)
                    return res
            setattr(part, event, functools.wraps(fn)(wrapped))


async def _awaited(res, name: str, spent: dict, spent_cpu: dict):
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return await res
    finally:
        spent[name] += time.perf_counter() - start
        spent_cpu[name] += time.thread_time() - cpu


async def run(parts: list, port: int, names: list[str]) -> list[float]:
    times = []
    for name in names:
        flow = make_flow("/v1/messages", request(name), dict(HEADERS),
                         http.Response.make(200, ANSWER, {"content-type": "application/json"}))
        flow.request.host, flow.request.port = "127.0.0.1", port
        start = time.perf_counter()
        await arun_flow(parts, flow)
        times.append(time.perf_counter() - start)
    return times


def flushed(parts: list) -> None:
    """Wait until the event store wrote what the requests queued (its thread's CPU counts too)."""
    next(p for p in parts if type(p).__name__ == "Store").events.flush()


def writer_cpu(parts: list) -> float:
    """CPU seconds the event store's writer thread has used so far."""
    thread = next(p for p in parts if type(p).__name__ == "Store").events._thread
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class Collections:
    """Time the garbage collector takes, whichever hook's allocation set it off
    (that part's figures include it)."""

    def __init__(self) -> None:
        self.spent = 0.0
        self.count = 0
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.spent += time.perf_counter() - self._start
            self.count += 1


COLLECTIONS = Collections()


def phase(title: str, loop, parts: list, port: int, names: list[str], spent: dict, spent_cpu: dict,
          profile: Path | None) -> None:
    """Run `names` through the bundle; print each part's time per request."""
    spent.clear()
    spent_cpu.clear()
    flushed(parts)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    cpu, loop_cpu, writer = time.process_time(), time.thread_time(), writer_cpu(parts)
    collected, collections = COLLECTIONS.spent, COLLECTIONS.count
    times = loop.run_until_complete(run(parts, port, names))
    flushed(parts)
    cpu, loop_cpu, writer = (time.process_time() - cpu, time.thread_time() - loop_cpu,
                             writer_cpu(parts) - writer)
    collected, collections = COLLECTIONS.spent - collected, COLLECTIONS.count - collections
    if profiler:
        profiler.disable()
        out = profile.with_name(f"{profile.name}.{title}")
        profiler.dump_stats(out.with_suffix(out.suffix + ".prof"))  # for pstats' callers and callees
        with open(out, "w") as f:
            pstats.Stats(profiler, stream=f).sort_stats("tottime").print_stats(60)
    n = len(names)
    print(f"\n{title}: {n} requests, pipeline p50 {statistics.median(times) * 1e6:.0f} µs per request, "
          f"process CPU {cpu / n * 1e6:.0f} µs per request (every thread, the event store's writer included)")
    print(f"  CPU per request: event loop's thread {loop_cpu / n * 1e6:.0f} µs, "
          f"the event store's writer thread {writer / n * 1e6:.0f} µs")
    print(f"  garbage collection: {collected / n * 1e6:.0f} µs per request ({collections / n:.2f} collections; "
          f"counted below in the part whose allocation set it off)")
    print(f"  {'':12} {'wall':>8}    {'CPU':>8}")
    for name, total in sorted(spent.items(), key=lambda kv: -kv[1]):
        if total / n >= 1e-6:
            print(f"  {name:12} {total / n * 1e6:8.0f} µs {spent_cpu[name] / n * 1e6:8.0f} µs")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--profile", type=Path, default=None,
                    help="write the top functions of each phase to FILE.misses and FILE.hits")
    ap.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                    help="a bundle option, as mitmdump's --set (guard_enabled=false: the cost without guard)")
    args = ap.parse_args()
    parts = bundle.addons()
    spent: dict[str, float] = defaultdict(float)
    spent_cpu: dict[str, float] = defaultdict(float)
    timed_parts(parts, spent, spent_cpu)  # before the bundle's dispatcher picks the hooks up
    with running(parts, sets=dict(o.split("=", 1) for o in args.set)) as (loop, port):
        names = [f"m{i}" for i in range(args.requests)]
        phase("misses", loop, parts, port, names, spent, spent_cpu, args.profile)
        phase("hits", loop, parts, port, names, spent, spent_cpu, args.profile)


@contextlib.contextmanager
def running(parts: list, warm: int = 30, sets: dict | None = None) -> Iterator[tuple[asyncio.AbstractEventLoop, int]]:
    """The bundle's `parts` in this process as in a running proxy (with the
    options `sets`), after `warm` requests: its event loop and the port of the
    upstream stand-in."""
    with tempfile.TemporaryDirectory() as tmp, socket.create_server(("127.0.0.1", 0)) as upstream, \
            taddons.context(*bundle.loaded(parts)) as tctx:
        tctx.options.store_path = str(Path(tmp) / "events.db")
        tctx.options.intercept_all_hosts = True  # the flows go to a local stand-in, not a provider host
        for name, value in (sets or {}).items():
            tctx.options.set(f"{name}={value}")
        port = upstream.getsockname()[1]
        loop = asyncio.new_event_loop()
        loop.run_until_complete(run(parts, port, [f"warm{i}" for i in range(warm)]))
        next(p for p in parts if type(p).__name__ == "Heap").running()  # as in a running proxy
        try:
            yield loop, port
        finally:
            next(p for p in parts if type(p).__name__ == "Store").done()


if __name__ == "__main__":
    main()
