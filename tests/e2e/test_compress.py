"""Compress through a real mitmdump with the SDKs against the simulator (real
prompt-cache rules): an agent loop that sets no hints is billed less than
direct, tool output arrives compressed, history keeps its bytes across a
restart of the proxy, and the report shows where the savings came from."""
from __future__ import annotations

import json
from pathlib import Path

import anthropic
import openai
import pytest
from click.testing import CliRunner

from tokenaddons.engines import pricing
from tokenaddons.engines.usage import Usage
from tokenaddons.sim import Simulator
from tokenaddons.ui.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
OUTPUTS = [(SAMPLES / name).read_bytes().decode() for name in
           ("pytest_color.txt", "pip_bom.cdx.json", "git_log_stat.txt", "pytest_color.txt")]
SYSTEM = "You are a coding agent. Read before you edit, run the tests after each change, report briefly. " * 60
TOOLS = [{"name": "bash", "description": "Run a command.", "input_schema": {"type": "object"}}]
PROMPT = "Why do the tests fail? " + " ".join(f'[[tool:bash {{"command": "step {i}"}}]]' for i in range(len(OUTPUTS)))

pytestmark = pytest.mark.integration


def agent(url: str, stop_after: int | None = None, messages: list | None = None) -> list:
    """The agent loop of an SDK user who sets no cache hints; tool i returns OUTPUTS[i]."""
    c = anthropic.Anthropic(base_url=url, api_key="sk-ant-e2e", max_retries=0)
    messages = messages or [{"role": "user", "content": PROMPT}]
    calls = 0
    while stop_after is None or calls < stop_after:
        m = c.messages.create(model="claude-sonnet-4-5", max_tokens=512, system=SYSTEM, tools=TOOLS,
                              messages=messages)
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]})
        if m.stop_reason != "tool_use":
            break
        step = int(m.content[0].input["command"].split()[1])
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": m.content[0].id,
                                                      "content": OUTPUTS[step]}]})
        calls += 1
    return messages


def billed(sim: Simulator) -> float:
    total = 0.0
    for r in sim.requests:
        u = r.usage
        written = u["write_5m"] + u["write_1h"]
        total += pricing.price("anthropic", r.model, Usage(
            input_tokens=u["input"] + u["read"] + written, cache_read_tokens=u["read"], cache_write_tokens=written,
            cache_write_5m_tokens=u["write_5m"], cache_write_1h_tokens=u["write_1h"], output_tokens=u["output"]))
    return total


def test_an_agent_without_hints_costs_less_through_the_proxy(make_proxy, sim):
    with Simulator() as direct:
        agent(direct.url)
    proxy = make_proxy(sim.url)
    agent(proxy.url)
    assert len(sim.requests) == len(direct.requests) == len(OUTPUTS) + 1  # the same turns
    assert billed(sim) < 0.5 * billed(direct)
    last = sim.requests[-1].body
    results = [b for m in last["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b.get("type") == "tool_result"]
    assert "\x1b" not in json.dumps(results) and "\\u001b" not in json.dumps(results)
    assert results[-1]["content"].startswith("[identical to the output of tool call")
    assert results[1]["content"].startswith('{"$schema":"http')  # minified
    assert all(r.usage["read"] > 0 for r in sim.requests[1:])  # every later turn read the one before
    rows = proxy.rows(len(OUTPUTS) + 1, table="decisions", where="addon = 'compress' AND action = 'hints'")
    assert all(json.loads(r["detail"])["cache_read_tokens"] == u.usage["read"] for r, u in zip(rows, sim.requests))
    proxy.stop()  # the store is complete
    report = json.loads(CliRunner().invoke(main, ["report", "--store", str(proxy.store), "--json"]).output)
    sources = report["savings_by_source"]
    assert sources["cache hints"]["usd_saved"] > 0 and sources["compression"]["tokens_saved"] > 0


def test_history_keeps_its_bytes_across_a_restart(make_proxy, sim, tmp_path):
    work = tmp_path / "proxy"
    first = make_proxy(sim.url, workdir=work)
    messages = agent(first.url, stop_after=2)
    first.stop()
    second = make_proxy(sim.url, workdir=work)  # the same store: the memo is read back
    agent(second.url, messages=messages)
    before, after = sim.requests[2], sim.requests[3]
    old = json.dumps([{k: v for k, v in b.items() if k != "cache_control"} for m in before.body["messages"]
                      for b in (m["content"] if isinstance(m["content"], list) else [m["content"]])
                      if isinstance(b, dict)])
    new = json.dumps([{k: v for k, v in b.items() if k != "cache_control"} for m in after.body["messages"]
                      for b in (m["content"] if isinstance(m["content"], list) else [m["content"]])
                      if isinstance(b, dict)][:len(json.loads(old))])
    assert new == old
    # the turn after the restart read everything the turn before wrote
    assert after.usage["read"] == before.usage["read"] + before.usage["write_5m"]


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_gets_a_cache_key_and_compressed_tool_output(make_proxy, sim, stream):
    proxy = make_proxy(sim.url)
    c = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-e2e", max_retries=0)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "run it"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": OUTPUTS[0]}]
    kw = dict(model="gpt-4.1", messages=messages, tools=[{"type": "function", "function": {"name": "bash",
                                                                                         "parameters": {}}}])
    if stream:
        text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**kw, stream=True)
                       if ch.choices)
    else:
        text = c.chat.completions.create(**kw).choices[0].message.content
    assert "The tool returned" in text
    upstream = sim.requests[-1].body
    assert upstream["prompt_cache_key"].startswith("tokenaddons-")
    assert "\x1b" not in upstream["messages"][-1]["content"] and "51 passed" in upstream["messages"][-1]["content"]
    row = proxy.rows(1)[0]
    assert row["status"] == 200 and row["complete"] == 1
