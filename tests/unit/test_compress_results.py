"""Compress sends the same bytes and records the same decisions as the version
whose results tests/samples/compress_results.json holds: a varied set of
conversations (Anthropic with and without the client's breakpoints, a 1-hour
prefix, automatic caching, nested and server tool results, file reads,
repeated and nearly repeated outputs, the lossy cap, hints or compression
off; OpenAI chat and responses with and without a cache key; Gemini; the
recorded traffic of tests/replay) sent turn after turn through one proxy, so
later turns resend outputs already compressed.

The file records the sent body's SHA-256 and every decision of each request.
A change that means to alter what is sent or decided rewrites it:
`python -m tests.unit.test_compress_results --write`.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from mitmproxy import http
from mitmproxy.test import taddons

from tests.replay.traffic import files, interactions
from tokenaddons.addons.compress import Compress
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.exchange import Exchange
from tokenaddons.providers import detect
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow
from tokenaddons.vcr import body_bytes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "samples" / "compress_results.json"
HEADERS = {"content-type": "application/json", "x-api-key": "k1"}
SYSTEM = "You are a coding agent. Read files before editing them and run the tests after each change. " * 60
MESSAGES = "/v1/messages"


def sample(name: str) -> str:
    return (ROOT / "samples" / name).read_bytes().decode()


PYTEST = sample("pytest_color.txt")
BOM = sample("pip_bom.cdx.json")
OUTPUTS = [PYTEST, BOM, sample("git_log_stat.txt"), sample("curl_progress.txt"), PYTEST.replace("15.93s", "14.02s"),
           PYTEST, sample("pip_download_tty.txt"), sample("pip_list.txt"), BOM]
# (tool, input) of each call: commands, file reads (read tools, cat, an editor's view), a call without input
CALLS = [("bash", {"command": "pytest -q"}), ("read_file", {"path": "bom.json"}), ("bash", {"command": "git log"}),
         ("bash", {"cmd": ["bash", "-lc", "curl -O x"]}), ("bash", {"command": "pytest -q"}),
         ("str_replace_based_edit_tool", {"command": "view", "path": "out.txt"}), ("Bash", None),
         ("bash", {"command": "cd repo && cat requirements.txt"}), ("bash", {"command": "cat bom.json"})]


def anthropic(n: int, **extra) -> dict:
    """An agent conversation after n tool calls, as the client resends it."""
    messages: list[dict] = [{"role": "user", "content": "Find out why the tests are flaky."}]
    for i, output in enumerate(OUTPUTS[:n]):
        name, args = CALLS[i]
        messages += [{"role": "assistant", "content": [{"type": "text", "text": f"Step {i}."},
                                                       {"type": "tool_use", "id": f"toolu_{i}", "name": name,
                                                        "input": args}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}",
                                                   "content": output}]}]
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": SYSTEM,
            "tools": [{"name": "bash", "description": "Run a command.", "input_schema": {"type": "object"}}],
            "messages": messages, **extra}


def client_marked(n: int) -> dict:
    body = anthropic(n)
    body["system"] = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    if n:
        body["messages"][min(4, 2 * n)]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return body


def marked_inside_a_result(n: int) -> dict:
    """The client's breakpoint on a block inside a tool result: nothing else is marked."""
    body = anthropic(n)
    if n:
        last = body["messages"][-1]["content"][0]
        last["content"] = [{"type": "text", "text": last["content"], "cache_control": {"type": "ephemeral"}}]
    return body


def nested(n: int) -> dict:
    """Tool results as lists of blocks, several parts to one call, server tools' results."""
    body = anthropic(n)
    body["messages"] += [
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "code_execution", "input": {"code": "print(1)"}},
            {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_1", "content": {
                "type": "code_execution_result", "stdout": PYTEST, "stderr": "", "return_code": 0, "content": []}},
            {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_2", "content": [
                {"type": "document", "title": "t", "source": {"type": "text", "data": BOM}}]},
            {"type": "thinking", "thinking": "hm", "signature": "sig"},
            {"type": "tool_use", "id": "toolu_n", "name": "bash", "input": {"command": "make", "n": 12345678}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_n", "content": [
                {"type": "text", "text": OUTPUTS[3], "citations": [{"type": "char_location", "cited_text": "z" * 70}]},
                {"type": "text", "text": OUTPUTS[2]},
                {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": BOM}]},
                {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "plain"}, "not a block", 7]},
        "not a message"]
    return body


def chat(n: int, **extra) -> dict:
    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Why flaky?"}]
    for i, output in enumerate(OUTPUTS[:n]):
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": CALLS[i][0],
                                                                 "arguments": json.dumps(CALLS[i][1])}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": output}]
    return {"model": "gpt-4.1", "messages": messages,
            "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}], **extra}


def responses(n: int) -> dict:
    items: list[dict] = [{"role": "user", "content": [{"type": "input_text", "text": "Why flaky?"}]}]
    for i, output in enumerate(OUTPUTS[:n]):
        items += [{"type": "function_call", "call_id": f"call_{i}", "name": "exec_command",
                   "arguments": json.dumps(CALLS[i][1])},
                  {"type": "function_call_output", "call_id": f"call_{i}", "output": output}]
    return {"model": "gpt-5", "instructions": SYSTEM, "input": items, "stream": True}


def gemini(n: int) -> dict:
    contents: list[dict] = [{"role": "user", "parts": [{"text": "Why flaky?"}]}]
    for i, output in enumerate(OUTPUTS[:n]):
        contents += [{"role": "model", "parts": [{"functionCall": {"id": f"fc_{i}", "name": CALLS[i][0],
                                                                   "args": CALLS[i][1] or {}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"id": f"fc_{i}", "name": CALLS[i][0],
                                                                      "response": {"output": output}}}]}]
    return {"contents": contents}


ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 50, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 9000,
                    "output_tokens": 10}}


