"""Codex CLI itself, through a real mitmdump with the bundle, against the simulator:
its real OpenAI Responses requests (streamed, a dozen tools) pass intact, a real
tool loop runs, and every turn is metered with the prefix cache it was billed."""
from __future__ import annotations

import os
import subprocess

from tests.conftest import TOOLS, needs_client

CODEX = TOOLS / "codex"

pytestmark = needs_client(CODEX, "Codex CLI")


def test_codex_tool_loop_through_the_proxy(make_proxy, sim, tmp_path):
    proxy = make_proxy(sim.url)
    home = tmp_path / "codex-home"
    home.mkdir()
    # Codex ignores OPENAI_BASE_URL: a model provider in its config points it at the proxy
    (home / "config.toml").write_text(f"""
model = "gpt-5"
model_provider = "proxy"

[model_providers.proxy]
name = "tokenaddons"
base_url = "{proxy.url}/v1"
wire_api = "responses"
supports_websockets = false
env_key = "OPENAI_API_KEY"
http_headers = {{ "X-Tokenaddons-Project" = "codex" }}
""")
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home), "OPENAI_API_KEY": "sk-test"}
    prompt = 'Check the machine. [[tool:exec_command {"cmd": "echo tokenaddons-$((6*7))"}]]'
    out = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", prompt], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
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
