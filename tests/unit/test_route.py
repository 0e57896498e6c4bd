"""Route: chains from the settings file, one port for every provider, translation,
held keys, and fallback through the relay against real local providers (the
simulator), with an injected clock for the circuit breakers."""
from __future__ import annotations

import asyncio
import json
import socket

import httpx
import keyring
import pytest
from keyring.backends import fail
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons

from tests.sdk import anthropic_final, chat_final
from tokenaddons.addons.budget import Budget
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.ratelimit import RateLimit
from tokenaddons.addons.route import SERVED_HEADER, Route
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.engines import keys, pricing
from tokenaddons.engines.breaker import Breakers
from tokenaddons.engines.loopback import Incoming
from tokenaddons.engines.relay import TOKEN_HEADER
from tokenaddons.engines.routing import chain_for, target_path, upstream_headers
from tokenaddons.engines.settings_file import Values, parse
from tokenaddons.engines.usage import Usage
from tokenaddons.exchange import Exchange
from tokenaddons.providers import CHAT
from tokenaddons.sim import Simulator, answers
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.keyring import MemoryKeyring
from tokenaddons.test.pipeline import arun_flow, rows

ANTHROPIC_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
CHAT_BODY = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hello"}]}
ANTHROPIC_HEADERS = {"content-type": "application/json", "x-api-key": "sk-ant-client",
                     "anthropic-version": "2023-06-01", "anthropic-beta": "x-2025"}
CHAT_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-openai-client"}


def toml(text: str) -> Values:
    import tomllib

    return parse(tomllib.loads(text))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ engines

def test_chains_from_aliases_routes_and_small_request_rules():
    v = toml("""
        [providers.local]
        api = "openai"
        base_url = "http://127.0.0.1:11434"
        [aliases]
        fast = "anthropic/claude-haiku-4-5"
        cheap = "local/llama3"
        [[routes]]
        match = "claude-sonnet-*"
        max_input_tokens = 50
        no_tools = true
        to = "anthropic/claude-haiku-4-5"
        [[routes]]
        match = "claude-sonnet-*"
        fallbacks = ["anthropic/claude-sonnet-4", "openai/gpt-4.1", "anthropic/claude-sonnet-4"]
        [[routes]]
        match = "claude-haiku-*"
        fallbacks = ["openai/gpt-4.1-mini"]
    """)
    counted = []

    def tokens(n):
        return lambda: counted.append(n) or n

    plain = chain_for(v, "anthropic", "claude-opus-4-1", has_tools=False, input_tokens=tokens(10))
    assert [t.label for t in plain.targets] == ["anthropic/claude-opus-4-1"] and plain.trivial and not counted
    small = chain_for(v, "anthropic", "claude-sonnet-4-5", has_tools=False, input_tokens=tokens(10))
    assert [t.label for t in small.targets] == ["anthropic/claude-haiku-4-5"] and small.small
    big = chain_for(v, "anthropic", "claude-sonnet-4-5", has_tools=False, input_tokens=tokens(500))
    assert [t.label for t in big.targets] == ["anthropic/claude-sonnet-4-5", "anthropic/claude-sonnet-4",
                                              "openai/gpt-4.1"]  # duplicates once
    tools = chain_for(v, "anthropic", "claude-sonnet-4-5", has_tools=True, input_tokens=tokens(10))
    assert not tools.small and len(tools.targets) == 3
    without = chain_for(v, "anthropic", "claude-sonnet-4-5", has_tools=False, input_tokens=tokens(10),
                        small_rules=False)
    assert without.targets[0].label == "anthropic/claude-sonnet-4-5"
    # an alias, then the route of the alias's model
    fast = chain_for(v, "anthropic", "fast", has_tools=False, input_tokens=tokens(10))
    assert fast.alias == "fast" and [t.label for t in fast.targets] == ["anthropic/claude-haiku-4-5",
                                                                         "openai/gpt-4.1-mini"]
    cheap = chain_for(v, "openai", "cheap", has_tools=False, input_tokens=tokens(10))
    assert cheap.targets[0].provider.base_url == "http://127.0.0.1:11434" and cheap.targets[0].model == "llama3"