def turns(build, path: str = MESSAGES) -> list[tuple[str, dict]]:
    """Every turn of a conversation, then its last turn again."""
    sent = [(path, build(n)) for n in range(len(OUTPUTS) + 1)]
    return sent + sent[-1:]


def recorded() -> list[tuple[str, dict]]:
    out = []
    for p in files():
        for it in interactions(p):
            req = it["request"]
            path = "/" + req["uri"].split("://", 1)[-1].partition("/")[2]
            api = detect(req["method"], path)
            if api is None or api.name == "anthropic.count_tokens" or not body_bytes(req):
                continue
            body = json.loads(body_bytes(req))
            noisy = copy.deepcopy(body)
            for n, ref in enumerate(r for r in api.text_refs(noisy) if r.role == "tool"):
                ref.text = OUTPUTS[n % len(OUTPUTS)]
            out += [(path, body), (path, noisy), (path, noisy)]
    return out


def scenarios() -> dict[str, tuple[dict, list[tuple[str, dict]]]]:
    """name -> (Compress options, the requests sent in turn through one proxy)."""
    return {
        "anthropic": ({}, turns(anthropic)),
        "anthropic, 1-hour prefix": ({"cache_hints_ttl": "1h"}, turns(anthropic)),
        "anthropic, automatic caching": ({}, turns(lambda n: anthropic(n, cache_control={"type": "ephemeral"}))),
        "anthropic, the client's breakpoints": ({}, turns(client_marked)),
        "anthropic, a breakpoint inside a result": ({}, turns(marked_inside_a_result)),
        "anthropic, nested and server results": ({}, turns(nested)),
        "anthropic, short": ({}, [(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": [
            {"role": "user", "content": "hi"}]}), (MESSAGES, anthropic(1, system="short", tools=[]))]),
        "anthropic, unpriced model": ({}, turns(lambda n: anthropic(n, model="claude-unknown-9"))),
        "anthropic, lossy": ({"compress_lossy": True, "compress_max_tokens": 300}, turns(anthropic)),
        "anthropic, hints off": ({"cache_hints": False}, turns(anthropic)),
        "anthropic, compression off": ({"compress": False}, turns(anthropic)),
        "openai chat": ({}, turns(chat, "/v1/chat/completions")),
        "openai chat, the client's key": ({}, turns(lambda n: chat(n, prompt_cache_key="mine"),
                                                    "/v1/chat/completions")),
        "openai responses": ({}, turns(responses, "/v1/responses")),
        "gemini": ({}, turns(gemini, "/v1beta/models/gemini-2.5-flash:generateContent")),
        "recorded traffic": ({}, recorded()),
    }


def decisions(flow: http.HTTPFlow) -> list:
    return [[d.addon, d.action, d.tokens_saved, repr(d.usd_saved), json.loads(json.dumps(d.detail, sort_keys=True))]
            for d in Exchange.of(flow).decisions if d.addon == "compress"]


async def results() -> dict[str, list]:
    """name -> [sha256 of the body sent, decisions] of each request of each scenario."""
    out: dict[str, list] = {}
    for name, (options, requests) in scenarios().items():
        with tempfile.TemporaryDirectory() as tmp:
            store = Store()
            compress = Compress(store)
            addons = [store, Intake(), compress, Meter(store), Settle(), Outlet()]
            with taddons.context(*addons) as tctx:
                tctx.configure(store, store_path=str(Path(tmp) / "events.db"))
                tctx.configure(compress, **options)
                rows = []
                for path, body in requests:
                    answer = http.Response.make(200, json.dumps(ANSWER).encode(),
                                                {"content-type": "application/json"}) if path == MESSAGES else None
                    flow = await arun_flow(addons, make_flow(path, copy.deepcopy(body), dict(HEADERS), answer))
                    rows.append([hashlib.sha256(flow.request.content).hexdigest(), decisions(flow)])
                out[name] = rows
            store.done()
    return out


async def test_bodies_and_decisions_are_those_recorded():
    expected = json.loads(RESULTS.read_text())
    got = await results()
    assert set(got) == set(expected)
    for name in expected:
        assert len(got[name]) == len(expected[name]), name
        for i, (row, want) in enumerate(zip(got[name], expected[name])):
            assert row == want, f"{name}, request {i}"


def dump(found: dict[str, list]) -> str:
    """One line per request."""
    return "{\n" + ",\n".join(f"{json.dumps(name)}: [\n" + ",\n".join(json.dumps(row, sort_keys=True) for row in rows)
                            + "\n]" for name, rows in sorted(found.items())) + "\n}\n"


if __name__ == "__main__" and "--write" in sys.argv:
    RESULTS.write_text(dump(asyncio.run(results())))
