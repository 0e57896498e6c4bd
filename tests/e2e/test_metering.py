"""End to end: the official SDKs -> a real mitmdump with the bundle -> the simulator.

Every event row must equal what the provider (simulator) reported and what
genai-prices charges for it."""
from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner

from tokenaddons.engines import pricing
from tokenaddons.engines.usage import Usage
from tokenaddons.ui.cli import main

pytestmark = pytest.mark.integration

SYSTEM = "You are a careful assistant. " * 400  # ~2.4k tokens: cacheable


@pytest.fixture
def proxy(make_proxy, sim):
    p = make_proxy(sim.url)
    p.sim = sim
    return p


def claude(proxy, key="sk-ant-test"):
    return anthropic.Anthropic(base_url=proxy.url, api_key=key, max_retries=0)


def gpt(proxy, key="sk-test"):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0)


def cost(provider, model, **usage):
    return pricing.price(provider, model, Usage(**usage))


def test_anthropic_messages_non_stream_and_stream(proxy):
    c = claude(proxy)
    msg = c.messages.create(model="claude-sonnet-4-5", max_tokens=200,
                            messages=[{"role": "user", "content": "Hello there"}],
                            extra_headers={"X-Tokenaddons-Project": "alpha"})
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=200,
                           messages=[{"role": "user", "content": "Stream please"}]) as s:
        final = s.get_final_message()
    rows = proxy.rows(2)
    for row, m, stream in ((rows[0], msg, 0), (rows[1], final, 1)):
        assert row["api"] == "anthropic.messages" and row["stream"] == stream and row["status"] == 200
        assert row["input_tokens"] == m.usage.input_tokens
        assert row["output_tokens"] == m.usage.output_tokens
        assert row["model"] == m.model and row["complete"] == 1 and not row["estimated"]
        assert row["cost_usd"] == pytest.approx(cost("anthropic", m.model, input_tokens=m.usage.input_tokens,
                                                     output_tokens=m.usage.output_tokens))
        assert row["ttfb_ms"] is not None and row["latency_ms"] >= row["ttfb_ms"]
    assert rows[0]["project"] == "alpha" and rows[1]["project"] is None
    # the project header never reached upstream
    assert proxy.sim.requests
    assert all("x-tokenaddons-project" not in {k.lower() for k in r.headers} for r in proxy.sim.requests)


def test_a_stream_gzipped_by_the_upstream_is_read_and_reaches_the_sdk_decoded(proxy):
    c = claude(proxy)
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=200, extra_headers={"x-sim-gzip": "1"},
                           messages=[{"role": "user", "content": "Compressed please"}]) as s:
        final = s.get_final_message()
        assert "content-encoding" not in s.response.headers
    assert final.content[0].text.startswith("Simulated reply")
    [row] = proxy.rows(1)
    assert (row["output_tokens"], row["complete"]) == (final.usage.output_tokens, 1)
    sent = {k.lower(): v for k, v in proxy.sim.requests[-1].headers.items()}
    assert sent["accept-encoding"] == "identity"  # streams are asked for uncompressed


def test_anthropic_prompt_cache_write_then_read_is_priced_as_such(proxy):
    c = claude(proxy)
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    first = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, system=system,
                              messages=[{"role": "user", "content": "one"}])
    second = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, system=system,
                               messages=[{"role": "user", "content": "two"}])
    w, r = proxy.rows(2)
    assert first.usage.cache_creation_input_tokens > 0 and second.usage.cache_read_input_tokens > 0
    assert w["cache_write_tokens"] == w["cache_write_1h_tokens"] == first.usage.cache_creation_input_tokens
    assert w["input_tokens"] == first.usage.input_tokens + first.usage.cache_creation_input_tokens
    assert r["cache_read_tokens"] == second.usage.cache_read_input_tokens
    assert r["input_tokens"] == second.usage.input_tokens + second.usage.cache_read_input_tokens
    assert r["cost_usd"] < w["cost_usd"]
    assert r["prompt_cache_saved_usd"] > 0 > w["prompt_cache_saved_usd"]


