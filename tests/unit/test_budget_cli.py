"""`tokenaddons budget` over a store the budget addon wrote."""
from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from mitmproxy import http
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
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow
from tokenaddons.ui.cli import main

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
