"""Scrub through a real mitmdump: values never reach upstream and come back to the SDKs."""
from __future__ import annotations

import json

import anthropic
import openai
import pytest

PII = {
    "EMAIL_ADDRESS": "jane.roe@acme.io",
    "PHONE_NUMBER": "+1 (415) 555-0199",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "81.2.69.160",
    "AWS_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
    "ANTHROPIC_KEY": "sk-ant-api03-" + "a1B2c3D4e5" * 4,
    "GITHUB_TOKEN": "ghp_" + "Ab1" * 12,
    "SLACK_TOKEN": "xoxb-1234567890-abcdefghij",
    "GOOGLE_API_KEY": "AIza" + "B" * 35,
    "STRIPE_KEY": "sk_live_" + "c" * 24,
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


@pytest.fixture
def echo(make_proxy):
    from tokenaddons.sim import Simulator

    with Simulator(echo=True) as sim:
        proxy = make_proxy(sim.url)
        proxy.sim = sim
        yield proxy


SECRET_PROMPT = ("Please store these: " + ", ".join(PII[k] for k in (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "AWS_ACCESS_KEY", "ANTHROPIC_KEY", "GITHUB_TOKEN")))


def assert_nothing_leaked(sim):
    upstream = b"".join(r.raw for r in sim.requests)
    for k in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "AWS_ACCESS_KEY", "ANTHROPIC_KEY",
              "GITHUB_TOKEN"):
        assert PII[k].encode() not in upstream, k


@pytest.mark.integration
@pytest.mark.parametrize("chunk_chars", [None, "1", "3"])
def test_e2e_anthropic_values_never_reach_upstream_and_come_back(echo, chunk_chars):
    c = anthropic.Anthropic(base_url=echo.url, api_key="k", max_retries=0)
    kw = dict(model="claude-sonnet-4-5", max_tokens=500, messages=[{"role": "user", "content": SECRET_PROMPT}])
    if chunk_chars is None:
        answer = c.messages.create(**kw).content[0].text
    else:
        with c.messages.stream(**kw, extra_headers={"x-sim-chunk-chars": chunk_chars}) as s:
            answer = s.get_final_message().content[0].text
    assert answer == SECRET_PROMPT
    assert_nothing_leaked(echo.sim)
    assert "<EMAIL_" in echo.sim.requests[0].body["messages"][0]["content"]


@pytest.mark.integration
@pytest.mark.parametrize("stream", [False, True])
def test_e2e_openai_values_never_reach_upstream_and_come_back(echo, stream):
    c = openai.OpenAI(base_url=echo.url + "/v1", api_key="k", max_retries=0)
    kw = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET_PROMPT}])
    if stream:
        answer = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
            **kw, stream=True, extra_headers={"x-sim-chunk-chars": "2"}) if ch.choices)
    else:
        answer = c.chat.completions.create(**kw).choices[0].message.content
    assert answer == SECRET_PROMPT
    assert_nothing_leaked(echo.sim)
    rows = echo.rows(1, table="decisions", where="addon = 'scrub'")
    assert json.loads(rows[0]["detail"])["counts"]["EMAIL_ADDRESS"] == 1
    assert PII["EMAIL_ADDRESS"] not in rows[0]["detail"]


@pytest.mark.integration
def test_e2e_gemini_json_array_stream_is_restored(echo):
    """streamGenerateContent without alt=sse: one JSON array, an element at a time."""
    import httpx

    body = {"contents": [{"role": "user", "parts": [{"text": SECRET_PROMPT}]}]}
    with httpx.stream("POST", echo.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", json=body,
                      headers={"x-goog-api-key": "k", "x-sim-chunk-chars": "3"}, timeout=30) as r:
        raw = b"".join(r.iter_raw())
    chunks = json.loads(raw)
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == SECRET_PROMPT
    assert_nothing_leaked(echo.sim)


@pytest.mark.integration
def test_e2e_new_block_types_never_reach_upstream(echo):
    c = anthropic.Anthropic(base_url=echo.url, api_key="k", max_retries=0)
    c.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "search_result", "source": "https://kb.example/1", "title": f"About {PII['EMAIL_ADDRESS']}",
         "content": [{"type": "text", "text": f"key {PII['AWS_ACCESS_KEY']}"}]},
        {"type": "document", "title": PII["GITHUB_TOKEN"], "context": PII["CREDIT_CARD"],
         "source": {"type": "text", "media_type": "text/plain", "data": PII["IBAN_CODE"]}},
        {"type": "text", "text": "summarize"}]}])
    o = openai.OpenAI(base_url=echo.url + "/v1", api_key="k", max_retries=0)
    o.responses.create(model="gpt-5", input=[
        {"role": "user", "content": "patch it"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": PII["PHONE_NUMBER"]}]},
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch",
         "input": f"+key = '{PII['ANTHROPIC_KEY']}'"},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done"}])
    assert len(echo.sim.requests) == 2
    assert_nothing_leaked(echo.sim)


@pytest.mark.integration
def test_e2e_an_unreadable_body_is_refused_in_the_providers_shape_and_metered(make_proxy, sim):
    import httpx

    proxy = make_proxy(sim.url, {"intake_max_body": 2000})
    bad = b'{"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "jane.roe@acme.io \xff"}]}'
    r = httpx.post(proxy.url + "/v1/messages", content=bad, headers={"content-type": "application/json",
                                                                      "x-api-key": "k"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k")  # the SDK's retries: a 400 is not retried
    with pytest.raises(anthropic.BadRequestError, match="could not be scanned"):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=10,
                          messages=[{"role": "user", "content": "x" * 3000}])
    assert not sim.requests
    rows = proxy.rows(2)
    assert [(row["api"], row["status"], row["answered_by"]) for row in rows] == [
        ("anthropic.messages", 400, "scrub")] * 2
    decisions = proxy.rows(2, table="decisions", where="addon = 'scrub'")
    assert [d["action"] for d in decisions] == ["refuse", "refuse"]
    assert "not UTF-8" in json.loads(decisions[0]["detail"])["reason"]
