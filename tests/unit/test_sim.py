"""The provider simulator on its own, with the official SDKs as clients."""
from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tokenaddons.sim import Simulator
from tokenaddons.test.clock import Clock

SYSTEM = [{"type": "text", "text": "You are careful. " * 400, "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sim(clock):
    with Simulator(clock=clock) as s:
        yield s


def claude(sim):
    return anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0)


def gpt(sim):
    return openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)


def test_anthropic_prompt_cache_write_read_and_expiry(sim, clock):
    c = claude(sim)
    ask = lambda q: c.messages.create(model="claude-sonnet-4-5", max_tokens=20, system=SYSTEM,
                                      messages=[{"role": "user", "content": q}]).usage
    first, second = ask("a"), ask("b")
    assert first.cache_creation_input_tokens > 1024 and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    clock.now += 301  # the 5-minute TTL lapses
    assert ask("c").cache_creation_input_tokens == first.cache_creation_input_tokens


def test_anthropic_short_prefixes_are_not_cached_and_haiku_needs_more(sim):
    c = claude(sim)
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    u = c.messages.create(model="claude-sonnet-4-5", max_tokens=20, system=short,
                          messages=[{"role": "user", "content": "x"}]).usage
    assert u.cache_creation_input_tokens == 0
    mid = [{"type": "text", "text": "You are careful. " * 300, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    s = c.messages.create(model="claude-sonnet-4-5", max_tokens=20, system=mid,
                          messages=[{"role": "user", "content": "x"}]).usage
    h = c.messages.create(model="claude-haiku-4-5", max_tokens=20, system=mid,
                          messages=[{"role": "user", "content": "x"}]).usage
    assert s.cache_creation.ephemeral_1h_input_tokens > 1024 and h.cache_creation_input_tokens == 0


def test_openai_automatic_prefix_cache_in_128_token_steps(sim):
    c = gpt(sim)
    long = "word " * 3000
    first = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": long}]).usage
    second = c.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": long + " more"}]).usage
    cached = second.prompt_tokens_details.cached_tokens
    assert first.prompt_tokens_details.cached_tokens == 0
    assert cached >= 1024 and cached % 128 == 0 and cached <= first.prompt_tokens
    r = c.responses.create(model="gpt-4.1-mini", input=long)
    assert r.usage.input_tokens_details.cached_tokens == 0  # another model, another cache


def test_streams_end_with_the_real_terminal_events(sim):
    with claude(sim).messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                                     messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 1
    chunks = list(gpt(sim).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                                  stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    with gpt(sim).responses.stream(model="gpt-4.1-mini", input="hi") as s:
        done = s.get_final_response()
    assert done.status == "completed" and done.output_text.startswith("Simulated reply to: hi")
    sse = httpx.post(sim.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                     json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}).text
    assert '"finishReason":"STOP"' in sse and sse.count("data: ") > 1


def test_tool_use_round_trip(sim):
    c = claude(sim)
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    m = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, tools=tools,
                          messages=[{"role": "user", "content": '[[tool:get_weather {"city": "Oslo"}]]'}])
    call = m.content[0]
    assert m.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"city": "Oslo"}
    after = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, tools=tools, messages=[
        {"role": "user", "content": "weather?"}, {"role": "assistant", "content": m.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rain, 4 C"}]}])
    assert after.stop_reason == "end_turn" and "rain, 4 C" in after.content[0].text
    o = gpt(sim).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}],
                                         tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
                                         extra_headers={"x-sim-tool": "f"})
    assert o.choices[0].finish_reason == "tool_calls" and o.choices[0].message.tool_calls[0].function.name == "f"


def test_faults(sim):
    c = claude(sim)
    kw = dict(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(**kw, extra_headers={"x-sim-fault": "429"})
    assert e.value.response.headers["retry-after"] == "1"
    with pytest.raises(anthropic.APIStatusError) as e:
        c.messages.create(**kw, extra_headers={"x-sim-fault": "529"})
    assert e.value.status_code == 529
    with pytest.raises(openai.InternalServerError):
        gpt(sim).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                         extra_headers={"x-sim-fault": "500"})
    with pytest.raises((anthropic.APIError, httpx.RemoteProtocolError)):  # the SDK lets a cut stream's error through
        with c.messages.stream(**kw, extra_headers={"x-sim-fault": "cut:3"}) as s:
            s.get_final_message()
    assert httpx.post(sim.url + "/v1/nothing", json={}).status_code == 404
    assert len(sim.requests) == 5
