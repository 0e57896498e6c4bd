"""Team mode against a real redis-server: the link's outages, the shared cache
tier, budget windows and rate limits, and the addons that use them through
mitmproxy's real addon manager (two proxies = two pipelines on one Redis)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.budget import Budget
from tokenaddons.addons.cache import Cache
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.ratelimit import RateLimit
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.addons.team import Team
from tokenaddons.store import health
from tokenaddons.team.budget import SharedBudget
from tokenaddons.team.hub import Hub
from tokenaddons.team.link import Link, Unavailable, redact
from tokenaddons.team.ratelimit import SharedLimits
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow, rows

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
          "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 100, "output_tokens": 20}}
HEADERS = {"content-type": "application/json", "x-api-key": "k1", "anthropic-version": "2023-06-01"}


def ok(answer=ANSWER):
    return http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"})


async def until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


class Local:
    """A proxy's own budget state, as the Budget addon keeps it."""

    def __init__(self):
        self.spent, self.reserved = defaultdict(float), defaultdict(float)


# ------------------------------------------------------------------ the link

def test_a_password_never_shows():
    assert redact("redis://:s3cret@db.internal:6379/0") == "redis://:***@db.internal:6379/0"
    assert redact("rediss://team:s3cret@db:6380/2") == "rediss://team:***@db:6380/2"
    assert redact("redis://db:6379/0?password=s3cret&ssl_cert_reqs=none") == \
        "redis://db:6379/0?password=%2A%2A%2A&ssl_cert_reqs=none"
    assert redact("redis://db:6379/0") == "redis://db:6379/0"
    with pytest.raises(ValueError, match="redis://"):
        Link("http://:s3cret@db:6379", 0.5)


