"""Rate limits: token buckets and upstream pauses, with an injected clock and sleep."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.ratelimit import RateLimit
from tokenaddons.engines import tokens
from tokenaddons.exchange import Exchange
from tokenaddons.providers import BY_NAME
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow

T0 = datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc).timestamp()


BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


class FakeSleep:
    def __init__(self, clock):
        self.clock, self.slept = clock, []

    async def __call__(self, seconds):
        self.slept.append(seconds)
        self.clock.now += seconds


@pytest.fixture
def limiter():
    clock = Clock(T0)
    sleep = FakeSleep(clock)
    rl = RateLimit(clock=clock, sleep=sleep)
    with taddons.context(Intake(), rl) as tctx:
        yield rl, clock, sleep, tctx


async def one(rl, project=None, body=BODY, key=None):
    headers = {"content-type": "application/json"}
    if project:
        headers["x-tokenaddons-project"] = project
    if key:
        headers["x-api-key"] = key
    f = make_flow("/v1/messages", body, headers)
    Intake().request(f)
    await rl.request(f)
    return f


async def test_burst_waits_for_room_then_is_refused(limiter):
    rl, clock, sleep, tctx = limiter
    tctx.options.ratelimit_rpm = 60  # one per second
    tctx.options.ratelimit_max_wait_s = str(2.5)
    flows = [await one(rl) for _ in range(60)]
    assert all(f.response is None for f in flows) and sleep.slept == []  # a full bucket at first
    waited = [await one(rl) for _ in range(2)]
    assert all(f.response is None for f in waited) and sleep.slept == [pytest.approx(1.0)] * 2
    clock.now -= 0  # no refill: the next needs a full second, fine; three in a row without time passing:
    tctx.options.ratelimit_max_wait_s = str(0.5)
    refused = await one(rl)
    assert refused.response.status_code == 429
    assert "rate limit" in json.loads(refused.response.content)["error"]["message"]
    assert refused.response.headers["retry-after"] == "1"


async def test_input_tokens_per_minute_per_project(limiter):
    rl, clock, sleep, tctx = limiter
    n = tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BODY)
    tctx.options.ratelimit_project_itpm = 3 * n
    tctx.options.ratelimit_max_wait_s = str(0)
    assert [(await one(rl, "p")).response for _ in range(3)] == [None] * 3
    assert (await one(rl, "p")).response.status_code == 429
    assert (await one(rl, "q")).response is None


async def test_upstream_429_pauses_the_provider(limiter):
    rl, clock, sleep, tctx = limiter
    tctx.options.ratelimit_max_wait_s = str(60)
    f = await one(rl)
    f.response = http.Response.make(429, b"{}", {"retry-after": "7"})
    rl.response(f)
    start = clock.now
    assert (await one(rl)).response is None
    assert clock.now - start == pytest.approx(7)  # it waited out the provider's pause
    tctx.options.ratelimit_max_wait_s = str(1)
    f = await one(rl)
    f.response = http.Response.make(529, b"{}", {"retry-after": "30"})
    rl.response(f)
    assert (await one(rl)).response.status_code == 429


async def told_no(rl, key, retry_after, status=429, header="retry-after"):
    f = await one(rl, key=key)
    f.response = http.Response.make(status, b"{}", {header: retry_after})
    rl.response(f)


async def test_a_day_long_retry_after_pauses_one_credential_for_at_most_the_cap(limiter, caplog):
    rl, clock, sleep, tctx = limiter
    tctx.options.ratelimit_max_wait_s = str(0)
    assert tctx.options.ratelimit_max_pause_s == "60"
    await told_no(rl, "alice", "86400")
    refused = await one(rl, key="alice")
    assert refused.response.status_code == 429 and refused.response.headers["retry-after"] == "60"
    assert "asked this credential to slow down" in refused.response.headers["x-tokenaddons-ratelimit"]
    assert (await one(rl, key="bob")).response is None  # another caller is not paused
    assert (await one(rl)).response is None
    assert "retry-after 86400 s" in caplog.text and "ratelimit_max_pause_s" in caplog.text
    clock.now += 60
    assert (await one(rl, key="alice")).response is None  # the pause ended: not a day later


async def test_the_pause_cap_is_an_option_and_every_retry_after_form_is_read(limiter):
    rl, clock, sleep, tctx = limiter
    tctx.options.ratelimit_max_wait_s = str(0)
    tctx.options.ratelimit_max_pause_s = str(5)
    await told_no(rl, "alice", "86400")
    assert (await one(rl, key="alice")).response.headers["retry-after"] == "5"
    await told_no(rl, "ms", "2500", header="retry-after-ms")  # OpenAI's
    assert (await one(rl, key="ms")).response.headers["retry-after"] == "3"
    date = format_datetime(datetime.fromtimestamp(clock.now + 3, timezone.utc), usegmt=True)
    await told_no(rl, "dated", date, status=529)
    assert (await one(rl, key="dated")).response.headers["retry-after"] in ("3", "4")
    for nonsense in ("soon", "nan", "-5", "0"):
        await told_no(rl, "odd", nonsense)
        assert (await one(rl, key="odd")).response is None
    clock.now += 5
    assert (await one(rl, key="alice")).response is None
    await told_no(rl, "last", "1")  # pauses that ended are forgotten: one entry per caller told no lately
    assert list(rl.paused) == [("anthropic", Exchange.of(await one(rl, key="last")).auth_hash)]