def test_openai_chat_stream_usage_is_metered_and_hidden_unless_asked(proxy):
    c = gpt(proxy)
    messages = [{"role": "user", "content": "Count to three"}]
    plain = list(c.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    asked = list(c.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                           stream_options={"include_usage": True}))
    full = c.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert all(ch.choices for ch in plain) and all(ch.usage is None for ch in plain)
    usage = asked[-1].usage
    assert asked[-1].choices == [] and usage.prompt_tokens > 0
    rows = proxy.rows(3)
    for row in rows:
        assert (row["input_tokens"], row["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
        assert not row["estimated"] and row["complete"] == 1
        assert row["cost_usd"] == pytest.approx(cost("openai", row["model"], input_tokens=usage.prompt_tokens,
                                                     output_tokens=usage.completion_tokens))
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)


def test_openai_responses_non_stream_and_stream(proxy):
    c = gpt(proxy)
    resp = c.responses.create(model="gpt-4.1-mini", input="Say hi", instructions="Be brief")
    events = list(c.responses.create(model="gpt-4.1-mini", input="Say hi", instructions="Be brief", stream=True))
    done = [e for e in events if e.type == "response.completed"][0].response
    rows = proxy.rows(2)
    for row, r in zip(rows, (resp, done)):
        assert row["api"] == "openai.responses"
        assert (row["input_tokens"], row["output_tokens"]) == (r.usage.input_tokens, r.usage.output_tokens)
        assert row["complete"] == 1


def test_gemini_generate_and_stream(proxy):
    body = {"contents": [{"role": "user", "parts": [{"text": "Hello Gemini"}]}]}
    with httpx.Client(base_url=proxy.url, headers={"x-goog-api-key": "g"}) as h:
        plain = h.post("/v1beta/models/gemini-2.5-flash:generateContent", json=body).json()
        sse = h.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=body).text
        # without alt=sse: one JSON array, streamed an element at a time
        array = h.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent", json={
            **body, "contents": [{"role": "user", "parts": [{"text": "An array, please"}]}]}).json()
    last = [json.loads(line[6:]) for line in sse.splitlines() if line.startswith("data: ")][-1]
    assert isinstance(array, list) and len(array) > 1
    rows = proxy.rows(3)
    for row, data in zip(rows, (plain, last, array[-1])):
        u = data["usageMetadata"]
        assert row["api"] == "gemini.generate" and row["input_tokens"] == u["promptTokenCount"]
        assert row["output_tokens"] == u["candidatesTokenCount"] + u.get("thoughtsTokenCount", 0)
        assert row["cost_usd"] and row["cost_usd"] > 0 and not row["estimated"] and row["complete"] == 1


def test_errors_and_cut_streams_are_metered(proxy):
    c = claude(proxy)
    with pytest.raises(anthropic.RateLimitError):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                          extra_headers={"x-sim-fault": "429"})
    with pytest.raises(Exception):
        with c.messages.stream(model="claude-sonnet-4-5", max_tokens=300,
                               messages=[{"role": "user", "content": "long answer please"}],
                               extra_headers={"x-sim-fault": "cut:4"}) as s:
            s.get_final_message()
    err, cut = proxy.rows(2)
    assert err["status"] == 429 and err["error_type"] == "rate_limit_error"
    assert cut["complete"] == 0 and cut["input_tokens"] > 0


def test_unknown_endpoints_pass_through_and_are_metered_as_other(proxy):
    r = httpx.get(proxy.url + "/v1/models")
    assert r.status_code == 404
    [row] = proxy.rows(1)
    assert row["api"] == "other" and row["provider"] == "other"


def test_report_json_equals_the_rows(proxy):
    c = gpt(proxy)
    for i in range(3):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}],
                                  extra_headers={"X-Tokenaddons-Project": "p1" if i else "p2"})
    rows = proxy.rows(3)
    out = CliRunner().invoke(main, ["report", "--store", str(proxy.store), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["requests"] == 3
    assert data["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert data["output_tokens"] == sum(r["output_tokens"] for r in rows)
    assert data["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert {p["project"]: p["requests"] for p in data["projects"]} == {"p1": 2, "p2": 1}
    assert [m["model"] for m in data["models"]] == [rows[0]["model"]]
