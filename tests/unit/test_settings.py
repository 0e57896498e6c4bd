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
