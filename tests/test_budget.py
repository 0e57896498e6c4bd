"""Budgets and rate limits: units with an injected clock (no sleeps), then a real
mitmdump with the SDKs for the sequential, concurrent and restart cases."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import sqlite3
import time
from datetime import datetime, timezone

import anthropic
import openai
import pytest
from click.testing import CliRunner
from mitmproxy import exceptions, http
from mitmproxy.test import taddons

from pipeline import Clock, arun_flow, make_flow
from tokenaddons import pricing, tokens
from tokenaddons.budget import Budget, BudgetSettle, output_cap, window_bounds
from tokenaddons.budget import status as budget_status
from tokenaddons.exchange import Exchange
from tokenaddons.cli import main
from tokenaddons.intake import Intake, Outlet
from tokenaddons.meter import Meter
from tokenaddons.providers import BY_NAME
from tokenaddons.ratelimit import RateLimit
from tokenaddons.settings import Settings
from tokenaddons.store import Store

T0 = datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc).timestamp()
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
ANSWER = {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 10, "output_tokens": 50}}
COST = pricing.price("anthropic", "claude-sonnet-4-5", __import__("tokenaddons.usage").usage.Usage(
    input_tokens=10, output_tokens=50))
NEED = (tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BODY) * 3e-6 + 100 * 15e-6)


@pytest.fixture
def pipe(tmp_path):
    clock = Clock(T0)
    store = Store()
    budget = Budget(store, Settings(), clock=clock)
    addons = [store, Intake(), budget, Meter(store), BudgetSettle(budget), Outlet()]
    with taddons.context(budget.settings, *addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        yield addons, store, budget, clock, tctx
    store.done()


def ok():
    return http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})


def send(addons, project=None, body=BODY, response=None, ts=T0):
    headers = {"content-type": "application/json"}
    if project:
        headers["x-tokenaddons-project"] = project
    flow = make_flow("/v1/messages", body, headers, response or ok())
    flow.request.timestamp_start = ts  # the metered row's time, in the simulated day
    return asyncio.run(arun_flow(addons, flow))


def test_calendar_windows_in_a_time_zone():
    from zoneinfo import ZoneInfo

    utc, paris = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")
    assert window_bounds("hourly", T0, utc) == (T0 - 1800, T0 + 1800)
    start, end = window_bounds("daily", T0, paris)  # 23:30 in Paris: the day ends in 30 minutes
    assert end - T0 == 1800 and end - start == 86400
    start, end = window_bounds("monthly", T0, utc)
    assert datetime.fromtimestamp(start, utc).day == 1 and datetime.fromtimestamp(end, utc).month == 12
    assert output_cap({"max_output_tokens": 7}) == 7
    assert output_cap({"generationConfig": {"maxOutputTokens": 9}}) == 9


def test_requests_pass_until_the_next_would_exceed_the_cap(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_daily_usd = str(3.5 * COST + NEED)  # room for 4 billed answers
    statuses = [send(addons).response.status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]
    refused = send(addons)
    body = json.loads(refused.response.content)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "daily budget" in body["error"]["message"] and "resets at" in body["error"]["message"]
    assert refused.response.headers["x-tokenaddons-budget"] == "global daily"
    assert int(refused.response.headers["retry-after"]) == 5400  # 22:30 -> midnight UTC
    assert budget.spent[("global", "daily", T0 - 22.5 * 3600)] == pytest.approx(4 * COST)
    assert not any(budget.reserved.values())  # every reservation settled


def test_a_new_window_starts_from_zero(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_hourly_usd = str(COST + NEED)
    assert [send(addons).response.status_code for _ in range(3)] == [200, 200, 429]
    clock.now += 1800  # the next hour
    assert send(addons).response.status_code == 200


def test_project_caps_apply_to_each_project(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_project_daily_usd = str(COST + NEED)
    assert [send(addons, "a").response.status_code for _ in range(3)] == [200, 200, 429]
    assert send(addons, "b").response.status_code == 200
    assert send(addons).response.status_code == 200  # untagged traffic has no project cap


def test_reservations_make_concurrent_requests_wait_their_turn(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_daily_usd = str(5.5 * NEED)
    flows = [make_flow("/v1/messages", BODY, {"content-type": "application/json"}) for _ in range(20)]
    for f in flows:  # all twenty in flight at once: none has an answer yet
        addons[1].request(f)
        budget.request(f)
    passed = [f for f in flows if f.response is None]
    assert len(passed) == 5
    for f in passed:  # answers come back; the real cost replaces each reservation
        f.response = ok()
        for a in addons[3:]:
            getattr(a, "response", lambda _: None)(f)
    assert not any(budget.reserved.values())


def test_alerts_once_per_window(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_daily_usd = str(4 * COST + NEED)
    codes = [send(addons).response.status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2  # the refusal is the 100 % mark; reported once
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    alerts = [json.loads(d)["percent"] for (d,) in conn.execute(
        "SELECT detail FROM decisions WHERE addon='budget' AND action='alert' ORDER BY id")]
    assert alerts == [50, 80, 100]


def test_restart_rebuilds_spend_from_the_store(tmp_path):
    clock = Clock(T0)
    for round_ in range(2):
        store = Store()
        budget = Budget(store, clock=clock)
        addons = [store, Intake(), budget, Meter(store), BudgetSettle(budget), Outlet()]
        with taddons.context(*addons) as tctx:
            tctx.configure(store, store_path=str(tmp_path / "events.db"))
            tctx.options.budget_daily_usd = str(2.5 * COST + NEED)
            codes = [send(addons).response.status_code for _ in range(2)]
            store.events.flush()
        store.done()
        if round_ == 0:
            assert codes == [200, 200]
        else:
            assert codes == [200, 429]  # one more fits after the restart, not two


def test_budget_cli_shows_windows(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_daily_usd = str(1.0)
    tctx.options.budget_monthly_usd = str(10.0)
    send(addons, ts=time.time())
    store.events.flush()
    out = CliRunner().invoke(main, ["budget", "--store", str(store.events.path), "--json"])
    windows = {w["window"]: w for w in json.loads(out.output)}
    assert set(windows) == {"daily", "monthly"}
    assert windows["daily"]["limit_usd"] == 1.0 and windows["daily"]["spent_usd"] == pytest.approx(COST)
    table = CliRunner().invoke(main, ["budget", "--store", str(store.events.path)])
    assert "daily" in table.output and "$1.00" in table.output


def use_settings(tctx, budget, tmp_path, text: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    tctx.configure(budget.settings, settings_path=str(path))
    tctx.configure(budget)


GPT = {"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


def send_chat(addons, body=GPT):
    answer = {"model": "gpt-4o", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                               "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}}
    flow = make_flow("/v1/chat/completions", body, {"content-type": "application/json"},
                     http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"}))
    flow.request.timestamp_start = T0
    return asyncio.run(arun_flow(addons, flow)).response.status_code


def test_settings_caps_per_provider_model_and_named_project(pipe, tmp_path):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_project_daily_usd = str(10 * (COST + NEED))  # the default for other projects
    use_settings(tctx, budget, tmp_path, f"""
        [budget.provider.openai]
        daily_usd = 0.0000001
        [budget.model."claude-sonnet-*"]
        hourly_usd = {2.5 * COST + NEED}
        [budget.project.evals]
        daily_usd = {0.5 * COST + NEED}
    """)
    assert send_chat(addons) == 429  # the provider cap
    refused = send(addons, "evals")
    assert refused.response.status_code == 200
    refused = send(addons, "evals")  # the named project's own cap, tighter than the default
    assert refused.response.status_code == 429
    assert refused.response.headers["x-tokenaddons-budget"] == "project:evals daily"
    assert "daily budget for project evals" in json.loads(refused.response.content)["error"]["message"]
    assert [send(addons, "other").response.status_code for _ in range(2)] == [200, 200]
    refused = send(addons, "other")  # three billed in the hour: the model pattern's cap
    assert refused.response.headers["x-tokenaddons-budget"] == "model:claude-sonnet-* hourly"
    clock.now += 1800
    assert send(addons, "other").response.status_code == 200  # a new hour


def test_settings_caps_survive_a_restart_and_show_in_status(pipe, tmp_path):
    addons, store, budget, clock, tctx = pipe
    toml = f"[budget.model.'claude-*']\ndaily_usd = {1.5 * COST + NEED}\n"
    use_settings(tctx, budget, tmp_path, toml)
    assert [send(addons, "p").response.status_code for _ in range(3)] == [200, 200, 429]
    budget.spent.clear()
    budget._rebuilt_for = None
    tctx.configure(budget)  # as after a restart: spend per scope rebuilt from the store
    assert send(addons, "p").response.status_code == 429
    store.events.flush()
    with sqlite3.connect(store.events.path) as conn:
        found = {w["scope"]: w for w in budget_status(conn, T0)}
    assert found["model:claude-*"]["spent_usd"] == pytest.approx(2 * COST)


@pytest.mark.parametrize("text, error", [
    ("[budget.provider.openai]\ndialy_usd = 1\n", "unknown key(s) dialy_usd"),
    ("[budget.provider.openai]\ndaily_usd = -1\n", "must be a non-negative number"),
    ("[budget.providers.openai]\ndaily_usd = 1\n", "unknown key(s) providers"),
    ("[prices.'x/y']\ninput_mtok = 1\n", "output_mtok is required"),
    ("[prices\n", "settings.toml"),
])
def test_settings_mistakes_are_clear_errors(pipe, tmp_path, text, error):
    addons, store, budget, clock, tctx = pipe
    with pytest.raises(exceptions.OptionsError, match=re.escape(error)):
        use_settings(tctx, budget, tmp_path, text)
    with pytest.raises(exceptions.OptionsError, match="cannot read"):
        tctx.configure(budget.settings, settings_path=str(tmp_path / "missing.toml"))


def test_settings_price_overrides_reach_the_meter(pipe, tmp_path):
    addons, store, budget, clock, tctx = pipe
    use_settings(tctx, budget, tmp_path, """
        [prices."anthropic/claude-sonnet-4-5"]
        input_mtok = 1
        output_mtok = 2
    """)
    try:
        flow = send(addons)
        assert Exchange.of(flow).cost_usd == pytest.approx((10 * 1 + 50 * 2) / 1e6)
    finally:
        tctx.configure(budget.settings, settings_path="")
    assert Exchange.of(send(addons)).cost_usd == pytest.approx(COST)  # cleared with the file


# ---------------------------------------------------------------- rate limits

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


async def one(rl, project=None, body=BODY):
    headers = {"content-type": "application/json"}
    if project:
        headers["x-tokenaddons-project"] = project
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


# ---------------------------------------------------------------- end to end

BUDGET_BODY = dict(model="claude-sonnet-4-5", max_tokens=60, messages=[{"role": "user", "content": "spend"}])


def worst_case() -> float:
    return tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BUDGET_BODY) * 3e-6 + 60 * 15e-6


@pytest.mark.integration
def test_e2e_sequential_until_the_cap_then_the_sdk_raises_rate_limit(make_proxy, sim):
    cap = 0.003
    proxy = make_proxy(sim.url, {"budget_daily_usd": cap})
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=10)
    passed = 0
    with pytest.raises(anthropic.RateLimitError) as err:
        for i in range(20):
            c.messages.create(**{**BUDGET_BODY, "messages": [{"role": "user", "content": f"spend {i}"}]})
            passed += 1
    with pytest.raises(anthropic.RateLimitError):  # the same request again: refused at once, not held
        c.messages.create(**{**BUDGET_BODY, "messages": [{"role": "user", "content": f"spend {passed}"}]})
    assert "tokenaddons budget" in str(err.value) and "daily budget" in str(err.value)
    assert err.value.response.headers["x-tokenaddons-budget"] == "global daily"
    assert passed >= 3
    spent = sum(r["cost_usd"] for r in proxy.rows(passed + 2))
    assert spent <= cap and spent + worst_case() > cap  # refused only when the next could exceed
    o = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError):
        o.chat.completions.create(model="gpt-4o", max_tokens=4000, messages=[{"role": "user", "content": "x"}])
    # a restart keeps the day's spend
    proxy.stop()
    again = make_proxy(sim.url, {"budget_daily_usd": cap}, workdir=proxy.workdir)
    with pytest.raises(anthropic.RateLimitError):
        anthropic.Anthropic(base_url=again.url, api_key="k", max_retries=0).messages.create(**BUDGET_BODY)


@pytest.mark.integration
def test_e2e_twenty_concurrent_under_a_cap_worth_five(make_proxy, sim):
    proxy = make_proxy(sim.url, {"budget_daily_usd": 5.5 * worst_case()})
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)

    def call(i):
        try:
            c.messages.create(**{**BUDGET_BODY, "messages": [{"role": "user", "content": f"spend {i:02d}"}]},
                              extra_headers={"x-sim-fault": "slow:0.5"})
            return "ok"
        except anthropic.RateLimitError:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(call, range(20)))
    assert outcomes.count("ok") <= 6 and outcomes.count("ok") >= 1
    assert outcomes.count("refused") == 20 - outcomes.count("ok")
    assert len(sim.requests) == outcomes.count("ok")


@pytest.mark.integration
def test_e2e_burst_against_a_rate_limit(make_proxy, sim):
    proxy = make_proxy(sim.url, {"ratelimit_rpm": 5, "ratelimit_max_wait_s": "0"})
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    outcomes = []
    for i in range(10):
        try:
            c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"burst {i}"}])
            outcomes.append("ok")
        except openai.RateLimitError as e:
            assert "rate limit reached" in str(e) and e.response.headers["retry-after"] == "12"
            outcomes.append("429")
    assert outcomes == ["ok"] * 5 + ["429"] * 5
    assert len(sim.requests) == 5


@pytest.mark.integration
def test_e2e_settings_file_caps_one_provider_and_prices_a_model(make_proxy, sim, tmp_path):
    settings = tmp_path / "settings.toml"
    settings.write_text('[budget.provider.openai]\ndaily_usd = 0.000001\n'
                        '[prices."anthropic/claude-sonnet-4-5"]\ninput_mtok = 1\noutput_mtok = 2\n')
    proxy = make_proxy(sim.url, {"settings_path": str(settings)})
    o = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        o.chat.completions.create(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "x"}])
    assert "daily budget for provider openai" in str(err.value)
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
    answer = c.messages.create(**BUDGET_BODY)  # another provider: not capped
    (_, row), = [(r["provider"], r) for r in proxy.rows(2) if r["provider"] == "anthropic"]
    u = answer.usage
    assert row["cost_usd"] == pytest.approx((u.input_tokens * 1 + u.output_tokens * 2) / 1e6)


def test_an_edited_settings_file_applies_while_running_and_a_broken_edit_is_ignored(pipe, tmp_path, caplog):
    addons, store, budget, clock, tctx = pipe
    settings = budget.settings
    ticks = Clock(0.0)
    settings.clock = ticks
    use_settings(tctx, budget, tmp_path, "[budget.provider.anthropic]\ndaily_usd = 100\n")
    path = tmp_path / "settings.toml"

    def request() -> int:
        flow = make_flow("/v1/messages", BODY, {"content-type": "application/json"}, ok())
        flow.request.timestamp_start = T0
        settings.request(flow)  # first in the bundle: it looks for edits
        return asyncio.run(arun_flow(addons, flow)).response.status_code

    assert request() == 200
    path.write_text("[budget.provider.anthropic]\ndaily_usd = 0.0000001\n")
    assert request() == 200  # checked at most once a second
    ticks.now += 1.5
    assert request() == 429  # the new cap is in force, without a restart
    path.write_text("[budget.provider.anthropic]\ndialy_usd = 100\n")
    ticks.now += 1.5
    assert request() == 429  # a broken edit: logged, the settings in force stay
    assert "dialy_usd" in caplog.text and "keeping the settings in force" in caplog.text


def test_a_model_cap_counts_the_alias_asked_for_and_the_dated_model_billed(pipe, tmp_path):
    addons, store, budget, clock, tctx = pipe
    use_settings(tctx, budget, tmp_path, f'[budget.model."claude-sonnet-4-5"]\ndaily_usd = {1.5 * COST + NEED}\n'
                                         '[budget.model."gpt-4o"]\ndaily_usd = 0.0000001\n')
    dated = {**ANSWER, "model": "claude-sonnet-4-5-20250929"}

    def billed_as_dated():
        return http.Response.make(200, json.dumps(dated).encode(), {"content-type": "application/json"})

    codes = [send(addons, response=billed_as_dated()).response.status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # the spend billed under the dated name counts against the alias's cap
    budget.spent.clear()
    budget._rebuilt_for = None
    tctx.configure(budget)  # a restart: spend rebuilt from rows that carry the dated name
    assert send(addons, response=billed_as_dated()).response.status_code == 429
    mini = {**GPT, "model": "gpt-4o-mini"}
    assert send_chat(addons, mini) == 200  # gpt-4o's cap is not gpt-4o-mini's


def test_spend_made_before_a_cap_is_set_counts_once_it_is(pipe):
    addons, store, budget, clock, tctx = pipe
    assert [send(addons).response.status_code for _ in range(2)] == [200, 200]  # no cap yet
    tctx.options.budget_daily_usd = str(2.5 * COST + NEED)  # set while running
    assert [send(addons).response.status_code for _ in range(2)] == [200, 429]
