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


def turns(n: int, text: str = "step") -> list[dict]:
    """n user/assistant exchanges: 2n message blocks."""
    out = []
    for i in range(n):
        out += [{"role": "user", "content": f"{text} {i}"}, {"role": "assistant", "content": f"done {i}"}]
    return out


def marked(messages: list[dict]) -> list[dict]:
    """The same conversation with a breakpoint on its last block only."""
    last = messages[-1]
    return messages[:-1] + [{"role": last["role"], "content": [
        {"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}]}]


def test_anthropic_lookback_finds_the_previous_turn_within_20_blocks(sim):
    c = claude(sim)
    big = [{"type": "text", "text": "You are careful. " * 400}]  # no breakpoint of its own
    ask = lambda msgs: c.messages.create(model="claude-sonnet-4-5", max_tokens=5, system=big, messages=msgs).usage
    history = turns(3) + [{"role": "user", "content": "next"}]
    first = ask(marked(history))
    assert first.cache_read_input_tokens == 0 and first.cache_creation_input_tokens > 1024
    # one more exchange (2 blocks): the breakpoint moved, the lookback finds the old one
    second = ask(marked(history + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]))
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert 0 < second.cache_creation_input_tokens < 40
    # 21 blocks further on, the old entry is out of reach: everything is written again
    far = ask(marked(history + turns(10, "later") + [{"role": "user", "content": "end"}]))
    assert far.cache_read_input_tokens == 0 and far.cache_creation_input_tokens > first.cache_creation_input_tokens


def test_anthropic_breakpoint_rules_are_enforced(sim):
    c = claude(sim)
    block = lambda text, ttl="5m": {"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=5, system=[block(f"s{i}") for i in range(5)],
                          messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="must not come after"):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=5, system=[block("a"), block("b", "1h")],
                          messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="empty text"):
        c.messages.create(model="claude-sonnet-4-5", max_tokens=5, system=[block("")],
                          messages=[{"role": "user", "content": "x"}])
    ok = c.messages.create(model="claude-sonnet-4-5", max_tokens=5, system=[block("a", "1h"), block("b")],
                           messages=[{"role": "user", "content": "x"}])
    assert ok.stop_reason == "end_turn"


@pytest.mark.parametrize("model,minimum", [("claude-sonnet-4-5", 1024), ("claude-sonnet-4-6", 2048),
                                           ("claude-haiku-4-5", 4096), ("claude-opus-4-5", 4096),
                                           ("claude-3-haiku-20240307", 2048)])
def test_anthropic_minimum_cacheable_length_per_model(sim, model, minimum):
    c = claude(sim)
    for words, cached in ((minimum - 60, False), (minimum + 60, True)):
        system = [{"type": "text", "text": " ".join(f"w{i % 7}" for i in range(words // 2)),
                   "cache_control": {"type": "ephemeral"}}]
        u = c.messages.create(model=model, max_tokens=5, system=system,
                              messages=[{"role": "user", "content": "x"}]).usage
        assert (u.cache_creation_input_tokens > 0) is cached, (model, words, u)


def test_anthropic_automatic_caching_marks_the_last_block(sim):
    c = claude(sim)
    history = [{"role": "user", "content": "Read this. " + "lorem ipsum " * 700}]
    ask = lambda msgs: c.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=msgs,
                                         extra_body={"cache_control": {"type": "ephemeral"}}).usage
    first = ask(history)
    second = ask(history + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "and?"}])
    assert first.cache_creation_input_tokens > 1024
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens


def test_anthropic_bills_the_text_not_its_json_escaping(sim):
    c = claude(sim)
    coloured = "\x1b[32mPASSED\x1b[0m\n" * 50
    u = c.messages.create(model="claude-sonnet-4-5", max_tokens=5,
                          messages=[{"role": "user", "content": coloured}]).usage
    from tokenaddons.engines import tokens

    assert u.input_tokens < tokens.count_text(__import__("json").dumps(coloured)) * 0.8
    assert sim.requests[-1].usage["input"] == u.input_tokens and sim.requests[-1].model == "claude-sonnet-4-5"


def test_several_directives_are_played_one_tool_call_per_turn(sim):
    c = claude(sim)
    tools = [{"name": "read", "input_schema": {"type": "object"}}, {"name": "run", "input_schema": {"type": "object"}}]
    messages = [{"role": "user", "content": 'Go. [[tool:read {"path": "a"}]] [[tool:run {"cmd": "ls"}]]'}]
    calls = []
    while True:
        m = c.messages.create(model="claude-sonnet-4-5", max_tokens=50, tools=tools, messages=messages)
        if m.stop_reason != "tool_use":
            break
        call = m.content[0]
        calls.append((call.name, call.input))
        messages += [{"role": "assistant", "content": m.content}, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": f"result of {call.name}"}]}]
    assert calls == [("read", {"path": "a"}), ("run", {"cmd": "ls"})]
    assert "result of run" in m.content[0].text
    chat = [{"role": "user", "content": '[[tool:f {"n": 1}]] [[tool:f {"n": 2}]]'}]
    fn = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    seen = []
    for _ in range(3):
        o = gpt(sim).chat.completions.create(model="gpt-4o-mini", messages=chat, tools=fn).choices[0]
        if o.finish_reason != "tool_calls":
            break
        tc = o.message.tool_calls[0]
        seen.append(tc.function.arguments)
        chat += [o.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": tc.id, "content": "ok"}]
    assert seen == ['{"n": 1}', '{"n": 2}']
