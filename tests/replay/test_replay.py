"""Every recorded provider exchange, replayed through intake and meter: usage
and cost in the event row equal what the provider reported and genai-prices charges."""
from __future__ import annotations

import sqlite3

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price
from mitmproxy.test import taddons

from tests.replay.traffic import expected_usage, files, interactions, to_flow
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.store import Store
from tokenaddons.providers import detect
from tokenaddons.test.pipeline import run_flow


def api_of(interaction: dict):
    req = interaction["request"]
    return detect(req["method"], "/" + req["uri"].split("://", 1)[-1].partition("/")[2])


CASES = [(path, i) for path in files() for i, it in enumerate(interactions(path)) if api_of(it)]


def genai_cost(provider: str, model: str, row: dict) -> float | None:
    """What genai-prices charges for the row's usage (cache tokens priced as such)."""
    try:
        price = calc_price(GPUsage(
            input_tokens=row["input_tokens"], cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"], output_tokens=row["output_tokens"]),
            model_ref=model.removeprefix("models/"), provider_id=provider if provider != "gemini" else "google")
    except LookupError:
        return None
    return float(price.total_price)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    store = Store()
    addons = [store, Intake(), Meter(store), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path_factory.mktemp("replay") / "events.db"))
        yield addons, store
    store.done()


def row_of(store: Store, flow_id: str) -> dict:
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM requests WHERE exchange_id = ?", (flow_id,)).fetchone()
    conn.close()
    assert row is not None
    return dict(row)


def test_cases_cover_every_api():
    apis = {api_of(interactions(p)[i]).name for p, i in CASES}
    assert apis >= {"anthropic.messages", "anthropic.count_tokens", "openai.chat", "openai.responses",
                    "gemini.generate"}
    assert len(CASES) > 300


@pytest.mark.parametrize("path,index", CASES, ids=[f"{p.parent.name}/{p.stem}#{i}" for p, i in CASES])
def test_replayed_usage_and_cost(pipeline, path, index):
    addons, store = pipeline
    interaction = interactions(path)[index]
    flow = run_flow(addons, to_flow(interaction), stream_chunks=7)
    row = row_of(store, flow.id)
    assert row["status"] == interaction["response"]["status"]["code"]
    if row["status"] >= 400:
        assert row["error_type"]
        return
    expected = expected_usage(row["api"], interaction)
    if expected is None:
        pytest.skip("the recording carries no usage")
    for key, value in expected.items():
        assert row[key] == value, key
    assert not row["estimated"]
    cost = genai_cost(row["provider"], row["model"], row)
    if row["api"] == "anthropic.count_tokens":
        assert row["cost_usd"] in (None, 0)
    elif cost is None:
        assert row["cost_usd"] is None
    elif row["cache_write_1h_tokens"]:
        assert row["cost_usd"] > cost  # 1h writes cost more than genai-prices' 5m write price
    else:
        assert row["cost_usd"] == pytest.approx(cost, rel=1e-9)
