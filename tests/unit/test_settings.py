"""The settings file: clear errors, price overrides, edits while running."""
from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone

import pytest
from mitmproxy import exceptions, http
from mitmproxy.test import taddons

from tokenaddons.addons.budget import Budget
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.engines import pricing
from tokenaddons.engines.usage import Usage
from tokenaddons.exchange import Exchange
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow

T0 = datetime(2026, 11, 24, 22, 30, tzinfo=timezone.utc).timestamp()


BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}


ANSWER = {"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi"}],
          "usage": {"input_tokens": 10, "output_tokens": 50}}


COST = pricing.price("anthropic", "claude-sonnet-4-5", Usage(
    input_tokens=10, output_tokens=50))


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


@pytest.mark.parametrize("text, error", [
    ("[budget.provider.openai]\ndialy_usd = 1\n", "unknown key(s) dialy_usd"),
    ("[budget.provider.openai]\ndaily_usd = -1\n", "must be a non-negative number"),
    ("[budget.providers.openai]\ndaily_usd = 1\n", "unknown key(s) providers"),
    ("[prices.'x/y']\ninput_mtok = 1\n", "output_mtok is required"),
    ("[prices\n", "settings.toml"),
    ("[prices.'x/y']\ninput_mtok = 1\noutput_mtok = 2\nmax_output_tokens = -5\n", "positive whole number"),
    ("[prices.'x/y']\ninput_mtok = 1\noutput_mtok = 2\nmax_output_tokens = 1.5\n", "positive whole number"),
])
def test_settings_mistakes_are_clear_errors(pipe, tmp_path, text, error):
    addons, store, budget, clock, tctx = pipe
    with pytest.raises(exceptions.OptionsError, match=re.escape(error)):
        use_settings(tctx, budget, tmp_path, text)
    with pytest.raises(exceptions.OptionsError, match="cannot read"):
        tctx.configure(tctx.master.addons.get("settings"), settings_path=str(tmp_path / "missing.toml"))


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
        tctx.configure(tctx.master.addons.get("settings"), settings_path="")
    assert Exchange.of(send(addons)).cost_usd == pytest.approx(COST)  # cleared with the file


def test_an_edited_settings_file_applies_while_running_and_a_broken_edit_is_ignored(pipe, tmp_path, caplog):
    addons, store, budget, clock, tctx = pipe
    settings = tctx.master.addons.get("settings")
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


# -- providers, aliases and routes (the parse alone: no mitmproxy needed)

ROUTING = """
[providers.anthropic]
base_url = "http://127.0.0.1:9001/"
key = "keyring"
[providers.openai]
key = "env:OPENAI_API_KEY"
[providers.groq]
api = "openai"
base_url = "https://api.groq.com/openai"
[aliases]
fast = "anthropic/claude-haiku-4-5"
mini = "gpt-4.1-mini"
[[routes]]
match = "claude-sonnet-*"
max_input_tokens = 500
no_tools = true
to = "anthropic/claude-haiku-4-5"
[[routes]]
match = "claude-sonnet-*"
fallbacks = ["anthropic/claude-sonnet-4", "openai/gpt-4.1", "groq/meta-llama/llama-4-scout"]
"""


def test_providers_aliases_and_routes_parse():
    import tomllib

    from tokenaddons.engines.settings_file import ProviderSettings, RouteRule, parse

    v = parse(tomllib.loads(ROUTING))
    assert v.providers["anthropic"] == ProviderSettings("anthropic", "anthropic", "http://127.0.0.1:9001", "keyring")
    assert v.providers["openai"] == ProviderSettings("openai", "openai", "https://api.openai.com", "env:OPENAI_API_KEY")
    assert v.providers["groq"].api == "openai"
    assert v.provider("gemini").base_url == "https://generativelanguage.googleapis.com"  # public default
    assert v.provider("nobody") is None
    assert v.aliases == {"fast": "anthropic/claude-haiku-4-5", "mini": "gpt-4.1-mini"}
    assert v.split_target("groq/meta-llama/llama-4-scout") == ("groq", "meta-llama/llama-4-scout")
    assert v.split_target("gpt-4.1-mini") == (None, "gpt-4.1-mini")
    assert v.routes == [
        RouteRule("claude-sonnet-*", "anthropic/claude-haiku-4-5", (), 500, True),
        RouteRule("claude-sonnet-*", None, ("anthropic/claude-sonnet-4", "openai/gpt-4.1",
                                            "groq/meta-llama/llama-4-scout")),
    ]


@pytest.mark.parametrize("text, error", [
    ("[providers.anthropic]\nbase_ur = 'x'\n", "[providers.anthropic]: unknown key(s) base_ur"),
    ("[providers.anthropic]\nbase_url = 'api.anthropic.com'\n", "[providers.anthropic] base_url must be an http(s)"),
    ("[providers.anthropic]\nkey = 'sk-ant-123'\n", "[providers.anthropic] key must be \"keyring\", \"env:"),
    ("[providers.anthropic]\nkey = 'env:'\n", "[providers.anthropic] key must be"),
    ("[providers.groq]\nbase_url = 'https://api.groq.com'\n", "[providers.groq]: api is required"),
    ("[providers.groq]\napi = 'mistral'\nbase_url = 'https://x.y'\n", "[providers.groq] api must be one of"),
    ("[providers.local]\napi = 'openai'\n", "[providers.local]: base_url is required"),
    ("[aliases]\nfast = 'antropic/claude-haiku-4-5'\n", "[aliases] fast: 'antropic/claude-haiku-4-5' must be"),
    ("[[routes]]\nfallbacks = ['openai/gpt-4.1']\n", "[[routes]] #1: match is required"),
    ("[[routes]]\nmatch = 'x'\nfallbacks = ['gpt-4.1']\n", "[[routes]] #1 fallbacks[0]: 'gpt-4.1' must be"),
    ("[[routes]]\nmatch = 'x'\nfallbacks = 'openai/gpt-4.1'\n", "[[routes]] #1 fallbacks must be a list"),
    ("[[routes]]\nmatch = 'x'\n", "[[routes]] #1: nothing to do"),
    ("[[routes]]\nmatch = 'x'\nmax_input_tokens = 100\nfallbacks = ['openai/gpt-4.1']\n", "to is required"),
    ("[[routes]]\nmatch = 'x'\nmax_input_tokens = -1\nto = 'openai/gpt-4.1'\n", "max_input_tokens must be"),
    ("[[routes]]\nmatch = 'x'\nno_tools = 'yes'\nto = 'openai/gpt-4.1'\n", "no_tools must be true or false"),
    ("[[routes]]\nmatch = 'x'\nto = 'openai/gpt-4.1'\nfallback = []\n", "unknown key(s) fallback"),
    ("routes = 3\n", "routes must be an array of tables"),
])
def test_routing_mistakes_name_the_key(text, error):
    import tomllib

    from tokenaddons.engines.settings_file import parse

    with pytest.raises(ValueError, match=re.escape(error)):
        parse(tomllib.loads(text))