async def test_a_frozen_redis_costs_one_timeout_then_calls_fail_at_once_until_it_answers(redis_server):
    changes = []
    link = Link(redis_server.url, 0.3, on_change=lambda lk: changes.append(lk.up))
    try:
        assert await link.call(link.client.ping)
        redis_server.freeze()  # connections stay open, nothing is answered
        started = time.monotonic()
        results = await asyncio.gather(*(link.call(link.client.ping) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results)
        assert time.monotonic() - started < 0.3 + 0.2  # together, not one after another
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await link.call(link.client.ping)
        assert time.monotonic() - started < 0.01  # while it is down, no wait at all
        assert changes == [False] and not link.up and "Timeout" in link.why
        redis_server.thaw()
        assert await until(lambda: link.up, timeout=5)  # found back by the link's own retries
        assert changes == [False, True]
        assert await link.call(link.client.ping)
    finally:
        redis_server.thaw()
        await link.close()


async def test_a_stopped_redis_is_noticed_at_once_and_found_back_when_it_restarts(redis_server):
    changes = []
    link = Link(redis_server.url, 0.5, on_change=lambda lk: changes.append(lk.up))
    try:
        await link.call(link.client.set, "k", "v")
        redis_server.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await link.call(link.client.get, "k")
        assert time.monotonic() - started < 0.2  # refused: no timeout to wait for
        redis_server.start()
        assert await until(lambda: link.up, timeout=5)
        assert await link.call(link.client.get, "k") is None  # nothing persisted: a restart loses every key
        assert changes == [False, True]
    finally:
        await link.close()


async def test_tls_and_a_password(tmp_path):
    from tokenaddons.test import redis
    from tokenaddons.test.certs import self_signed

    if not redis.available():
        pytest.skip("redis-server not installed (scripts/setup.sh installs it with apt-get, as root)")
    cert, key = self_signed(tmp_path, "redis")
    with redis.RedisServer(tmp_path / "redis", password="s3cret", tls=(cert, key)) as server:
        assert server.url.startswith("rediss://:s3cret@")
        link = Link(f"{server.url}?ssl_ca_certs={cert}", 1.0)
        try:
            assert await link.call(link.client.ping)
            assert "s3cret" not in link.where
        finally:
            await link.close()
        wrong = Link(server.url.replace("s3cret", "wrong") + f"?ssl_ca_certs={cert}", 1.0)
        try:
            with pytest.raises(Unavailable, match="(?i)password|auth"):
                await wrong.call(wrong.client.ping)
            assert "wrong" not in (wrong.why or "")
        finally:
            await wrong.close()


# ------------------------------------------------------------------ budget windows

WINDOW = ("global", "daily", 1_000_000.0)


async def test_check_and_reserve_is_one_step_for_the_whole_team(redis_server):
    link = Link(redis_server.url, 1.0)
    try:
        proxies = [(SharedBudget(link, name), Local()) for name in ("a", "b")]
        need = 0.01
        outcomes = await asyncio.gather(*(proxies[i % 2][0].reserve(proxies[i % 2][1], [(WINDOW, 5 * need, 2e9)],
                                                                     need) for i in range(40)))
        assert [refused for refused, _ in outcomes].count(None) == 5
        assert sum(local.reserved[WINDOW] for _, local in proxies) == pytest.approx(5 * need)
        refused = [total for index, total in outcomes if index is not None]
        assert all(total == pytest.approx(5 * need) for total in refused)  # the team's holds, both proxies'
    finally:
        await link.close()


async def test_a_window_lost_by_redis_is_rebuilt_from_what_each_proxy_reports(redis_server):
    link = Link(redis_server.url, 1.0)
    try:
        (a, la), (b, lb) = [(SharedBudget(link, name), Local()) for name in ("a", "b")]
        la.spent[WINDOW], lb.spent[WINDOW] = 0.3, 0.5
        await a.report(la, {WINDOW: 2e9})
        assert await b.report(lb, {WINDOW: 2e9}) == {WINDOW: pytest.approx(0.8)}
        assert (await a.reserve(la, [(WINDOW, 1.0, 2e9)], 0.25))[0] == 0  # 0.8 + 0.25 > 1
        await link.call(link.client.flushall)  # Redis lost everything
        assert (await a.reserve(la, [(WINDOW, 1.0, 2e9)], 0.25))[0] is None  # A alone: 0.3 + 0.25
        assert await b.report(lb, {}) == {WINDOW: pytest.approx(0.8)}  # B reports again what it spent
        assert (await a.reserve(la, [(WINDOW, 1.0, 2e9)], 0.25))[0] == 0  # 0.8 + 0.25 held + 0.25 > 1
    finally:
        await link.close()


async def test_the_holds_of_a_proxy_that_died_lapse(redis_server):
    link = Link(redis_server.url, 1.0)
    try:
        (dead, ld), (alive, la) = [(SharedBudget(link, name), Local()) for name in ("dead", "alive")]
        dead.hold_s = 0.5
        assert (await dead.reserve(ld, [(WINDOW, 1.0, 2e9)], 0.9))[0] is None  # then it is killed
        assert (await alive.reserve(la, [(WINDOW, 1.0, 2e9)], 0.5))[0] == 0
        await asyncio.sleep(0.6)  # never refreshed by the dead proxy's reports
        assert (await alive.reserve(la, [(WINDOW, 1.0, 2e9)], 0.5))[0] is None
    finally:
        await link.close()


# ------------------------------------------------------------------ rate limits

async def test_buckets_and_pauses_are_the_teams(redis_server):
    link = Link(redis_server.url, 1.0)
    try:
        a, b = SharedLimits(link), SharedLimits(link)
        bucket = [(a.bucket_key("provider", "openai", "rpm"), 3, 1)]
        pause = a.pause_key("openai", "alice")
        taken = [await (a, b)[i % 2].take(bucket, pause) for i in range(4)]
        assert [wait for wait, _ in taken[:3]] == [0, 0, 0]
        assert 19 < taken[3][0] <= 20 and taken[3][1] == 0  # a third of a minute for the next one
        a.pause(pause, 30)
        await asyncio.sleep(0.05)
        b.pause(pause, 5)  # a shorter pause seen later never shortens it
        await asyncio.sleep(0.05)
        wait, which = await b.take([], pause)
        assert 29 < wait <= 30 and which == 0
        assert await b.take([], b.pause_key("openai", "bob")) == (0.0, -1)
    finally:
        await link.close()


# ------------------------------------------------------------------ the addons, on one proxy's pipeline

@pytest.fixture
async def pipe(tmp_path, redis_server):
    """One proxy's pipeline in team mode; "another proxy" is the team's Redis written directly."""
    hub = Hub()
    store = Store()
    team = Team(store, hub)
    cache, budget = Cache(store, hub), Budget(store, team=hub)
    addons = [store, team, Intake(), cache, RateLimit(hub), budget, Meter(store), Settle(), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        tctx.configure(team, redis_url=redis_server.url, redis_timeout_s="0.3")
        yield addons, hub, store, cache, budget, tctx
        await team.done()
    store.done()


async def send(addons, body=BODY, headers=HEADERS, response=None):
    flow = make_flow("/v1/messages", body, dict(headers), response if response is not None else ok())
    return await arun_flow(addons, flow)


async def shared_entries(hub) -> dict[bytes, bytes]:
    keys = await hub.link.client.keys(f"{hub.link.prefix}cache:*")
    return {k: await hub.link.client.get(k) for k in keys}


def forget_locally(cache):
    """As if this proxy had never seen the answer: only the team's Redis has it."""
    cache.store.events.flush()
    cache.tiers.memory.clear()
    cache.tiers.memory_bytes = 0
    cache.tiers.on_disk.clear()


async def test_an_answer_goes_to_the_team_with_its_ttl_and_the_teams_answers_are_hits(pipe):
    addons, hub, store, cache, _, tctx = pipe
    tctx.options.cache_ttl = 600
    first = await send(addons)
    assert first.response.headers["x-tokenaddons-cache"] == "MISS"
    await asyncio.sleep(0.1)  # filled in the background
    (key, value), = (await shared_entries(hub)).items()
    assert value.endswith(first.response.content)
    assert 590_000 < await hub.link.client.pttl(key) <= 600_000  # the entry's own TTL
    assert not await hub.link.client.keys(f"{hub.link.prefix}cache-claim:*")  # the claim released
    forget_locally(cache)
    second = await send(addons, response=ok({"unexpected": True}))
    assert second.response.headers["x-tokenaddons-cache"] == "HIT"
    assert second.response.content == first.response.content
    decisions = rows(store, "decisions")
    assert json.loads(decisions[-1]["detail"])["team"] is True and decisions[-1]["usd_saved"] > 0
    assert (await send(addons, response=ok({"unexpected": True}))).response.headers["x-tokenaddons-cache"] == "HIT"


async def test_an_entry_on_this_proxys_disk_is_shared_and_a_large_one_stays_here(pipe):
    addons, hub, store, cache, _, tctx = pipe
    tctx.options.cache_redis_max_entry_bytes = 10
    await send(addons)
    await asyncio.sleep(0.1)
    assert await shared_entries(hub) == {}  # over 10 bytes: this proxy's own tiers only
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "HIT"
    await asyncio.to_thread(store.events.flush)  # on this proxy's disk (the writer's batch is committed)
    tctx.options.cache_redis_max_entry_bytes = 1 << 20
    cache.tiers.memory.clear()
    cache.tiers.memory_bytes = 0
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "HIT"  # from disk, after Redis missed
    await asyncio.sleep(0.1)
    assert len(await shared_entries(hub)) == 1  # and now the team has it too


async def test_redis_down_the_cache_serves_locally_budgets_refuse_naming_redis_and_it_is_said_once(
        pipe, redis_server, caplog):
    addons, hub, store, cache, budget, tctx = pipe
    tctx.options.budget_daily_usd = "10"
    caplog.set_level(logging.INFO)
    assert (await send(addons)).response.status_code == 200
    await asyncio.sleep(0.1)
    assert [s["state"] for s in health.statuses(store.events.path, "team")] == ["ok"]
    assert health.notes(store.events.path) and not health.warnings(store.events.path)
    redis_server.stop()
    hit = await send(addons)
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT"  # this proxy's own memory tier
    started = time.monotonic()
    refused = await send(addons, body={**BODY, "messages": [{"role": "user", "content": "new"}]})
    assert time.monotonic() - started < 0.3
    assert refused.response.status_code == 503 and refused.response.headers["retry-after"] == "1"
    error = json.loads(refused.response.content)["error"]
    assert "tokenaddons budget" in error["message"] and "Redis at redis://127.0.0.1" in error["message"]
    for _ in range(3):
        await send(addons, body={**BODY, "messages": [{"role": "user", "content": "newer"}]})
    assert caplog.text.count("cannot be reached (") == 1
    (status,) = health.statuses(store.events.path, "team")
    assert status["state"] == "down" and "ConnectionError" in status["reason"]
    (warning,) = health.warnings(store.events.path)
    assert "cannot reach redis://127.0.0.1" in warning and "refuses requests under a budget" in warning
    tctx.options.budget_fail_open = True  # checked against this proxy's own spend
    assert (await send(addons, body={**BODY, "messages": [{"role": "user", "content": "open"}]})).response \
        .status_code == 200
    redis_server.start()
    assert await until(lambda: hub.link.up, timeout=5)
    assert caplog.text.count("is back;") == 1
    assert [s["state"] for s in health.statuses(store.events.path, "team")] == ["ok"]
    # what this proxy spent while Redis was down is reported to the team again
    assert await until(lambda: budget.team_spent.get(next(k for k in budget.spent if k[0] == "global"
                                                          and k[1] == "daily"), 0) > 0, timeout=5)


async def test_without_redis_url_nothing_is_shared_and_nothing_is_asked(tmp_path):
    hub = Hub()
    store = Store()
    team = Team(store, hub)
    addons = [store, team, Intake(), Cache(store, hub), RateLimit(hub), Budget(store, team=hub), Meter(store),
              Settle(), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        tctx.options.budget_daily_usd = "10"
        budget = addons[5]
        flow = make_flow("/v1/messages", BODY, dict(HEADERS), ok())
        Intake().request(flow)
        assert budget.request(flow) is None  # synchronous: no coroutine on the hot path
        assert hub.link is None and hub.part("cache", None) is None
        assert health.statuses(store.events.path, "team") == []
        await team.done()
    store.done()


# ------------------------------------------------------------------ single flight across proxies

async def test_a_twin_waits_for_the_claimants_entry_and_a_dead_claimants_claim_lapses(redis_server):
    from tokenaddons.store.cache_tier import Entry
    from tokenaddons.team.cache import SharedCache

    link = Link(redis_server.url, 1.0)
    try:
        a, b = SharedCache(link), SharedCache(link)
        a.lease_s = b.lease_s = 0.4
        assert await a.lookup("k") == (None, True)  # A fetches
        assert await b.lookup("k") == (None, False)  # B finds it claimed

        async def fetch_while_renewing():
            for _ in range(4):  # longer than a lease: renewed every 0.2 s
                await asyncio.sleep(0.2)
                await a.renew()
            a.fill("k", Entry(b"answer", "application/json", time.time(), time.time() + 60, "m", {}, 0.01))

        started = time.monotonic()
        _, entry = await asyncio.gather(fetch_while_renewing(), b.wait("k", 5))
        assert entry is not None and entry.body == b"answer" and 0.8 < time.monotonic() - started < 1.5
        assert not a.claims and not await link.client.exists(f"{link.prefix}cache-claim:k")
        # A claims another key and dies: B waits for the lease, not for its whole wait
        assert await a.lookup("k2") == (None, True)
        started = time.monotonic()
        assert await b.wait("k2", 30) is None
        assert time.monotonic() - started < 1.0
        assert await b.lookup("k2") == (None, True)  # B fetches it itself
    finally:
        await link.close()


async def test_an_event_loop_held_up_past_the_timeout_is_not_a_redis_outage(redis_server):
    changes = []
    link = Link(redis_server.url, 0.2, on_change=lambda lk: changes.append(lk.up))
    try:
        calls = []

        async def answered_while_this_process_was_busy():
            calls.append(1)
            reply = link.client.ping()
            if len(calls) == 1:
                time.sleep(0.5)  # the loop is blocked past the timeout: not Redis's doing
            return await reply

        assert await link.call(answered_while_this_process_was_busy) is True
        assert len(calls) == 2  # tried once more
        assert link.up and changes == []
        redis_server.freeze()  # a Redis that truly does not answer is still found out
        with pytest.raises(Unavailable):
            await link.call(link.client.ping)
        assert changes == [False]
    finally:
        redis_server.thaw()
        await link.close()