def test_paths_and_headers_per_target():
    assert target_path("/v1/messages?beta=true", "anthropic.messages", "anthropic.messages",
                       "https://api.anthropic.com") == "/v1/messages?beta=true"
    assert target_path("/openai/v1/chat/completions", "openai.chat", "openai.chat",
                       "https://api.groq.com/openai") == "/openai/v1/chat/completions"
    assert target_path("/v1/chat/completions", "openai.chat", "openai.chat",
                       "https://api.openai.com/v1") == "/v1/chat/completions"
    assert target_path("/v1/messages", "anthropic.messages", "openai.chat", "http://h:1/x") == "/x/v1/chat/completions"
    assert target_path("/v1beta/models/fast:streamGenerateContent?alt=sse&key=k", "gemini.generate",
                       "gemini.generate", "https://g", "gemini-2.5-flash", drop_query=("key",)) == \
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    client = [("Host", "x"), ("x-api-key", "sk-client"), ("anthropic-version", "2023-06-01"),
              ("anthropic-beta", "b"), ("user-agent", "sdk"), ("content-length", "10"), ("content-encoding", "gzip")]
    same = upstream_headers(client, "anthropic", "sk-held", translated=False)
    assert ("x-api-key", "sk-held") in same and ("anthropic-beta", "b") in same and ("content-length", "10") not in same
    assert not any(v == "sk-client" for _, v in same)
    across = upstream_headers(client, "openai", "sk-held", translated=True)
    assert ("authorization", "Bearer sk-held") in across and ("content-type", "application/json") in across
    assert not any(k.startswith("anthropic-") or k == "content-encoding" for k, _ in across)
    back = upstream_headers([("authorization", "Bearer c"), ("openai-beta", "x")], "anthropic", "", translated=True)
    assert back == [("content-type", "application/json"), ("anthropic-version", "2023-06-01")]


def test_a_breaker_opens_after_n_failures_lets_one_probe_through_and_closes():
    clock = Clock(100.0)
    b = Breakers(failures=5, open_s=30, clock=clock)
    for _ in range(4):
        assert b.allow("a/m") and not b.failure("a/m")
    b.success("a/m")  # consecutive failures only
    for i in range(5):
        assert b.allow("a/m")
        assert b.failure("a/m") is (i == 4)
    assert b.state("a/m") == "open" and not b.allow("a/m") and b.retry_in("a/m") == 30
    clock.now += 30
    assert b.state("a/m") == "half-open"
    assert b.allow("a/m") and not b.allow("a/m")  # one probe at a time
    assert b.failure("a/m") and b.state("a/m") == "open"  # a failed probe opens it again
    clock.now += 30
    assert b.allow("a/m")
    b.success("a/m")
    assert b.state("a/m") == "closed" and b.allow("a/m") and b.allow("a/m")
    clock.now += 100
    b.failure("a/m")
    assert b.state("a/m") == "closed"


@pytest.fixture
def memory_keyring():
    before = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(before)


def test_keys_come_from_the_keyring_or_the_environment(memory_keyring, monkeypatch):
    keys.store("anthropic", "sk-ant-held")
    assert keys.read("anthropic", "keyring") == "sk-ant-held"
    assert keys.delete("anthropic") and not keys.delete("anthropic")
    with pytest.raises(keys.KeyUnavailable, match="tokenaddons keys set anthropic"):
        keys.read("anthropic", "keyring")
    monkeypatch.setenv("MY_OPENAI", "sk-env")
    assert keys.read("openai", "env:MY_OPENAI") == "sk-env" and keys.read("local", "none") == ""
    with pytest.raises(keys.KeyUnavailable, match="MISSING_VAR"):
        keys.read("openai", "env:MISSING_VAR")


def test_no_keyring_backend_is_a_clear_error_naming_the_env_form():
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        for call in (lambda: keys.read("anthropic", "keyring"), lambda: keys.store("anthropic", "k")):
            with pytest.raises(keys.KeyUnavailable) as e:
                call()
            assert "no keyring backend" in str(e.value) and 'key = "env:ANTHROPIC_API_KEY"' in str(e.value)
    finally:
        keyring.set_keyring(before)


# ------------------------------------------------------------------ the addon in a pipeline

