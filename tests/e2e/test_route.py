"""Route end to end: one `tokenaddons run` port (a real mitmdump) in front of three
local providers (simulator instances named in the settings file), the official
SDKs as clients; fallback across providers with translation, held keys."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import anthropic
import httpx
import openai
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tokenaddons.engines import pricing
from tokenaddons.engines.usage import Usage
from tokenaddons.sim import Simulator
from tokenaddons.ui.cli import main, run_mode

pytestmark = pytest.mark.integration

TOOLS = [{"name": "get_weather", "description": "The weather in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                                "parameters": TOOLS[0]["input_schema"]}}]
ASK_TOOL = 'What is the weather? [[tool:get_weather {"city": "Paris"}]]'


@pytest.fixture
def providers():
    with Simulator() as a, Simulator() as o, Simulator() as g:
        yield a, o, g


def one_port(make_proxy, tmp_path, settings: str, **sets):
    """`tokenaddons run` without --upstream: its mode and options, as the CLI builds them."""
    mode, extra = run_mode(None, False)
    path = tmp_path / "settings.toml"
    path.write_text(settings)
    options = dict(e.split("=", 1) for e in extra)
    options.update({"settings_path": path, **sets})
    return make_proxy("", options, mode=mode)


def providers_toml(a, o, g, openai_key: str | None = None, anthropic_key: str | None = None) -> str:
    out = f"[providers.anthropic]\nbase_url = \"{a.url}\"\n"
    if anthropic_key:
        out += f"key = \"{anthropic_key}\"\n"
    out += f"[providers.openai]\nbase_url = \"{o.url}\"\n"
    if openai_key:
        out += f"key = \"{openai_key}\"\n"
    return out + f"[providers.gemini]\nbase_url = \"{g.url}\"\n"


def sent(q) -> dict[str, str]:
    """A request a provider received: its headers by lowercase name."""
    return {k.lower(): v for k, v in q.headers.items()}


def decisions(proxy, n: int) -> list[tuple[str, str, dict]]:
    return [(d["action"], d["model"], json.loads(d["detail"]))
            for d in proxy.rows(n, table="decisions", where="addon = 'route'")]


def test_one_port_serves_every_api_each_from_its_own_provider(make_proxy, tmp_path, providers):
    a, o, g = providers
    proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g))
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-client", max_retries=0)
    gpt = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-openai-client", max_retries=0)
    m = claude.messages.create(model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "a"}])
    c = gpt.chat.completions.create(model="gpt-4.1-mini", messages=[{"role": "user", "content": "b"}])
    r = gpt.responses.create(model="gpt-4.1-mini", input="c")
    body = {"contents": [{"role": "user", "parts": [{"text": "d"}]}]}
    gem = httpx.post(proxy.url + "/v1beta/models/gemini-2.5-flash:generateContent", json=body,
                     headers={"x-goog-api-key": "g-client"}).json()
    assert m.content[0].text and c.choices[0].message.content and r.output_text and gem["candidates"]
    assert [(q.path, sent(q).get("x-api-key")) for q in a.requests] == [("/v1/messages", "sk-ant-client")]
    assert [(q.path, sent(q).get("authorization")) for q in o.requests] == [
        ("/v1/chat/completions", "Bearer sk-openai-client"), ("/v1/responses", "Bearer sk-openai-client")]
    assert [(q.path, sent(q).get("x-goog-api-key")) for q in g.requests] == [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "g-client")]
    rows = proxy.rows(4)
    assert [(x["provider"], x["api"], x["status"], x["complete"]) for x in rows] == [
        ("anthropic", "anthropic.messages", 200, 1), ("openai", "openai.chat", 200, 1),
        ("openai", "openai.responses", 200, 1), ("gemini", "gemini.generate", 200, 1)]
    assert all(x["cost_usd"] > 0 for x in rows)


def test_reverse_mode_keeps_its_target_for_a_provider_the_file_does_not_name(make_proxy, tmp_path, providers):
    a, o, g = providers
    path = tmp_path / "settings.toml"
    path.write_text(f"[providers.openai]\nbase_url = \"{o.url}\"\n")
    proxy = make_proxy(a.url, {"settings_path": path})  # mitmdump -s scripts/tokenaddons.py --mode reverse:A
    anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "y"}])
    assert [q.path for q in a.requests] == ["/v1/messages"] and [q.path for q in o.requests] == ["/v1/chat/completions"]


def test_anthropic_down_the_anthropic_sdk_is_served_by_openai_unawares(make_proxy, tmp_path, providers, monkeypatch):
    a, o, g = providers
    a.fault = "529"
    monkeypatch.setenv("E2E_OPENAI_KEY", "sk-openai-held")
    proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g, openai_key="env:E2E_OPENAI_KEY") + (
        "[[routes]]\nmatch = \"claude-sonnet-*\"\nfallbacks = [\"anthropic/claude-sonnet-4\", \"openai/gpt-4.1\"]\n"))
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-client", max_retries=0)
    text = claude.messages.create(model="claude-sonnet-4-5", max_tokens=200,
                                  messages=[{"role": "user", "content": "Hello there"}])
    tool = claude.messages.create(model="claude-sonnet-4-5", max_tokens=200, tools=TOOLS,
                                  messages=[{"role": "user", "content": ASK_TOOL}])
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=200,
                                messages=[{"role": "user", "content": "Stream please"}]) as s:
        streamed = s.get_final_message()
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=200, tools=TOOLS,
                                messages=[{"role": "user", "content": ASK_TOOL}]) as s:
        streamed_tool = s.get_final_message()
    # normal Anthropic answers, as the anthropic SDK reads them
    assert text.type == "message" and text.content[0].text.startswith("Simulated reply to: Hello there")
    assert text.stop_reason == "end_turn" and text.model == "gpt-4.1"
    assert tool.stop_reason == "tool_use" and tool.content[0].name == "get_weather"
    assert tool.content[0].input == {"city": "Paris"}
    assert streamed.content[0].text.startswith("Simulated reply to: Stream please")
    assert streamed_tool.stop_reason == "tool_use" and streamed_tool.content[0].input == {"city": "Paris"}
    assert streamed.usage.input_tokens > 0 and streamed.usage.output_tokens > 0
    # produced by the OpenAI stand-in, with the proxy's key, after both Anthropic targets refused
    assert [q.body["model"] for q in a.requests] == ["claude-sonnet-4-5", "claude-sonnet-4"] * 4
    assert [q.path for q in o.requests] == ["/v1/chat/completions"] * 4
    assert all(sent(q)["authorization"] == "Bearer sk-openai-held" for q in o.requests)
    assert o.requests[3].body["tools"][0]["function"]["name"] == "get_weather"
    # the report: who served it and what it cost, at the serving model's price
    rows = proxy.rows(4)
    for row, answer in zip(rows, (text, tool, streamed, streamed_tool)):
        assert (row["requested_model"], row["provider"], row["model"], row["api"]) == (
            "claude-sonnet-4-5", "openai", "gpt-4.1", "openai.chat")
        assert (row["status"], row["complete"], row["estimated"]) == (200, 1, 0)
        assert row["output_tokens"] == answer.usage.output_tokens
        assert row["cost_usd"] == pytest.approx(pricing.price("openai", "gpt-4.1", Usage(
            input_tokens=row["input_tokens"], cache_read_tokens=row["cache_read_tokens"],
            output_tokens=row["output_tokens"])))
    made = decisions(proxy, 12)
    assert [(act, d["target"]) for act, _, d in made[:3]] == [
        ("failed", "anthropic/claude-sonnet-4-5"), ("failed", "anthropic/claude-sonnet-4"),
        ("fallback", "openai/gpt-4.1")]
    assert made[0][2]["status"] == 529 and made[2][2]["translated"] == "anthropic.messages -> openai.chat"
    report = CliRunner().invoke(main, ["report", "--store", str(proxy.store), "--json"])
    data = json.loads(report.output)
    [served] = [m for m in data["models"] if m["model"] == "gpt-4.1"]
    assert served["provider"] == "openai" and served["requests"] == 4
    assert served["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    assert {(r["action"], r["provider"], r["model"]): r["count"] for r in data["routing"]} == {
        ("fallback", "openai", "gpt-4.1"): 4, ("failed", "anthropic", "claude-sonnet-4-5"): 4,
        ("failed", "anthropic", "claude-sonnet-4"): 4}
    shown = CliRunner().invoke(main, ["report", "--store", str(proxy.store)])
    assert "openai/gpt-4.1" in shown.output and "fallback" in shown.output


def test_openai_down_the_openai_sdk_is_served_by_anthropic_unawares(make_proxy, tmp_path, providers, monkeypatch):
    a, o, g = providers
    o.fault = "529"  # the OpenAI stand-in's overload: a 503
    monkeypatch.setenv("E2E_ANTHROPIC_KEY", "sk-ant-held")
    proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g, anthropic_key="env:E2E_ANTHROPIC_KEY") + (
        "[[routes]]\nmatch = \"gpt-4.1*\"\nfallbacks = [\"anthropic/claude-haiku-4-5\"]\n"))
    gpt = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-openai-client", max_retries=0)
    text = gpt.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi there"}])
    tool = gpt.chat.completions.create(model="gpt-4.1", tools=CHAT_TOOLS,
                                       messages=[{"role": "user", "content": ASK_TOOL}])
    with gpt.chat.completions.stream(model="gpt-4.1", messages=[{"role": "user", "content": "Stream it"}],
                                     stream_options={"include_usage": True}) as s:
        streamed = s.get_final_completion()
    with gpt.chat.completions.stream(model="gpt-4.1", tools=CHAT_TOOLS,
                                     messages=[{"role": "user", "content": ASK_TOOL}]) as s:
        streamed_tool = s.get_final_completion()
    assert text.object == "chat.completion" and text.choices[0].message.content.startswith("Simulated reply to: Hi")
    assert text.choices[0].finish_reason == "stop" and text.model == "claude-haiku-4-5"
    call = tool.choices[0].message.tool_calls[0]
    assert tool.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert streamed.choices[0].message.content.startswith("Simulated reply to: Stream it")
    assert streamed.usage is not None and streamed.usage.completion_tokens > 0
    call = streamed_tool.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris"} and call.id.startswith("toolu_")
    assert [q.path for q in a.requests] == ["/v1/messages"] * 4
    assert all(sent(q)["x-api-key"] == "sk-ant-held" and "authorization" not in sent(q) for q in a.requests)
    assert a.requests[0].body["max_tokens"] == 4096  # Anthropic needs one; the Chat request had none
    rows = proxy.rows(4)
    for row in rows:
        assert (row["requested_model"], row["provider"], row["model"], row["status"], row["complete"]) == (
            "gpt-4.1", "anthropic", "claude-haiku-4-5", 200, 1)
        assert row["cost_usd"] == pytest.approx(pricing.price("anthropic", "claude-haiku-4-5", Usage(
            input_tokens=row["input_tokens"], cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"], cache_write_5m_tokens=row["cache_write_5m_tokens"],
            output_tokens=row["output_tokens"])))
    assert rows[2]["output_tokens"] == streamed.usage.completion_tokens


def test_held_keys_the_client_never_sees(make_proxy, tmp_path, providers, monkeypatch):
    a, o, g = providers
    ring = tmp_path / "keyring.json"
    monkeypatch.setenv("TOKENADDONS_TEST_KEYRING", str(ring))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tokenaddons.test.keyring.FileKeyring")  # the proxy's keyring
    import keyring

    from tokenaddons.test.keyring import FileKeyring

    before = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())  # the CLI's, in this process
    try:
        stored = CliRunner().invoke(main, ["keys", "set", "anthropic", "--stdin"], input="sk-ant-held-secret\n")
    finally:
        keyring.set_keyring(before)
    assert stored.exit_code == 0, stored.output
    assert "sk-ant-held-secret" not in stored.output
    proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g, anthropic_key="keyring"),
                     proxy_token="local-token")
    ok = anthropic.Anthropic(base_url=proxy.url, api_key="local-token", max_retries=0)
    m = ok.messages.create(model="claude-sonnet-4-5", max_tokens=30, messages=[{"role": "user", "content": "hi"}])
    with ok.messages.stream(model="claude-sonnet-4-5", max_tokens=30,
                            messages=[{"role": "user", "content": "again"}]) as s:
        assert s.get_final_message().content[0].text
    assert m.content[0].text
    assert [sent(q).get("x-api-key") for q in a.requests] == ["sk-ant-held-secret"] * 2  # never local-token
    assert all("local-token" not in json.dumps(sent(q)) for q in a.requests)
    wrong = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-guess", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        wrong.messages.create(model="claude-sonnet-4-5", max_tokens=30, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 401 and "proxy_token" in err.value.message
    assert len(a.requests) == 2  # the wrong token never reached the provider
    rows = proxy.rows(3)
    assert [r["status"] for r in rows] == [200, 200, 401]
    proxy.stop()
    # the key is nowhere in the proxy's log, event rows or cache
    assert b"sk-ant-held-secret" not in proxy.log.read_bytes()
    for f in proxy.store.parent.glob("events.db*"):
        assert b"sk-ant-held-secret" not in f.read_bytes(), f
    conn = sqlite3.connect(proxy.store)
    assert conn.execute("SELECT COUNT(*) FROM requests WHERE answered_by = 'route'").fetchone() == (1,)
    conn.close()


def test_no_keyring_backend_says_so_at_start(make_proxy, tmp_path, providers, monkeypatch):
    a, o, g = providers
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    try:
        proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g, anthropic_key="keyring"))
    except RuntimeError as e:  # exited before it listened
        said = str(e)
    else:  # mitmdump listens, then exits on the error logged at start
        assert proxy.proc.wait(30) != 0
        said = proxy.log.read_text()
    assert "no keyring backend" in said and 'key = "env:ANTHROPIC_API_KEY"' in said


NEWEST = ROOT / ".venv-newest" / "bin" / "python"


@pytest.mark.skipif(not NEWEST.exists(), reason="the newest SDKs not installed (scripts/setup.sh installs them)")
def test_the_newest_sdks_served_across_apis(make_proxy, tmp_path, providers, monkeypatch):
    a, o, g = providers
    a.fault = "529"
    monkeypatch.setenv("NEWEST_ANTHROPIC_KEY", "sk-ant-held")
    monkeypatch.setenv("NEWEST_OPENAI_KEY", "sk-openai-held")
    with Simulator() as b:
        proxy = one_port(make_proxy, tmp_path, providers_toml(
            a, o, g, openai_key="env:NEWEST_OPENAI_KEY", anthropic_key="env:NEWEST_ANTHROPIC_KEY") + (
            f"[providers.backup]\napi = \"anthropic\"\nbase_url = \"{b.url}\"\nkey = \"env:NEWEST_ANTHROPIC_KEY\"\n"
            "[aliases]\nhaiku = \"backup/claude-haiku-4-5\"\n"
            "[[routes]]\nmatch = \"claude-sonnet-*\"\nfallbacks = [\"openai/gpt-4.1\"]\n"), proxy_token="newest-token")
        run = subprocess.run([str(NEWEST), "-W", "ignore", str(ROOT / "tests" / "e2e" / "clients" / "newest_route.py"),
                              proxy.url, "newest-token"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        got = json.loads(run.stdout)
        assert got["anthropic_json"]["model"] == "gpt-4.1" and got["anthropic_json"]["stop"] == "end_turn"
        assert got["anthropic_stream_tool"] == {"stop": "tool_use", "name": "get_weather", "input": {"city": "Oslo"}}
        assert got["chat_json"]["model"] == "claude-haiku-4-5" and got["chat_json"]["finish"] == "stop"
        assert got["chat_stream_tool"] == {"finish": "tool_calls", "name": "get_weather",
                                           "arguments": {"city": "Oslo"}}
        assert got["wrong_token"] == 401
        # the newest anthropic SDK sends its key as a bearer token: the provider sees the proxy's key instead
        assert all(sent(q).get("x-api-key") == "sk-ant-held" and "authorization" not in sent(q)
                   for q in a.requests + b.requests)
        assert len(b.requests) == 2 and all(q.body["model"] == "claude-haiku-4-5" for q in b.requests)
        rows = proxy.rows(5)
        assert [(r["provider"], r["model"]) for r in rows[:4]] == [
            ("openai", "gpt-4.1"), ("openai", "gpt-4.1"), ("backup", "claude-haiku-4-5"),
            ("backup", "claude-haiku-4-5")]
        for r in rows[2:4]:  # a provider named in the file, priced as the API it speaks
            assert r["cost_usd"] == pytest.approx(pricing.price("anthropic", "claude-haiku-4-5", Usage(
                input_tokens=r["input_tokens"], cache_read_tokens=r["cache_read_tokens"],
                cache_write_tokens=r["cache_write_tokens"], cache_write_5m_tokens=r["cache_write_5m_tokens"],
                output_tokens=r["output_tokens"]))) and r["cost_usd"] > 0


CLAUDE = ROOT / ".tools" / "node_modules" / ".bin" / "claude"


@pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code not installed (scripts/setup.sh installs it)")
def test_claude_codes_tool_loop_goes_on_when_anthropic_is_down(make_proxy, tmp_path, providers, monkeypatch):
    """Claude Code's real requests (extended thinking on, context editing, a
    dozen tools, a JSON-schema title request) served by the OpenAI stand-in."""
    a, o, g = providers
    a.fault = "529"
    monkeypatch.setenv("E2E_OPENAI_KEY", "sk-openai-held")
    proxy = one_port(make_proxy, tmp_path, providers_toml(a, o, g, openai_key="env:E2E_OPENAI_KEY") + (
        "[[routes]]\nmatch = \"claude-*\"\nfallbacks = [\"openai/gpt-4.1\"]\n"))
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ANTHROPIC_BASE_URL": proxy.url,
           "ANTHROPIC_API_KEY": "sk-ant-test", "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_TELEMETRY": "1",
           "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "ANTHROPIC_SMALL_FAST_MODEL": "claude-haiku-4-5"}
    prompt = 'Check the machine. [[tool:Bash {"command": "echo tokenaddons-$((6*7))"}]]'
    out = subprocess.run([str(CLAUDE), "-p", prompt, "--allowedTools", "Bash", "--model", "claude-sonnet-4-5"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "tokenaddons-42" in out.stdout  # the tool ran, its result went back, the loop ended
    chats = [q for q in o.requests if q.path == "/v1/chat/completions"]
    assert any(m.get("role") == "tool" and "tokenaddons-42" in m.get("content", "")
               for q in chats for m in q.body["messages"])
    main = [q.body for q in chats if q.body["model"] == "gpt-4.1" and len(q.body.get("tools", [])) >= 10]
    assert len(main) >= 2 and all("thinking" not in b and "context_management" not in b for b in main)
    rows = [r for r in proxy.rows(len(chats)) if r["api"] == "openai.chat"]
    assert rows and all((r["provider"], r["model"], r["status"]) == ("openai", "gpt-4.1", 200) for r in rows)
    dropped = [d for act, _, d in decisions(proxy, 2 * len(rows)) if act == "fallback" and d.get("dropped")]
    assert dropped and all(set(d["dropped"]) <= {"thinking", "context_management", "output_config.effort"}
                           for d in dropped)
