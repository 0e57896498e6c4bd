"""Team mode through two real mitmdump proxies sharing one real redis-server,
the simulator as their upstream: one cache, one budget, one set of rate
limits; Redis stopped and started in the middle of traffic."""
from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import anthropic
import httpx
import openai
import pytest

from tokenaddons.engines import tokens
from tokenaddons.providers import BY_NAME

pytestmark = pytest.mark.integration

TIMEOUT_S = 0.5  # redis_timeout_s of the proxies here


@pytest.fixture
def team(make_proxy, sim, redis_server):
    """make(sets) -> two proxies A and B on one Redis, each with its own event store."""

    def make(sets: dict | None = None, count: int = 2):
        sets = {"redis_url": redis_server.url, "redis_timeout_s": str(TIMEOUT_S), **(sets or {})}
        return [make_proxy(sim.url, sets) for _ in range(count)]

    return make


def ask(proxy, text: str, key: str = "k1", stream: bool = False, headers: dict | None = None, timeout: float = 30):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 60, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream"] = True
    return httpx.post(proxy.url + "/v1/messages", json=body, timeout=timeout,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01", **(headers or {})})


def attempt(fn, *args, **kwargs):
    """The answer, or the error a client saw."""
    try:
        return fn(*args, **kwargs)
    except httpx.HTTPError as e:
        return e


def wait_until(check, timeout: float = 10.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    return check()


# ------------------------------------------------------------------ one cache

@pytest.mark.parametrize("stream", [False, True])
def test_e2e_an_answer_from_a_is_a_hit_on_b_and_another_key_misses_on_both(team, sim, stream):
    a, b = team()
    first = ask(a, "shared prompt", stream=stream)
    assert first.status_code == 200 and first.headers["x-tokenaddons-cache"] == "MISS"
    again = wait_until(lambda: (r := ask(b, "shared prompt", stream=stream)).headers["x-tokenaddons-cache"] == "HIT"
                       and r, timeout=5)
    assert again, "the answer A stored never reached B"
    assert again.content == first.content  # byte for byte, a stream replayed as the same events
    assert sim.upstream_calls == 1
    # the same prompt with another API key is that caller's own, on either proxy
    assert ask(b, "shared prompt", key="k2", stream=stream).headers["x-tokenaddons-cache"] == "MISS"
    assert ask(a, "shared prompt", key="k3", stream=stream).headers["x-tokenaddons-cache"] == "MISS"
    assert sim.upstream_calls == 3
    hit = b.rows(1, table="decisions", where="addon = 'cache' AND action = 'hit'")[0]
    assert json.loads(hit["detail"])["team"] is True and hit["usd_saved"] > 0
    assert [r["cache_status"] for r in b.rows(2)] == ["HIT", "MISS"]


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_twins_on_two_proxies_reach_upstream_once(team, sim, stream):
    a, b = team()
    slow = {"x-sim-fault": "slow:1.5"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        leader = pool.submit(ask, a, "single flight", stream=stream, headers=slow)
        time.sleep(0.4)  # A is fetching: B's twins wait for its answer instead of paying again
        twins = [pool.submit(ask, proxy, "single flight", stream=stream, headers=slow) for proxy in (b, b, a, b)]
        answers = [leader.result()] + [t.result() for t in twins]
    assert sim.upstream_calls == 1
    assert [r.status_code for r in answers] == [200] * 5
    assert len({r.content for r in answers}) == 1
    assert answers[0].headers["x-tokenaddons-cache"] == "MISS"
    assert all(r.headers["x-tokenaddons-cache"] == "HIT" for r in answers[1:])


def test_e2e_a_fetch_that_fails_lets_the_waiting_proxy_go_upstream_itself(team, sim):
    a, b = team()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # A's stream is cut after its fifth event, about a second in: nothing is stored
        cut = pool.submit(attempt, ask, a, "cut short", stream=True,
                          headers={"x-sim-fault": "cut:5", "x-sim-delay-ms": "200"})
        time.sleep(0.4)
        started = time.monotonic()
        twin = ask(b, "cut short", stream=True)  # waits on A's fetch, then asks upstream itself
        waited = time.monotonic() - started
        assert isinstance(cut.result(), httpx.RemoteProtocolError)
    assert twin.status_code == 200 and twin.headers["x-tokenaddons-cache"] == "MISS"
    assert b"message_stop" in twin.content
    assert 0.3 < waited < 5  # it did wait for A, and not for cache_wait_s
    assert sim.upstream_calls == 2
