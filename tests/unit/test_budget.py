"""Budgets: windows, reservations, alerts, restarts and settings-file scopes, with an injected clock."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timezone

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.budget import Budget
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.engines import pricing, tokens
from tokenaddons.engines.budget_windows import output_cap, window_bounds
from tokenaddons.engines.usage import Usage
from tokenaddons.providers import BY_NAME
from tokenaddons.store.queries import budget_status
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow

T0 = datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc).timestamp()


BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


ANSWER = {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 10, "output_tokens": 50}}


COST = pricing.price("anthropic", "claude-sonnet-4-5", Usage(
    input_tokens=10, output_tokens=50))


NEED = (tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BODY) * 3e-6 + 100 * 15e-6)


@pytest.fixture
def pipe(tmp_path):
    clock = Clock(T0)
    store = Store()
    settings = Settings()
    budget = Budget(store, settings.published, clock=clock)
    addons = [settings, store, Intake(), budget, Meter(store), Settle(), Outlet()]
    with taddons.context(*addons) as tctx:
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


def use_settings(tctx, budget, tmp_path, text: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    tctx.configure(tctx.master.addons.get("settings"), settings_path=str(path))
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
        addons[2].request(f)
        budget.request(f)
    passed = [f for f in flows if f.response is None]
    assert len(passed) == 5
    for f in passed:  # answers come back; the real cost replaces each reservation
        f.response = ok()
        for a in addons[4:]:
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
        addons = [store, Intake(), budget, Meter(store), Settle(), Outlet()]
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


# ------------------------------------------------------------- never unlocked, locked or skipped

import logging  # noqa: E402

from tokenaddons.engines.budget_windows import worst_output  # noqa: E402

INPUT = tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], BODY)


def in_flight(addons, body):
    """The request phase only: a request on its way upstream, holding its reservation."""
    f = make_flow("/v1/messages", body, {"content-type": "application/json"}, ok())
    f.response = None
    addons[2].request(f)
    addons[3].request(f)
    return f


def answered(addons, f, response=None):
    f.response = response or ok()
    for a in addons[4:]:
        getattr(a, "response", lambda _: None)(f)


def test_output_caps_that_are_not_positive_integers():
    for bad in (-100_000_000, 0, -1, 1.5, "100", True):
        assert output_cap({"max_tokens": bad}) == 0, bad
        assert output_cap({"generationConfig": {"maxOutputTokens": bad}}) == 0, bad
    assert output_cap({"max_tokens": None}) is None and output_cap({}) is None
    assert output_cap({"max_completion_tokens": 12}) == 12
    # a bad cap counts as the most the model can write: its own limit, else what its window leaves
    assert worst_output(0, 1000, 64000, 200_000, 4096) == 64000
    assert worst_output(0, 1000, None, 200_000, 4096) == 199_000
    assert worst_output(0, 1000, None, None, 4096) == 4096
    assert worst_output(10**12, 1000, None, 200_000, 4096) == 199_000  # never more than the model can write
    assert worst_output(None, 1000, None, 2000, 4096) == 1000


def test_a_negative_max_tokens_changes_no_budget(pipe, caplog):
    addons, store, budget, clock, tctx = pipe
    window_cost = (1_000_000 - INPUT) * 15e-6 + INPUT * 3e-6  # what claude-sonnet-4-5's 1M window could cost
    tctx.options.budget_daily_usd = str(window_cost + 1.0)
    negative = in_flight(addons, {**BODY, "max_tokens": -100_000_000})
    held = sum(budget.reserved.values())
    assert held == pytest.approx(window_cost)  # reserved as the most the model can write, never below zero
    big = in_flight(addons, {**BODY, "max_tokens": 100_000})  # worst case $1.50: over what is left
    assert big.response.status_code == 429
    answered(addons, negative)
    assert not any(budget.reserved.values())
    assert budget.spent[("global", "daily", T0 - 22.5 * 3600)] == pytest.approx(COST)
    assert send(addons).response.status_code == 200  # the day is not locked either


def test_a_bad_cap_reserves_the_settings_max_output_or_the_expected_output(pipe, tmp_path):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_daily_usd = "100"
    use_settings(tctx, budget, tmp_path, """
