"""Every recorded provider exchange, replayed through intake and meter: usage
and cost in the event row equal what the provider reported and genai-prices charges."""
from __future__ import annotations

import sqlite3

import pytest
from genai_prices import Usage as GPUsage
from genai_prices import calc_price
from mitmproxy.test import taddons

from pipeline import run_flow
from tokenaddons.intake import Intake, Outlet
from tokenaddons.meter import Meter
from tokenaddons.providers import detect
from tokenaddons.providers.sse import SSEParser
from tokenaddons.store import Store
from traffic import files, interactions, response_json, to_flow

def api_of(interaction: dict):
    req = interaction["request"]
    return detect(req["method"], "/" + req["uri"].split("://", 1)[-1].partition("/")[2])


CASES = [(path, i) for path in files() for i, it in enumerate(interactions(path)) if api_of(it)]


def expected_usage(api: str, interaction: dict) -> dict | None:
    """The provider's reported usage, read straight from the recording."""
    data = response_json(interaction)
    if data is None:  # a stream: the last usage-bearing event wins (Anthropic: start + final delta)
        body = interaction["response"].get("body", {}).get("string", "")
        events = [e.json() for e in SSEParser().feed(body.encode() + b"\n\n")]
        events = [e for e in events if isinstance(e, dict)]
        if api == "anthropic.messages":
            start = next((e["message"]["usage"] for e in events if e.get("type") == "message_start"), None)
            delta = [e["usage"] for e in events if e.get("type") == "message_delta"]
            if start is None:
                return None
            u = {**start, **{k: v for k, v in (delta[-1] if delta else {}).items() if v is not None}}
            data = {"usage": u}
        elif api == "openai.chat":
            us = [e["usage"] for e in events if e.get("usage")]
            data = {"usage": us[-1]} if us else None
        elif api == "openai.responses":
            done = [e["response"] for e in events if e.get("type") in ("response.completed", "response.incomplete")]
            data = done[-1] if done else None
        elif api == "gemini.generate":
            us = [e["usageMetadata"] for e in events if e.get("usageMetadata")]
            data = {"usageMetadata": us[-1]} if us else None
        if data is None:
            return None
    if api == "anthropic.messages":
        u = data.get("usage") or {}
        cr, cw = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
        split = u.get("cache_creation") or {}
        return {"input_tokens": u["input_tokens"] + cr + cw, "cache_read_tokens": cr,
                "cache_write_tokens": cw,
                "cache_write_1h_tokens": split.get("ephemeral_1h_input_tokens", 0),
                "cache_write_5m_tokens": split.get("ephemeral_5m_input_tokens", cw),
                "output_tokens": u["output_tokens"]}
    if api == "anthropic.count_tokens":
        return {"input_tokens": 0, "output_tokens": 0}
    if api == "openai.chat":
        u = data.get("usage")
        if not u:
            return None
        return {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                "cache_read_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
                "reasoning_tokens": (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0}
    if api == "openai.responses":
        u = data.get("usage")
        if not u:
            return None
        return {"input_tokens": u["input_tokens"], "output_tokens": u["output_tokens"],
                "cache_read_tokens": (u.get("input_tokens_details") or {}).get("cached_tokens") or 0,
                "reasoning_tokens": (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0}
    if api == "gemini.generate":
        u = (data[-1] if isinstance(data, list) else data).get("usageMetadata")
        if not u:
            return None
        thoughts = u.get("thoughtsTokenCount", 0)
        return {"input_tokens": u.get("promptTokenCount", 0) + u.get("toolUsePromptTokenCount", 0),
                "cache_read_tokens": u.get("cachedContentTokenCount", 0),
                "output_tokens": u.get("candidatesTokenCount", 0) + thoughts,
                "reasoning_tokens": thoughts}
    raise AssertionError(api)


def genai_cost(provider: str, model: str, row: dict) -> float | None:
    """What genai-prices charges for the row's usage (cache tokens priced as such)."""
    try:
        price = calc_price(GPUsage(
            input_tokens=row["input_tokens"], cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"], output_tokens=row["output_tokens"]),
            model_ref=model, provider_id=provider if provider != "gemini" else "google")
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