@pytest.fixture
def pipe(tmp_path):
    clock = Clock(1_000_000.0)
    store = Store()
    settings = Settings()
    route = Route(settings.published, store, clock=clock)
    ratelimit = RateLimit()
    budget = Budget(store, settings.published)
    addons = [settings, store, Intake(), route, ratelimit, budget, Meter(store), Settle(), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))

        def use(text: str, **options) -> None:
            path = tmp_path / "settings.toml"
            path.write_text(text)
            tctx.configure(settings, settings_path=str(path))
            tctx.configure(route, **options)

        yield addons, route, store, clock, use, tctx
    store.done()


def reverse(flow: http.HTTPFlow) -> http.HTTPFlow:
    flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.anthropic.com")
    flow.request.scheme, flow.request.host, flow.request.port = "https", "api.anthropic.com", 443
    return flow


def flow_for(path: str, body, headers: dict, response: http.Response | None = None) -> http.HTTPFlow:
    return reverse(make_flow(path, body, dict(headers), response))


PROVIDERS = """
[providers.anthropic]
base_url = "http://127.0.0.1:9001"
[providers.openai]
base_url = "http://127.0.0.1:9002/v1"
[providers.gemini]
base_url = "http://127.0.0.1:9003"
"""


async def test_one_port_sends_each_api_to_its_own_provider(pipe):
    addons, route, store, clock, use, tctx = pipe
    use(PROVIDERS, route_all_providers=True)
    cases = [("/v1/messages?beta=true", ANTHROPIC_BODY, ANTHROPIC_HEADERS, 9001, "/v1/messages?beta=true"),
             ("/v1/chat/completions", CHAT_BODY, CHAT_HEADERS, 9002, "/v1/chat/completions"),
             ("/v1/responses", {"model": "gpt-4.1", "input": "hi"}, CHAT_HEADERS, 9002, "/v1/responses"),
             ("/v1beta/models/gemini-2.5-flash:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]},
              {"content-type": "application/json", "x-goog-api-key": "g"}, 9003,
              "/v1beta/models/gemini-2.5-flash:generateContent")]
    for path, body, headers, port, sent in cases:
        f = await arun_flow(addons, flow_for(path, body, headers))
        assert (f.request.scheme, f.request.host, f.request.port, f.request.path) == ("http", "127.0.0.1", port, sent)
        assert f.request.headers["host"] == f"127.0.0.1:{port}"
        assert f.request.content == json.dumps(body).encode()  # untouched: nothing to change
        assert Exchange.of(f).decisions == []  # a plain redirect says nothing
    # endpoints we do not parse go where their SDK's headers point
    for headers, port in (({"authorization": "Bearer k"}, 9002), ({"anthropic-version": "2023-06-01"}, 9001),
                          ({"x-goog-api-key": "g"}, 9003)):
        f = reverse(make_flow("/v1/models", b"", headers))
        f.request.method = "GET"
        await arun_flow(addons, f)
        assert (f.request.port, f.request.path) == (port, "/v1/models" if port != 9003 else "/v1/models")


async def test_without_every_provider_only_providers_the_file_names_move(pipe):
    addons, route, store, clock, use, tctx = pipe
    use("[providers.openai]\nbase_url = 'http://127.0.0.1:9002'\n")
    a = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS))
    assert (a.request.host, a.request.port) == ("api.anthropic.com", 443)  # the mode's own target, as before
    o = await arun_flow(addons, flow_for("/v1/chat/completions", CHAT_BODY, CHAT_HEADERS))
    assert (o.request.host, o.request.port) == ("127.0.0.1", 9002)
    # as an explicit proxy: only requests addressed to a provider's host
    other = make_flow("/v1/chat/completions", CHAT_BODY, dict(CHAT_HEADERS))
    other.request.host = "api.groq.com"
    await arun_flow(addons, other)
    assert other.request.host == "api.groq.com"
    mine = make_flow("/v1/chat/completions", CHAT_BODY, dict(CHAT_HEADERS))
    mine.request.scheme, mine.request.host, mine.request.port = "https", "api.openai.com", 443
    await arun_flow(addons, mine)
    assert (mine.request.host, mine.request.port) == ("127.0.0.1", 9002)


LOCAL = """
[providers.local]
api = "openai"
base_url = "http://127.0.0.1:11434"
key = "none"
[aliases]
local = "local/llama3"
"""


