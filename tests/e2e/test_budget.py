"""Budgets through a real mitmdump with the SDKs: sequential, concurrent, restart, settings file."""
from __future__ import annotations

import concurrent.futures
import json

import anthropic
import openai
import pytest
from mitmproxy import http

from tokenaddons.engines import tokens
from tokenaddons.providers import BY_NAME

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
