"""Codex CLI itself, through a real mitmdump with the bundle, against the simulator:
its real OpenAI Responses requests (streamed, a dozen tools) pass intact, a real
tool loop runs, and every turn is metered with the prefix cache it was billed."""
from __future__ import annotations

from tests.conftest import needs_client
from tokenaddons.test.clients import CODEX, codex

pytestmark = needs_client(CODEX, "Codex CLI")


def test_codex_tool_loop_through_the_proxy(make_proxy, sim, tmp_path):
    proxy = make_proxy(sim.url)
    out = codex(tmp_path / "codex-home", tmp_path, f"{proxy.url}/v1")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "tokenaddons-42" in out.stdout  # the real tool ran and its output came back through the proxy
    turns = [r for r in sim.requests if r.path == "/v1/responses"]
    assert len(turns) == 2
    last = turns[1].body["input"][-1]
    assert last["type"] == "function_call_output" and "tokenaddons-42" in str(last["output"])
    assert len(turns[0].body["tools"]) >= 5 and turns[0].body["stream"] is True
    assert "x-tokenaddons-project" not in {k.lower() for k in turns[0].headers}  # stripped before upstream
    rows = proxy.rows(2)
    assert [(r["api"], r["stream"], r["status"], r["complete"], r["project"]) for r in rows] == [
        ("openai.responses", 1, 200, 1, "codex")] * 2
    assert all(r["input_tokens"] > 5000 and r["output_tokens"] > 0 and r["cost_usd"] > 0 for r in rows)
    assert rows[0]["cache_read_tokens"] == 0 and rows[1]["cache_read_tokens"] > 0  # the shared prefix, read