async def test_a_request_translated_to_another_api_and_its_json_answer_back(pipe):
    addons, route, store, clock, use, tctx = pipe
    use(LOCAL)
    turn = answers.Turn(text="Bonjour.", usage={"input": 30, "read": 10, "write_5m": 0, "write_1h": 0, "output": 4})
    reply = http.Response.make(200, json.dumps(answers.chat_json("llama3", turn)).encode(),
                                {"content-type": "application/json"})
    body = {**ANTHROPIC_BODY, "model": "local", "system": "Be brief."}
    f = await arun_flow(addons, flow_for("/v1/messages", body, ANTHROPIC_HEADERS, reply))
    sent = json.loads(f.request.content)
    assert (f.request.host, f.request.port, f.request.path) == ("127.0.0.1", 11434, "/v1/chat/completions")
    assert sent["model"] == "llama3" and sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert "x-api-key" not in f.request.headers and "anthropic-version" not in f.request.headers
    message = json.loads(f.response.content)  # the client reads Anthropic's shape
    assert message["type"] == "message" and message["content"] == [{"type": "text", "text": "Bonjour."}]
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 4, "cache_read_input_tokens": 10,
                                "cache_creation_input_tokens": 0}
    ex = Exchange.of(f)
    assert (ex.provider, ex.upstream_api, ex.requested_model, ex.served_model) == ("local", CHAT, "local", "llama3")
    assert [(d.action, d.detail.get("translated")) for d in ex.decisions] == [
        ("alias", None), ("served", "anthropic.messages -> openai.chat")]
    [row] = rows(store)
    assert (row["provider"], row["api"], row["requested_model"], row["model"]) == ("local", "openai.chat", "local",
                                                                                  "llama3")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (30, 10, 4)


async def test_a_translated_stream_reaches_the_client_in_its_own_events(pipe):
    addons, route, store, clock, use, tctx = pipe
    use(LOCAL)
    turn = answers.Turn(tool=("get_weather", {"city": "Paris"}),
                        usage={"input": 30, "read": 0, "write_5m": 0, "write_1h": 0, "output": 9})
    events = answers.chat_events("llama3", turn, 5, include_usage=True)
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
    body = {**ANTHROPIC_BODY, "model": "local", "stream": True, "tools": tools}
    f = await arun_flow(addons, flow_for("/v1/messages", body, ANTHROPIC_HEADERS, sse_response(events)),
                        stream_chunks=7)
    assert json.loads(f.request.content)["stream_options"] == {"include_usage": True}
    message = anthropic_final(f.metadata["client_saw"])  # the anthropic SDK's own stream helper
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "Paris"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 9)
    [row] = rows(store)
    assert (row["output_tokens"], row["complete"], row["estimated"]) == (9, 1, 0)  # metered from upstream's chunks


async def test_a_chat_client_served_by_anthropic_gets_chat_chunks(pipe):
    addons, route, store, clock, use, tctx = pipe
    use("[providers.corp]\napi = 'anthropic'\nbase_url = 'http://127.0.0.1:9009'\nkey = 'none'\n"
        "[aliases]\nclaude = 'corp/claude-haiku-4-5'\n")
    turn = answers.Turn(text="Short answer.", usage={"input": 12, "read": 4, "write_5m": 2, "write_1h": 0,
                                                      "output": 3})
    for asked_usage in (False, True):
        body = {**CHAT_BODY, "model": "claude", "stream": True}
        if asked_usage:
            body["stream_options"] = {"include_usage": True}
        events = answers.anthropic_events("claude-haiku-4-5", turn, 4)
        f = await arun_flow(addons, flow_for("/v1/chat/completions", body, CHAT_HEADERS, sse_response(events)),
                            stream_chunks=5)
        assert f.request.path == "/v1/messages" and f.request.headers["anthropic-version"] == "2023-06-01"
        final = chat_final(f.metadata["client_saw"])
        assert final.choices[0].message.content == "Short answer."
        assert (final.usage is not None) is asked_usage
        if asked_usage:
            assert (final.usage.prompt_tokens, final.usage.prompt_tokens_details.cached_tokens) == (18, 4)


