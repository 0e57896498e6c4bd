"""Budgets through a real mitmdump with the SDKs: sequential, concurrent, restart, settings file."""
from __future__ import annotations

import concurrent.futures
import json
import time

import anthropic
import openai
import pytest
from click.testing import CliRunner
from mitmproxy import http

from tokenaddons.engines import tokens
from tokenaddons.providers import BY_NAME
from tokenaddons.ui.cli import main

ANSWER = {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 10, "output_tokens": 50}}


def ok():
    return http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})


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


# ------------------------------------------------------------- never unlocked, locked or skipped

def raw_post(proxy, body, headers=None):
    import httpx

    return httpx.post(proxy.url + "/v1/messages", json=body, headers={"x-api-key": "k", **(headers or {})},
                      timeout=30)


def body(text, max_tokens):
    return {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


@pytest.mark.integration
def test_e2e_a_negative_max_tokens_changes_no_budget(make_proxy, sim, tmp_path):
    settings = tmp_path / "settings.toml"  # the model's most output: 64000 tokens, $0.96 at $15/MTok
    settings.write_text('[prices."claude-sonnet-4-5"]\ninput_mtok = 3\noutput_mtok = 15\nmax_output_tokens = 64000\n')
    proxy = make_proxy(sim.url, {"budget_daily_usd": "1.5", "settings_path": str(settings)})
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        negative = pool.submit(raw_post, proxy, body("negative", -100_000_000), {"x-sim-fault": "slow:3"})
        time.sleep(1.5)  # in flight, holding $0.96, not minus $1,500
        big = raw_post(proxy, body("while it flies", 100_000))
        assert big.status_code == 429 and big.headers["x-tokenaddons-budget"] == "global daily"
        assert negative.result().status_code == 200
    after = raw_post(proxy, body("after it settled", 100_000))  # the day is not locked either
    assert after.status_code == 200
    rows = proxy.rows(3)
    spent = sum(r["cost_usd"] or 0 for r in rows)
    status = json.loads(CliRunner().invoke(main, ["budget", "--store", str(proxy.store), "--json"]).output)
    assert status[0]["spent_usd"] == pytest.approx(spent) and spent < 0.01


@pytest.mark.integration
def test_e2e_an_unmetered_answer_counts_its_reservation(make_proxy, sim):
    need = tokens.estimate_input_tokens(BY_NAME["anthropic.messages"], body("broken usage", 1000)) * 3e-6 \
        + 1000 * 15e-6
    proxy = make_proxy(sim.url, {"budget_daily_usd": str(1.5 * need)})
    broken = raw_post(proxy, body("broken usage", 1000), {"x-sim-patch": json.dumps({"usage": {"output_tokens": "lots"}})})
    assert broken.status_code == 200
    refused = raw_post(proxy, body("broken usage", 1000))  # its reservation stands as spent: no room for another
    assert refused.status_code == 429
    assert "could not be metered" in proxy.log.read_text()


@pytest.mark.integration
def test_e2e_a_store_whose_spend_cannot_be_read_fails_closed(make_proxy, sim, tmp_path):
    from tokenaddons.store import connect, migrate

    for open_ in (False, True):
        workdir = tmp_path / f"open-{open_}"
        workdir.mkdir()
        conn = connect(workdir / "events.db")
        migrate(conn)
        conn.executescript("DROP TRIGGER requests_rollup_day; DROP TABLE rollup_requests_day;")  # damaged
        conn.close()
        proxy = make_proxy(sim.url, {"budget_daily_usd": "5", "budget_fail_open": str(open_).lower()}, workdir=workdir)
        answer = raw_post(proxy, body("hello", 50))
        if open_:
            assert answer.status_code == 200
        else:
            assert answer.status_code == 503 and answer.headers["x-tokenaddons-budget"] == "unreadable"
            message = answer.json()["error"]["message"]
            assert "could not be read" in message and "budget_fail_open" in message
        assert "spend so far could not be read" in proxy.log.read_text()
        proxy.rows(1)  # metered either way
        proxy.stop()


@pytest.mark.integration
def test_e2e_spend_survives_a_restart_in_a_folder_named_with_uri_characters(make_proxy, sim, tmp_path):
    from tokenaddons.store import connect

    folder = tmp_path / "team #1?"
    folder.mkdir()
    store = {"store_path": str(folder / "events.db")}
    proxy = make_proxy(sim.url, store)
    anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0).messages.create(**BUDGET_BODY)
    proxy.stop()  # stopped normally: everything metered is written
    [cost] = [c for (c,) in connect(folder / "events.db", readonly=True).execute("SELECT cost_usd FROM requests")]
    # room for the next request only if the day's spend were taken as $0
    again = make_proxy(sim.url, {**store, "budget_daily_usd": str(cost + 0.5 * worst_case())})
    with pytest.raises(anthropic.RateLimitError):  # the spend was read back
        anthropic.Anthropic(base_url=again.url, api_key="k", max_retries=0).messages.create(
            **{**BUDGET_BODY, "messages": [{"role": "user", "content": "spent"}]})  # not a cache hit
