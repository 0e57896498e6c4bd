"""What handing a request's body to a worker process costs mitmproxy's event loop.

The features' work could leave the event loop for a worker process (its own
GIL, another core): the loop would then pay for sending the body there and
reading the answer back instead. This prints the event loop's CPU time per
request for that round trip (bench_hotpath's 46 KB body out, the same size
back, over a Unix socket with asyncio, `--width` requests in flight), beside
the same loop's CPU to hash, parse and write that body once in process (the
floor's own request work, benchmarks/floor_addon.py), in the same run.

    .venv/bin/python benchmarks/bench_handoff.py [--requests 3000] [--width 32]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import multiprocessing
import socket
import struct
import time

import orjson
from bench_hotpath import request

HEAD = struct.Struct("!II")  # length, request id


def echo(fd: int) -> None:
    """The worker: answers each body with the same bytes (the work itself is left out)."""
    with socket.socket(fileno=fd) as s, s.makefile("rwb") as f:
        while head := f.read(HEAD.size):
            size, rid = HEAD.unpack(head)
            f.write(HEAD.pack(size, rid) + f.read(size))
            f.flush()


async def handoff(bodies: list[bytes], n: int, width: int) -> tuple[float, float]:
    """Event-loop CPU seconds per round trip, and round trips per second."""
    here, there = socket.socketpair()
    worker = multiprocessing.get_context("fork").Process(target=echo, args=(there.detach(),), daemon=True)
    worker.start()
    reader, writer = await asyncio.open_unix_connection(sock=here)
    waiting: dict[int, asyncio.Future] = {}

    async def answers() -> None:
        while True:
            size, rid = HEAD.unpack(await reader.readexactly(HEAD.size))
            waiting.pop(rid).set_result(await reader.readexactly(size))

    reading = asyncio.ensure_future(answers())
    ids = itertools.count()
    loop = asyncio.get_running_loop()

    async def lane(k: int) -> None:
        for _ in range(n // width):
            rid, body = next(ids), bodies[k % len(bodies)]
            waiting[rid] = loop.create_future()
            writer.write(HEAD.pack(len(body), rid) + body)
            await waiting[rid]

    await asyncio.gather(*(lane(k) for k in range(width // 2)))  # warm
    cpu, wall = time.thread_time(), time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(width)))
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    reading.cancel()
    writer.close()
    worker.terminate()
    done = n // width * width
    return cpu / done, done / wall


def in_process(bodies: list[bytes], n: int) -> float:
    """Event-loop CPU seconds per request to hash, parse and write the body once."""
    cpu = time.thread_time()
    for i in range(n):
        raw = bodies[i % len(bodies)]
        hashlib.sha256(raw).digest()
        orjson.dumps(orjson.loads(raw))
    return (time.thread_time() - cpu) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--width", type=int, default=32)
    args = ap.parse_args()
    bodies = [request(i) for i in range(args.width)]
    print(f"{len(bodies[0]) / 1024:.1f} KB bodies, {args.requests} requests, {args.width} in flight")
    trips, local = [], []
    for _ in range(3):  # alternating, so both meet the same machine load
        cpu, rate = asyncio.run(handoff(bodies, args.requests, args.width))
        trips.append((cpu, rate))
        local.append(in_process(bodies, args.requests))
    cpu, rate = sorted(trips)[1]
    parse = sorted(local)[1]
    print(f"round trip to a worker process: {cpu * 1e6:6.0f} µs of event-loop CPU per request "
          f"({rate:.0f} round trips/s)")
    print(f"hash, parse and write in process: {parse * 1e6:6.0f} µs")
    print(f"round trip / in-process floor work: {cpu / parse:.2f}")


if __name__ == "__main__":
    main()
