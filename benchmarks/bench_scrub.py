"""Added latency of the scrubber on agent-shaped requests, in process.

(a) a 200 KB request whose history was already seen (the next turn of an agent
    loop): only the new message is scanned; target under 5 ms.
(b) a first-time 100 KB request (nothing remembered); target under 100 ms.
Timed: the scrubber's request hook alone, on a body the intake already parsed.
Baselines in the same run: parsing and serializing the same body (what the proxy
does anyway), and the detector alone on the same text as one string (what (b)
costs beyond the scan itself: walking the body, threads, placeholders).

    .venv/bin/python benchmarks/bench_scrub.py
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import time

from mitmproxy.test import taddons, tflow

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.scrub import Scrub
from tokenaddons.engines.pii import Detector
from tokenaddons.exchange import Exchange

random.seed(3)
LOOP = asyncio.new_event_loop()  # one loop for every timed hook, as in the proxy
WORDS = ("the build failed because the config file references a module that was renamed last week so we "
         "should update the import path run the tests again and check the logs for anything else").split()
CODE = "def handler(event, context):\n    items = load(event['items'])\n    return [i * 2 for i in items if i > 10]\n"


def message(i: int) -> str:
    """Prose, code and tool output, with a contact detail now and then."""
    parts = [" ".join(random.choices(WORDS, k=60)), CODE]
    if i % 7 == 0:
        parts.append(f"Ping ops-{i}@example.com or call +1 415 555 {1000 + i:04d} if it breaks again.")
    if i % 11 == 0:
        parts.append(f"server 10.0.{i % 250}.{i % 200} build 2024.{i % 12}.{i} took 1234 ms")
    return "\n".join(parts)


def body(kb: int, seed: int = 0) -> dict:
    msgs, size, i = [], 0, seed
    while size < kb * 1024:
        text = message(i)
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
        size += len(text)
        i += 1
    return {"model": "claude-sonnet-4-5", "max_tokens": 1000, "messages": msgs}


def prepared(payload: dict):
    """A flow as the scrubber gets it: parsed by the intake (the proxy does that anyway)."""
    flow = tflow.tflow()
    flow.response = None
    flow.request.method = "POST"
    flow.request.path = "/v1/messages"
    flow.request.content = json.dumps(payload).encode()
    Intake().request(flow)
    return flow


def scrub_ms(scrub: Scrub, payload: dict, runs: int = 5) -> float:
    """Median time of the scrubber's request hook alone (its scan in a worker
    thread included), on fresh flows."""
    times = []
    for _ in range(runs):
        flow = prepared(payload)
        start = time.perf_counter()
        LOOP.run_until_complete(scrub.request(flow))
        times.append((time.perf_counter() - start) * 1000)
        assert Exchange.of(flow).decisions, "nothing was scanned"
    return statistics.median(times)


def timed(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    scrub = Scrub()
    with taddons.context(Intake(), scrub) as tctx:
        tctx.configure(scrub)
        # the detector is warmed up by configure, as the proxy does before it listens
        history = body(200)
        parse = timed(lambda: json.dumps(json.loads(json.dumps(history))))
        scrub_ms(scrub, history, runs=1)  # this turn's history, seen before
        nxt = {**history, "messages": history["messages"] + [{"role": "user", "content": message(99_999)}]}
        seen = scrub_ms(scrub, nxt)
        first_times = []
        for seed in range(5):
            fresh = body(100, seed=1000 * (seed + 1))
            scrub.detector.memo.items.clear()
            first_times.append(scrub_ms(scrub, fresh, runs=1))
        first = statistics.median(first_times)
        text = "\n".join(m["content"] for m in body(100, seed=7)["messages"])
        plain = Detector()
        plain.warm()
        whole = timed(lambda: plain._scan(text), runs=3)
    print(f"baseline: parse + serialize the 200 KB body        {parse:7.1f} ms")
    print(f"(a) 200 KB, history already seen (one new message) {seen:7.1f} ms   target < 5 ms")
    print(f"(b) 100 KB, first time                             {first:7.1f} ms   target < 100 ms")
    print(f"the detector alone on the 100 KB as one text       {whole:7.1f} ms   ((b) is {first / whole:.1f}x that)")


if __name__ == "__main__":
    main()