async def test_what_cannot_translate_skips_that_target_with_a_decision(pipe):
    addons, route, store, clock, use, tctx = pipe
    use(LOCAL + "[[routes]]\nmatch = 'claude-*'\nfallbacks = ['local/llama3']\n")
    body = {**ANTHROPIC_BODY, "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                                          {"type": "text", "text": "hello"}]},
        {"role": "user", "content": "and then?"}]}
    f = await arun_flow(addons, flow_for("/v1/messages", body, ANTHROPIC_HEADERS))
    ex = Exchange.of(f)
    assert f.request.host == "api.anthropic.com" and f.request.content == json.dumps(body).encode()
    assert [(d.action, d.detail["target"]) for d in ex.decisions] == [("skipped", "local/llama3")]
    assert "'thinking' block" in ex.decisions[0].detail["reason"]


async def test_a_client_credential_never_goes_to_another_provider(pipe):
    addons, route, store, clock, use, tctx = pipe
    use("[aliases]\ngpt = 'openai/gpt-4.1'\n")
    f = await arun_flow(addons, flow_for("/v1/messages", {**ANTHROPIC_BODY, "model": "gpt"}, ANTHROPIC_HEADERS))
    assert f.response.status_code == 401
    err = json.loads(f.response.content)["error"]
    assert err["type"] == "authentication_error" and "the proxy holds no key for openai" in err["message"]


HELD = """
[providers.anthropic]
base_url = "http://127.0.0.1:9001"
key = "keyring"
[providers.openai]
base_url = "http://127.0.0.1:9002"
key = "env:TEST_OPENAI_KEY"
[providers.gemini]
base_url = "http://127.0.0.1:9003"
key = "keyring"
"""


