"""Claude Code itself, through a real mitmdump with the bundle, against the simulator:
its real requests (~30k tokens: a dozen tools, cache_control breakpoints,
metadata.user_id) pass intact, and a real tool loop is metered."""
from __future__ import annotations

from tests.conftest import needs_client
from tokenaddons.test.clients import CLAUDE, claude_code

pytestmark = needs_client(CLAUDE, "Claude Code")


def test_claude_code_tool_loop_through_the_proxy(make_proxy, sim, tmp_path):
    proxy = make_proxy(sim.url)
    out = claude_code(tmp_path / "home", tmp_path, proxy.url,
                      env={"ANTHROPIC_CUSTOM_HEADERS": "X-Tokenaddons-Project: agent"})
    assert out.returncode == 0, out.stderr + out.stdout
    assert "tokenaddons-42" in out.stdout  # the real tool ran and its result came back through the proxy
    messages = [r for r in sim.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]
    tool_turn = next(r for r in messages if "tokenaddons-42" in r.raw.decode())
    assert any(block.get("type") == "tool_result" for block in tool_turn.body["messages"][-1]["content"])
    rows = proxy.rows(len(sim.requests))  # one row per exchange that went upstream
    agent = [r for r in rows if r["api"] == "anthropic.messages"]
    assert len(agent) >= 2 and all(r["status"] == 200 and r["complete"] == 1 for r in agent)
    assert all(r["project"] == "agent" for r in agent)
    assert all(r["input_tokens"] > 0 and r["cost_usd"] > 0 for r in agent)
    main = [r for r in agent if r["model"] == "claude-sonnet-4-5"]
    assert len(main) >= 2  # the tool call, then its result
    assert all(r["input_tokens"] > 10_000 for r in main)
    assert any(r["cache_read_tokens"] > 0 for r in main)  # Claude Code's own cache_control, honoured upstream
    # fields the proxy does not own reach upstream untouched
    first = next(r.body for r in messages if r.body["model"] == "claude-sonnet-4-5")
    assert {"tools", "system", "metadata"} <= set(first) and len(first["tools"]) >= 10
