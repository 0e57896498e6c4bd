"""The whole bundle on mitmproxy's real addon manager: the order contracts
hold (scrub before the cache, the cache before the upstream check, the meter
before the cache fills and budgets settle), and addons keep to their rooms."""
from __future__ import annotations

import ast
import asyncio
import json
import socket
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons import bundle
from tokenaddons.exchange import Exchange
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow, rows

PACKAGE = Path(bundle.__file__).parent
EMAIL = "jane.roe@example.org"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50,
        "messages": [{"role": "user", "content": f"Mail {EMAIL} the report."}]}
ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "Sent to <EMAIL_1>."}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 120, "output_tokens": 30}}
HEADERS = {"content-type": "application/json", "x-api-key": "k1"}


def names(addons) -> list[str]:
    return [type(a).__name__ for a in addons]


def test_the_pipeline_order():
    order = names(bundle.addons())
    assert order[:5] == ["Settings", "Store", "Intercept", "Team", "Intake"]
    for before, after in [("Guard", "Scrub"), ("Scrub", "Cache"), ("Cache", "Route"), ("Route", "Compress"),
                          ("Compress", "Upstream"), ("Cache", "Upstream"), ("Upstream", "RateLimit"),
                          ("RateLimit", "Budget"), ("Budget", "Meter"), ("Meter", "Settle")]:
        assert order.index(before) < order.index(after), (before, after)
    # the body is serialized once, after every addon that may change it; the capture sees the settled exchange
    assert order[-3:] == ["Outlet", "Capture", "Heap"]


def test_addons_do_not_import_each_other_and_engines_know_no_mitmproxy():
    for path in (PACKAGE / "addons").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokenaddons.addons"):
                assert node.module == "tokenaddons.addons.store" and path.stem != "store", (path.name, node.module)
    for path in (PACKAGE / "engines").glob("*.py"):
        text = path.read_text()
        assert "import mitmproxy" not in text and "from mitmproxy" not in text, path.name


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pipeline(tmp_path):
    addons = bundle.addons()
    with taddons.context(*bundle.loaded(addons)) as tctx:  # as mitmdump loads it
        tctx.options.store_path = str(tmp_path / "events.db")
        tctx.options.budget_daily_usd = "10"
        tctx.options.intercept_all_hosts = True  # the flows go to local stand-ins, not provider hosts
        yield addons, tctx
    addons[1].done()


def send(addons, port: int, response: http.Response | None = None) -> http.HTTPFlow:
    flow = make_flow("/v1/messages", BODY, dict(HEADERS), response)
    flow.request.host, flow.request.port = "127.0.0.1", port
    return asyncio.run(arun_flow(addons, flow))


def test_order_contracts_through_the_real_addon_manager(pipeline):
    addons, tctx = pipeline
    store, budget, cache = addons[1], addons[names(addons).index("Budget")], addons[names(addons).index("Cache")]
    with socket.create_server(("127.0.0.1", 0)) as listening:  # the upstream check finds it up
        answer = http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})
        first = send(addons, listening.getsockname()[1], answer)
    ex = Exchange.of(first)
    # the exchange has ended: its summary is kept, what handling it needed is let go (heap last)
    assert ex.body is None and ex.source is None and "cache" not in ex.state
    assert ex.state["metered"] and ex.state["settled"] and first.metadata["tokenaddons"]["cost_usd"] > 0
    # scrub before the cache: what went upstream, and what the cache keyed, carries the placeholder
    assert EMAIL.encode() not in first.request.content and b"<EMAIL_1>" in first.request.content
    assert EMAIL in first.response.text  # restored for the client
    [entry] = cache.tiers.memory.values()
    assert EMAIL.encode() not in entry.body
    # the meter before the fill and the settle: both see the billed cost
    [row] = rows(store)
    assert row["cost_usd"] > 0 and entry.cost_usd == pytest.approx(row["cost_usd"])
    assert sum(budget.spent[k] for k in budget.spent if k[0] == "global" and k[1] == "daily") == \
        pytest.approx(row["cost_usd"])
    assert not any(budget.reserved.values())
    # the cache before the upstream check: a hit needs no upstream, even a dead one
    again = send(addons, closed_port())
    assert again.response.status_code == 200 and again.response.headers["x-tokenaddons-cache"] == "HIT"
    assert EMAIL in again.response.text
    # the summary a saved flow keeps: serializable, no scrubbed value
    summary = first.metadata["tokenaddons"]
    assert json.loads(json.dumps(summary)) == summary and EMAIL not in json.dumps(summary)
    assert summary["usage"]["input_tokens"] == 120 and summary["cache"] == "MISS"
    assert again.metadata["tokenaddons"]["cache"] == "HIT"