async def test_held_keys_need_the_proxy_token_and_stay_out_of_the_flow(pipe, memory_keyring, monkeypatch):
    addons, route, store, clock, use, tctx = pipe
    keys.store("anthropic", "sk-ant-held")
    keys.store("gemini", "g-held")
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-held")
    use(HELD, proxy_token="local-token", route_all_providers=True)
    wrong = [("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS, "authentication_error"),
             ("/v1/chat/completions", CHAT_BODY, CHAT_HEADERS, "invalid_api_key"),
             ("/v1beta/models/gemini-2.5-flash:generateContent?key=nope", {"contents": []},
              {"content-type": "application/json"}, "UNAUTHENTICATED")]
    for path, body, headers, kind in wrong:
        f = await arun_flow(addons, flow_for(path, body, headers))
        assert f.response.status_code == 401, path
        err = json.loads(f.response.content)["error"]
        assert kind in (err.get("type"), err.get("code"), err.get("status")) and "proxy_token" in err["message"]
    right = [("/v1/messages", ANTHROPIC_BODY, {**ANTHROPIC_HEADERS, "x-api-key": "local-token"}),
             ("/v1/chat/completions", CHAT_BODY, {**CHAT_HEADERS, "authorization": "Bearer local-token"}),
             ("/v1beta/models/gemini-2.5-flash:generateContent?key=local-token", {"contents": []},
              {"content-type": "application/json"})]
    for path, body, headers in right:
        f = await arun_flow(addons, flow_for(path, body, headers))
        assert f.response is None and (f.request.host, f.request.port) == ("127.0.0.1", route.relay.port)
        assert TOKEN_HEADER in f.request.headers  # the relay adds the key: the flow never holds it
        assert not any(held in str(f.request.headers) + f.request.path
                       for held in ("sk-ant-held", "sk-openai-held", "g-held"))
        route.relay.cancel(f.request.headers[TOKEN_HEADER])


async def test_an_unreadable_key_stops_the_start_with_a_clear_error(pipe, monkeypatch):
    addons, route, store, clock, use, tctx = pipe
    monkeypatch.delenv("TEST_OPENAI_KEY", raising=False)
    from mitmproxy import exceptions

    with pytest.raises(exceptions.OptionsError, match=r"\[providers.openai\] key: the environment variable "
                                                      r"TEST_OPENAI_KEY"):
        use("[providers.openai]\nkey = 'env:TEST_OPENAI_KEY'\n")


async def test_budgets_reserve_at_the_dearest_target_of_the_chain(pipe):
    addons, route, store, clock, use, tctx = pipe
    budget = addons[5]
    use("[providers.openai]\nkey = 'none'\n[[routes]]\nmatch = 'claude-haiku-*'\n"
        "fallbacks = ['anthropic/claude-opus-4-1', 'openai/gpt-4.1-mini']\n")
    tctx.configure(budget, budget_daily_usd="100")
    f = await arun_flow(addons, flow_for("/v1/messages", {**ANTHROPIC_BODY, "model": "claude-haiku-4-5"},
                                         ANTHROPIC_HEADERS))
    ex = Exchange.of(f)
    assert ex.chain == [("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-opus-4-1"),
                        ("openai", "gpt-4.1-mini")]
    opus = pricing.unit_prices("anthropic", "claude-opus-4-1")
    assert ex.state["budget"][1] == pytest.approx(ex.input_tokens() * opus.input + 100 * opus.output)
    route.relay.cancel(ex.state["route"]["token"])


# ------------------------------------------------------------------ the relay, against local providers

async def relay(route: Route, flow: http.HTTPFlow) -> httpx.Response:
    """What mitmproxy does with a flow pointed at the relay: send it there."""
    async with httpx.AsyncClient() as client:
        req = flow.request
        return await client.request(req.method, f"http://127.0.0.1:{route.relay.port}{req.path}",
                                    headers=list(req.headers.items(multi=True)), content=req.content)


FALLBACK = """
[providers.anthropic]
base_url = "{a}"
[providers.openai]
base_url = "{o}"
key = "env:TEST_OPENAI_KEY"
[[routes]]
match = "claude-sonnet-*"
fallbacks = ["openai/gpt-4.1"]
"""


@pytest.fixture
async def sims(monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-held")
    with Simulator(retry_after=7) as a, Simulator() as o:
        yield a, o


async def test_fallback_before_the_first_byte_pauses_the_refusing_provider(pipe, sims):
    addons, route, store, clock, use, tctx = pipe
    a, o = sims
    a.fault = "429"
    use(FALLBACK.format(a=a.url, o=o.url))
    await route.relay.start()
    f = await arun_flow(addons, flow_for("/v1/messages", {**ANTHROPIC_BODY, "stream": True}, ANTHROPIC_HEADERS))
    resp = await relay(route, f)
    assert resp.status_code == 200 and resp.headers[SERVED_HEADER] == "openai/gpt-4.1"
    assert b"chat.completion.chunk" in resp.content  # upstream's own events: the tap translates them for the client
    ex = Exchange.of(f)
    assert (ex.provider, ex.upstream_api, ex.model) == ("openai", CHAT, "gpt-4.1")
    assert [(d.action, d.detail["target"], d.detail.get("status")) for d in ex.decisions] == [
        ("failed", "anthropic/claude-sonnet-4-5", 429), ("fallback", "openai/gpt-4.1", 200)]
    assert ex.keeps_body  # each attempt is built from the parsed body: Heap does not let go of it once sent
    assert ex.decisions[0].detail["retry_after_s"] == 7
    sent = o.requests[-1]
    assert sent.body["model"] == "gpt-4.1" and sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == "Bearer sk-openai-held" and "x-api-key" not in sent.headers
    assert a.requests[-1].headers["x-api-key"] == "sk-ant-client"  # its own provider gets the client's
    ratelimit = addons[4]
    f.response = http.Response.make(200, b"", {"content-type": "text/event-stream"})
    ratelimit.responseheaders(f)
    # the 429's retry-after feeds the provider's pause, for the credential that met it
    assert ratelimit.paused[("anthropic", ex.auth_hash)] == pytest.approx(ratelimit.clock() + 7, abs=1)


async def test_the_breaker_sends_traffic_straight_to_the_fallback_then_a_probe_closes_it(pipe, sims):
    addons, route, store, clock, use, tctx = pipe
    a, o = sims
    a.fault = "529"
    use(FALLBACK.format(a=a.url, o=o.url))
    await route.relay.start()

    async def one() -> Exchange:
        f = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS))
        resp = await relay(route, f)
        assert resp.status_code == 200
        return Exchange.of(f)

    for _ in range(5):
        assert [d.action for d in (await one()).decisions] == ["failed", "fallback"]
    assert len(a.requests) == 5 and route.breakers.state("anthropic/claude-sonnet-4-5") == "open"
    ex = await one()
    assert [d.action for d in ex.decisions] == ["skipped", "fallback"]  # straight to the fallback
    assert ex.decisions[0].detail["reason"].startswith("circuit open") and len(a.requests) == 5
    clock.now += 30  # half-open: one probe goes to the primary, which is well again
    a.fault = None
    ex = await one()
    assert [(d.action, d.detail["target"]) for d in ex.decisions] == [("served", "anthropic/claude-sonnet-4-5")]
    assert route.breakers.state("anthropic/claude-sonnet-4-5") == "closed" and len(a.requests) == 6


