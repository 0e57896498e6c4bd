"""Where prompt-cache hints go, as pure functions of a request body; the
provider's own rules (the simulator's) accept every body they produce."""
from __future__ import annotations

import copy
import json

import pytest

from tokenaddons.engines import cache_hints as h
from tokenaddons.engines.tokens import count_text
from tokenaddons.sim.answers import anthropic_cache_error

LONG = "You are a careful coding agent. Read before you edit; run the tests after every change. " * 80
TOOLS = [{"name": "read_file", "description": "Read a file.", "input_schema": {"type": "object"}},
         {"name": "bash", "description": "Run a command.", "input_schema": {"type": "object"}}]


def count(value) -> int:
    return count_text(value if isinstance(value, str) else json.dumps(value))


def agent(turns: int, system=LONG) -> dict:
    messages: list[dict] = [{"role": "user", "content": "Find the bug."}]
    for i in range(turns):
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "bash",
                                                        "input": {"command": f"step {i}"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                   "content": f"output {i} " * 50}]}]
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": system, "tools": copy.deepcopy(TOOLS),
            "messages": messages}


def placed(body: dict, model: str = "claude-sonnet-4-5", ttl: str = "5m") -> list[h.Breakpoint]:
    points = h.anthropic_breakpoints(body, model, count, ttl)
    for p in points:
        p.apply()
    return points


def marks(body: dict) -> list[tuple[str, dict]]:
    """(where, cache_control) of every breakpoint in a body, in prompt order."""
    out = []
    for i, tool in enumerate(body.get("tools") or []):
        if "cache_control" in tool:
            out.append((f"tools[{i}]", tool["cache_control"]))
    system = body.get("system")
    for i, block in enumerate(system if isinstance(system, list) else []):
        if "cache_control" in block:
            out.append((f"system[{i}]", block["cache_control"]))
    for m, msg in enumerate(body["messages"]):
        for b, block in enumerate(msg["content"] if isinstance(msg["content"], list) else []):
            if isinstance(block, dict) and "cache_control" in block:
                out.append((f"messages[{m}][{b}]", block["cache_control"]))
    return out


def test_an_agent_turn_gets_the_prefix_the_turn_before_and_the_newest_turn():
    body = agent(3)
    points = placed(body)
    assert [p.where for p in points] == ["prefix", "previous turn", "newest turn"]
    assert marks(body) == [("system[0]", {"type": "ephemeral"}), ("messages[4][0]", {"type": "ephemeral"}),
                           ("messages[6][0]", {"type": "ephemeral"})]
    assert body["system"][0]["text"] == LONG  # a string system prompt became one block, same text
    assert anthropic_cache_error(body) is None


def test_the_first_turn_and_a_string_message():
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": LONG, "tools": TOOLS,
            "messages": [{"role": "user", "content": "Find the bug."}]}
    placed(body)
    assert marks(body) == [("system[0]", {"type": "ephemeral"}), ("messages[0][0]", {"type": "ephemeral"})]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "Find the bug.",
                                                "cache_control": {"type": "ephemeral"}}]


def test_no_system_prompt_marks_the_last_tool():
    body = agent(1, system=None)
    del body["system"]
    body["tools"][-1]["description"] = LONG
    placed(body)
    assert marks(body)[0] == ("tools[1]", {"type": "ephemeral"})


def test_a_clients_own_breakpoints_are_left_exactly_as_they_are():
    own = agent(2)
    own["messages"][2]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    before = copy.deepcopy(own)
    assert placed(own) == [] and own == before
    auto = agent(2)
    auto["cache_control"] = {"type": "ephemeral"}  # automatic caching, asked for at the top level
    before = copy.deepcopy(auto)
    assert placed(auto) == [] and auto == before


def test_below_the_models_minimum_nothing_is_marked():
    short = agent(1, system="Be brief.")
    short["messages"][2]["content"][0]["content"] = "ok"
    assert placed(short) == []
    mid = agent(1, system="You are careful. " * 300)  # ~1,200 tokens: Sonnet 4.5 caches it, Haiku 4.5 does not
    assert placed(copy.deepcopy(mid), "claude-sonnet-4-5") and not placed(copy.deepcopy(mid), "claude-haiku-4-5")


def test_one_hour_prefix_comes_before_five_minute_turns():
    body = agent(2)
    placed(body, ttl="1h")
    assert [m[1] for m in marks(body)] == [{"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"},
                                           {"type": "ephemeral"}]
    assert anthropic_cache_error(body) is None


def test_blocks_that_cannot_carry_a_breakpoint_are_skipped():
    body = agent(1)
    body["messages"].append({"role": "assistant", "content": [
        {"type": "text", "text": "Let me think."}, {"type": "thinking", "thinking": "...", "signature": "sig"},
        {"type": "text", "text": ""}]})
    placed(body)
    where = [w for w, _ in marks(body)]
    assert "messages[3][0]" in where and anthropic_cache_error(body) is None


def test_a_one_off_question_gets_no_turn_breakpoint():
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": LONG}]}
    assert placed(body) == []
    with_system = {"model": "claude-sonnet-4-5", "max_tokens": 10, "system": LONG,
                   "messages": [{"role": "user", "content": "Summarize this."}]}
    assert [p.where for p in placed(with_system)] == ["prefix"]  # the system prompt other calls share


@pytest.mark.parametrize("turns", [1, 5, 30])
def test_never_more_than_four(turns):
    body = agent(turns)
    assert len(placed(body)) <= h.MAX_BREAKPOINTS and anthropic_cache_error(body) is None


def test_openai_cache_key_per_caller_project_and_stable_prefix():
    chat = {"model": "gpt-4.1", "messages": [{"role": "system", "content": "Be useful."},
                                             {"role": "user", "content": "question 1"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}
    key = h.openai_cache_key("openai.chat", chat, "caller-a", "proj")
    later = copy.deepcopy(chat)
    later["messages"] += [{"role": "assistant", "content": "answer"}, {"role": "user", "content": "question 2"}]
    assert key.startswith("tokenaddons-") and h.openai_cache_key("openai.chat", later, "caller-a", "proj") == key
    assert h.openai_cache_key("openai.chat", chat, "caller-b", "proj") != key
    assert h.openai_cache_key("openai.chat", chat, "caller-a", "other") != key
    other_system = copy.deepcopy(chat)
    other_system["messages"][0]["content"] = "Be terse."
    assert h.openai_cache_key("openai.chat", other_system, "caller-a", "proj") != key
    assert h.openai_cache_key("openai.chat", {**chat, "prompt_cache_key": "mine"}, "caller-a", "proj") is None
    responses = {"model": "gpt-5", "instructions": "Be useful.", "input": [{"role": "user", "content": "hi"}]}
    assert h.openai_cache_key("openai.responses", responses, "c", None) != h.openai_cache_key(
        "openai.responses", {**responses, "instructions": "Other."}, "c", None)