[prices."claude-sonnet-4-5"]
input_mtok = 3
output_mtok = 15
max_output_tokens = 64000
""")
    f = in_flight(addons, {**BODY, "max_tokens": -5})
    assert sum(budget.reserved.values()) == pytest.approx(INPUT * 3e-6 + 64000 * 15e-6)
    answered(addons, f)
    tctx.options.budget_expected_output_tokens = 300
    f = in_flight(addons, {**BODY, "max_tokens": "lots"})
    assert sum(budget.reserved.values()) == pytest.approx(INPUT * 3e-6 + 300 * 15e-6)
    answered(addons, f)


def test_budget_windows_follow_the_time_zone_option(pipe):
    addons, store, budget, clock, tctx = pipe
    tctx.options.budget_timezone = "Asia/Tokyo"  # T0 is 07:30 there
    tctx.options.budget_daily_usd = str(COST + 0.9 * NEED)
    assert send(addons).response.status_code == 200
    refused = send(addons)
    assert refused.response.status_code == 429 and int(refused.response.headers["retry-after"]) == 16.5 * 3600
    assert budget.spent[("global", "daily", T0 - 7.5 * 3600)] == pytest.approx(COST)


def test_unmetered_answers_count_their_reservation(pipe, caplog):
    addons, store, budget, clock, tctx = pipe
    caplog.set_level(logging.WARNING)
    tctx.options.budget_daily_usd = "1"
    day = ("global", "daily", T0 - 22.5 * 3600)
    broken = {**ANSWER, "usage": {"input_tokens": 10, "output_tokens": "lots"}}
    send(addons, response=http.Response.make(200, json.dumps(broken).encode(), {"content-type": "application/json"}))
    assert budget.spent[day] == pytest.approx(NEED)  # not $0: the provider may have billed it
    assert "could not be metered" in caplog.text
    unknown = {**ANSWER, "model": "claude-unpriced-9"}  # served by a model with no known price
    send(addons, response=http.Response.make(200, json.dumps(unknown).encode(), {"content-type": "application/json"}))
    assert budget.spent[day] == pytest.approx(2 * NEED)
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    send(addons, response=http.Response.make(400, json.dumps(error).encode(), {"content-type": "application/json"}))
    assert budget.spent[day] == pytest.approx(2 * NEED)  # an error costs nothing


def unreadable(monkeypatch):
    import tokenaddons.addons.budget as module

    def fail(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(module, "connect", fail)


def test_a_store_that_cannot_be_read_fails_closed(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    clock = Clock(T0)
    store = Store()
    budget = Budget(store, clock=clock)
    addons = [store, Intake(), budget, Meter(store), Settle(), Outlet()]
    unreadable(monkeypatch)
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        assert "could not be read" in caplog.text
        assert send(addons).response.status_code == 200  # no cap: nothing to enforce
        tctx.options.budget_daily_usd = "5"
        refused = send(addons)
        body = json.loads(refused.response.content)
        assert refused.response.status_code == 503 and refused.response.headers["x-tokenaddons-budget"] == "unreadable"
        assert "could not be read" in body["error"]["message"] and "budget_fail_open" in body["error"]["message"]
        tctx.options.budget_fail_open = True
        assert send(addons).response.status_code == 200
        tctx.options.budget_fail_open = False
        monkeypatch.undo()  # the store can be read again: tried again as requests come, in a worker thread
        clock.now += 10

        async def twice():
            first = await arun_flow(addons, make_flow("/v1/messages", BODY, {"content-type": "application/json"},
                                                      ok()))
            await budget._reading
            second = await arun_flow(addons, make_flow("/v1/messages", BODY, {"content-type": "application/json"},
                                                       ok()))
            return first.response.status_code, second.response.status_code

        assert asyncio.run(twice()) == (503, 200)
        assert "read again" in caplog.text
        assert budget.spent[("global", "daily", T0 - 22.5 * 3600)] == pytest.approx(3 * COST)
    store.done()