async def test_nothing_reachable_or_every_breaker_open_is_an_error_in_the_clients_shape(pipe, monkeypatch):
    addons, route, store, clock, use, tctx = pipe
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk")
    down = f"http://127.0.0.1:{closed_port()}"
    use(FALLBACK.format(a=down, o=down), route_breaker_failures=1)
    await route.relay.start()
    f = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS))
    resp = await relay(route, f)
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "api_error"
    assert "no target could be reached" in resp.json()["error"]["message"]
    assert [d.detail["error"].split(":")[0] for d in Exchange.of(f).decisions] == ["unreachable"] * 2
    f = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS))
    resp = await relay(route, f)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "30"
    assert resp.json()["error"]["type"] == "overloaded_error"


async def test_the_last_failure_reaches_the_client_translated(pipe, sims):
    addons, route, store, clock, use, tctx = pipe
    a, o = sims
    a.fault, o.fault = "529", "500"
    use(FALLBACK.format(a=a.url, o=o.url))
    await route.relay.start()
    f = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS))
    resp = await relay(route, f)
    assert resp.status_code == 500 and resp.json()["error"]["type"] == "server_error"  # OpenAI's, as it came
    f.response = http.Response.make(resp.status_code, resp.content, dict(resp.headers))
    route.response(f)  # the route addon's response hook: into the client's shape
    err = json.loads(f.response.content)
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert err["error"]["message"].startswith("openai/gpt-4.1: ")


async def test_an_unparsed_endpoint_of_a_held_key_provider_goes_through_the_relay(pipe, sims):
    addons, route, store, clock, use, tctx = pipe
    a, o = sims
    use(FALLBACK.format(a=a.url, o=o.url), route_all_providers=True)
    await route.relay.start()
    f = reverse(make_flow("/v1/models", b"", {"authorization": "Bearer sk-openai-client"}))
    f.request.method = "GET"
    await arun_flow(addons, f)
    resp = await relay(route, f)
    assert resp.status_code == 404  # the simulator has no model list; what matters is who it reached, and how
    assert o.requests[-1].path == "/v1/models" and o.requests[-1].headers["authorization"] == "Bearer sk-openai-held"


async def test_a_small_request_rule_records_what_it_saved(pipe, sims):
    addons, route, store, clock, use, tctx = pipe
    a, o = sims
    use(f"[providers.anthropic]\nbase_url = '{a.url}'\n[[routes]]\nmatch = 'claude-sonnet-*'\n"
        "max_input_tokens = 100\nto = 'anthropic/claude-haiku-4-5'\n")
    answer = answers.anthropic_json("claude-haiku-4-5", answers.Turn(
        text="ok", usage={"input": 20, "read": 0, "write_5m": 0, "write_1h": 0, "output": 5}))
    reply = http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"})
    f = await arun_flow(addons, flow_for("/v1/messages", ANTHROPIC_BODY, ANTHROPIC_HEADERS, reply))
    assert json.loads(f.request.content)["model"] == "claude-haiku-4-5"
    store.events.flush()
    import sqlite3

    conn = sqlite3.connect(store.events.path)
    saved = conn.execute("SELECT usd_saved, detail FROM decisions WHERE action = 'saved'").fetchall()
    conn.close()
    usage = Usage(input_tokens=20, output_tokens=5)
    expected = pricing.price("anthropic", "claude-sonnet-4-5", usage) - pricing.price("anthropic",
                                                                                       "claude-haiku-4-5", usage)
    assert len(saved) == 1 and saved[0][0] == pytest.approx(expected) and expected > 0
    assert json.loads(saved[0][1])["instead_of"] == "anthropic/claude-sonnet-4-5"


def test_relay_refuses_an_unknown_job():
    from tokenaddons.engines.relay import Relay

    reply = asyncio.run(Relay().handle(Incoming("POST", "/v1/messages", [(TOKEN_HEADER, "nope")], b"")))
    assert reply.status == 404

