"""The compress addon around single flows: history compresses to the same
bytes on every turn and after a restart or an upgrade, a client's own
breakpoints stay where they are, nothing but tool output changes (over every
recorded request in shared/traffic), and savings are priced as billed."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.test import taddons

from tests.replay.traffic import files, interactions
from tokenaddons.addons.compress import Compress, _anthropic_outputs, _breakpoints_by_message
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.route import Route
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.engines import compressors, pricing
from tokenaddons.engines.cache_hints import anthropic_breakpoints, has_cache_control, messages_marked
from tokenaddons.engines.memo import stable_digest
from tokenaddons.engines.usage import Usage
from tokenaddons.exchange import Exchange
from tokenaddons.providers import detect
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow
from tokenaddons.test.pipeline import rows as stored_rows
from tokenaddons.vcr import body_bytes

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HEADERS = {"content-type": "application/json", "x-api-key": "k1"}
SYSTEM = "You are a coding agent. Read files before editing them and run the tests after each change. " * 60


def sample(name: str) -> str:
    return (SAMPLES / name).read_bytes().decode()


PYTEST = sample("pytest_color.txt")
OUTPUTS = [PYTEST, sample("pip_bom.cdx.json"), sample("git_log_stat.txt"), sample("curl_progress.txt"),
           PYTEST.replace("15.93s", "14.02s"), PYTEST, sample("pip_download_tty.txt")]


def anthropic_turn(n: int, **extra) -> dict:
    """An agent conversation after n tool calls, as the client resends it."""
    messages: list[dict] = [{"role": "user", "content": "Find out why the tests are flaky."}]
    for i, output in enumerate(OUTPUTS[:n]):
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": "bash",
                                                        "input": {"command": f"step {i}"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}",
                                                   "content": output}]}]
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": SYSTEM,
            "tools": [{"name": "bash", "description": "Run a command.", "input_schema": {"type": "object"}}],
            "messages": messages, **extra}


def chat_turn(n: int) -> dict:
    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Why flaky?"}]
    for i, output in enumerate(OUTPUTS[:n]):
        messages += [{"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": output}]
    return {"model": "gpt-4.1", "messages": messages,
            "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}]}


def responses_turn(n: int) -> dict:
    items: list[dict] = [{"role": "user", "content": [{"type": "input_text", "text": "Why flaky?"}]}]
    for i, output in enumerate(OUTPUTS[:n]):
        items += [{"type": "function_call", "call_id": f"call_{i}", "name": "exec_command", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": f"call_{i}", "output": output}]
    return {"model": "gpt-5", "instructions": SYSTEM, "input": items, "stream": True}


def gemini_turn(n: int) -> dict:
    contents: list[dict] = [{"role": "user", "parts": [{"text": "Why flaky?"}]}]
    for i, output in enumerate(OUTPUTS[:n]):
        contents += [{"role": "model", "parts": [{"functionCall": {"id": f"fc_{i}", "name": "bash", "args": {}}}]},
                     {"role": "user", "parts": [{"functionResponse": {"id": f"fc_{i}", "name": "bash",
                                                                      "response": {"output": output}}}]}]
    return {"contents": contents}


FORMATS = {"/v1/messages": anthropic_turn, "/v1/chat/completions": chat_turn, "/v1/responses": responses_turn,
           "/v1beta/models/gemini-2.5-flash:generateContent": gemini_turn}


class Pipe:
    """The request phase through store, intake, compress and outlet, over mitmproxy's addon manager."""

    def __init__(self, path: Path, **options):
        self.store = Store()
        self.compress = Compress(self.store)
        self.addons = [self.store, Intake(), self.compress, Meter(self.store), Settle(), Outlet()]
        self.path, self.options = path, options

    def __enter__(self) -> Pipe:
        self.ctx = taddons.context(*self.addons)
        tctx = self.ctx.__enter__()
        tctx.configure(self.store, store_path=str(self.path))
        if self.options:
            tctx.configure(self.compress, **self.options)
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.__exit__(*exc)
        self.store.done()

    async def send(self, path: str, body: dict, response: http.Response | None = None) -> http.HTTPFlow:
        flow = make_flow(path, copy.deepcopy(body), dict(HEADERS), response)
        return await arun_flow(self.addons, flow)

    async def sent(self, path: str, body: dict) -> dict:
        return json.loads((await self.send(path, body)).request.content)


def unmarked(value):
    """A body without cache_control markers (they are not part of the cached prefix)."""
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [unmarked(v) for v in value]
    return value


def history(path: str, body: dict) -> list:
    """The conversation as the provider's cache sees it: markers aside, a
    string the same as the one text block it stands for."""
    return plain(body.get("messages") or body.get("input") or body.get("contents"))


@pytest.mark.parametrize("path", FORMATS)
async def test_history_compresses_to_the_same_bytes_on_every_turn_after_a_restart_and_an_upgrade(
        tmp_path, path, monkeypatch):
    turn = FORMATS[path]
    store = tmp_path / "events.db"
    with Pipe(store) as pipe:
        sent = [await pipe.sent(path, turn(n)) for n in range(1, len(OUTPUTS) + 1)]
    for before, after in zip(sent, sent[1:]):  # turn N's history is turn N+1's, byte for byte
        old = history(path, before)
        assert history(path, after)[:len(old)] == old
    assert json.dumps(sent[-1]).count("\\u001b") == 0  # escape codes gone
    everything = json.dumps(sent[-1])
    assert "identical to the output of tool call" in everything and "except for these lines" in everything
    # a restart: the memo is read back from the store
    with Pipe(store) as pipe:
        assert len(pipe.compress.memo) >= len(OUTPUTS)
        assert await pipe.sent(path, turn(len(OUTPUTS))) == sent[-1]
    # an upgrade that compresses differently: history already sent keeps its bytes, new output gets the new steps
    monkeypatch.setattr(compressors, "compress", lambda text, count, max_tokens=None, file=False: compressors.Result(
        text, count(text), count(text)))
    with Pipe(store) as pipe:
        assert await pipe.sent(path, turn(len(OUTPUTS))) == sent[-1]
        grown = turn(len(OUTPUTS))
        if path == "/v1/messages":
            grown["messages"] += [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_new",
                                                                     "name": "bash", "input": {}}]},
                                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_new",
                                                                "content": PYTEST + "\nnew run\n"}]}]
            later = await pipe.sent(path, grown)
            assert plain(later["messages"][:len(sent[-1]["messages"])]) == plain(sent[-1]["messages"])
            assert "\x1b" in later["messages"][-1]["content"][0]["content"]  # the new version's (no) steps


async def test_a_clients_own_breakpoints_are_never_moved(tmp_path):
    body = anthropic_turn(4)
    body["system"] = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    body["messages"][4]["content"][0]["cache_control"] = {"type": "ephemeral"}
    body["messages"][-1]["content"][0]["cache_control"] = {"type": "ephemeral"}

    def marks(value, where="") -> list:
        if isinstance(value, dict):
            return ([(where, value["cache_control"])] if "cache_control" in value else []) + [
                m for k, v in value.items() for m in marks(v, f"{where}/{k}")]
        if isinstance(value, list):
            return [m for i, v in enumerate(value) for m in marks(v, f"{where}/{i}")]
        return []

    with Pipe(tmp_path / "events.db") as pipe:
        flow = await pipe.send("/v1/messages", body)
    sent = json.loads(flow.request.content)
    assert marks(sent) == marks(body) and len(marks(sent)) == 3
    assert sent["messages"][2]["content"][0]["content"] != body["messages"][2]["content"][0]["content"]  # compressed
    assert [d.action for d in Exchange.of(flow).decisions if d.action == "hints"] == []


def tool_strings(api, body) -> list[str]:
    return [ref.text for ref in api.text_refs(body) if ref.role == "tool"]


def masked(api, body):
    """The body with every tool output replaced by a mark: what must not change."""
    body = copy.deepcopy(body)
    for ref in api.text_refs(body):
        if ref.role == "tool":
            ref.text = "<tool output>"
    return body


def plain(value):
    """Hints undone: markers out, a one-text-block list back to the string it was."""
    value = unmarked(value)
    if isinstance(value, dict):
        value = {k: plain(v) for k, v in value.items() if k != "prompt_cache_key"}
        for key in ("system", "content"):
            v = value.get(key)
            if isinstance(v, list) and len(v) == 1 and isinstance(v[0], dict) and set(v[0]) == {"type", "text"} \
                    and v[0]["type"] == "text":
                value[key] = v[0]["text"]
        return value
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def api_of(request: dict):
    return detect(request["method"], "/" + request["uri"].split("://", 1)[-1].partition("/")[2])


RECORDED = [(p, i) for p in files() for i, it in enumerate(interactions(p))
            if (api := api_of(it["request"])) and api.name != "anthropic.count_tokens" and body_bytes(it["request"])]


@pytest.fixture(scope="module")
def recorded_pipe(tmp_path_factory):
    with Pipe(tmp_path_factory.mktemp("recorded") / "events.db") as pipe:
        yield pipe


@pytest.mark.parametrize("path,index", RECORDED, ids=[f"{p.parent.name}/{p.stem}#{i}" for p, i in RECORDED])
async def test_nothing_but_tool_output_changes_in_recorded_requests(recorded_pipe, path, index):
    pipe = recorded_pipe
    req = interactions(path)[index]["request"]
    url_path = "/" + req["uri"].split("://", 1)[-1].partition("/")[2]
    api = api_of(req)
    original = json.loads(body_bytes(req))
    # the recorded tool outputs, and the same conversation with real noisy output in their place
    noisy = copy.deepcopy(original)
    for n, ref in enumerate(r for r in api.text_refs(noisy) if r.role == "tool"):
        ref.text = OUTPUTS[n % len(OUTPUTS)]
    def where(refs):
        return [(id(r.container), r.key, r.call) for r in refs]

    assert where(api.tool_refs(noisy)) == where(r for r in api.text_refs(noisy) if r.role == "tool")
    for body in (original, noisy):
        pipe.ctx.configure(pipe.compress, cache_hints=False)
        sent = json.loads((await pipe.send(url_path, body)).request.content)
        assert masked(api, sent) == masked(api, body)  # byte for byte but tool output, hints off
        for was, now in zip(tool_strings(api, body), tool_strings(api, sent)):
            assert now == was or len(now) < len(was)
        pipe.ctx.configure(pipe.compress, cache_hints=True)
        hinted = json.loads((await pipe.send(url_path, body)).request.content)
        if has_cache_control(body) or api.provider == "gemini":
            assert masked(api, hinted) == masked(api, body)
        else:  # only markers and a cache key added (a string turned into the one text block it is)
            assert plain(masked(api, hinted)) == plain(masked(api, body))
            if api.provider == "openai" and "prompt_cache_key" not in body:
                assert hinted["prompt_cache_key"].startswith("tokenaddons-")
        if body is noisy and tool_strings(api, body):
            assert sent != body  # the noisy outputs did compress


ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 50, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 9000,
                    "output_tokens": 10}}


def answer() -> http.Response:
    return http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})


async def test_savings_priced_at_write_price_first_and_read_price_after(tmp_path):
    prices = pricing.unit_prices("anthropic", "claude-sonnet-4-5")
    with Pipe(tmp_path / "events.db") as pipe:
        await pipe.send("/v1/messages", anthropic_turn(1), answer())
        await pipe.send("/v1/messages", anthropic_turn(1) | {"messages": anthropic_turn(1)["messages"] + [
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            {"role": "user", "content": "and now?"}]}, answer())
        rows = stored_rows(pipe.store, "decisions")
    first, again = [r for r in rows if r["action"] == "terminal"]
    assert first["tokens_saved"] == again["tokens_saved"] > 0
    assert first["usd_saved"] == pytest.approx(first["tokens_saved"] * prices.cache_write_5m)  # a breakpoint covers it
    assert again["usd_saved"] == pytest.approx(again["tokens_saved"] * prices.cache_read)  # resent: read from cache
    # and how they would have been billed (a replay takes them off the cache writes and reads)
    assert json.loads(first["detail"])["billed_as"] == {"cache_write": first["tokens_saved"]}
    assert json.loads(again["detail"])["billed_as"] == {"cache_read": again["tokens_saved"]}
    hints = [r for r in rows if r["action"] == "hints"]
    detail = json.loads(hints[0]["detail"])
    assert detail["breakpoints"] == ["prefix", "previous turn", "newest turn"] and detail["cache_read_tokens"] == 9000
    usage = Usage(input_tokens=12050, cache_read_tokens=9000, cache_write_tokens=3000, output_tokens=10)
    model = "claude-sonnet-4-5-20250929"
    saved = pricing.prompt_cache_saving("anthropic", model, usage, pricing.price("anthropic", model, usage))
    assert saved > 0 and hints[0]["usd_saved"] == pytest.approx(saved)  # the provider's reads, the hints' doing


async def test_without_a_breakpoint_a_saving_is_worth_the_input_price(tmp_path):
    prices = pricing.unit_prices("openai", "gpt-4.1")
    with Pipe(tmp_path / "events.db", cache_hints=False) as pipe:
        flows = [await pipe.send("/v1/chat/completions", chat_turn(1)),
                 await pipe.send("/v1/chat/completions", chat_turn(2)),
                 await pipe.send("/v1/messages", anthropic_turn(1))]
    chat_first, chat_again, anthropic_first = [
        next(d for d in Exchange.of(f).decisions if d.action == "terminal") for f in flows]
    assert chat_first.usd_saved == pytest.approx(chat_first.tokens_saved * prices.input)  # no write premium
    assert chat_again.usd_saved == pytest.approx(chat_again.tokens_saved * prices.cache_read)
    sonnet = pricing.unit_prices("anthropic", "claude-sonnet-4-5")
    assert anthropic_first.usd_saved == pytest.approx(anthropic_first.tokens_saved * sonnet.input)  # never cached
    assert [d.detail["billed_as"] for d in (chat_first, chat_again, anthropic_first)] == [
        {"input": chat_first.tokens_saved}, {"cache_read": chat_again.tokens_saved},
        {"input": anthropic_first.tokens_saved}]


async def test_lossy_cap_is_opt_in(tmp_path):
    big = "\n".join(f"line {i}: " + " ".join(["data"] * 12) for i in range(3000))
    body = anthropic_turn(1)
    body["messages"][2]["content"][0]["content"] = big
    with Pipe(tmp_path / "a.db") as pipe:
        assert (await pipe.sent("/v1/messages", body))["messages"][2]["content"][0]["content"] == big
    with Pipe(tmp_path / "b.db", compress_lossy=True, compress_max_tokens=1000) as pipe:
        flow = await pipe.send("/v1/messages", body)
    out = json.loads(flow.request.content)["messages"][2]["content"][0]["content"]
    assert out.startswith("line 0: ") and out.endswith(big[-100:]) and "cut here by tokenaddons" in out
    assert [d.action for d in Exchange.of(flow).decisions if d.action == "cap"] == ["cap"]


async def test_options_turn_each_part_off(tmp_path):
    body = anthropic_turn(3)
    with Pipe(tmp_path / "events.db", compress=False, cache_hints=False) as pipe:
        flow = await pipe.send("/v1/messages", body)
        assert json.loads(flow.request.content) == body and not Exchange.of(flow).decisions
        assert not Exchange.of(flow).dirty
    with Pipe(tmp_path / "other.db", compress=False) as pipe:
        sent = await pipe.sent("/v1/messages", body)
        assert has_cache_control(sent) and masked_tools_equal(sent, body)


def masked_tools_equal(sent: dict, body: dict) -> bool:
    api = detect("POST", "/v1/messages")
    return tool_strings(api, sent) == tool_strings(api, body)


async def test_a_failure_sends_the_request_as_the_client_sent_it(tmp_path, monkeypatch, caplog):
    def broken(text, count, max_tokens=None, file=False):
        raise RuntimeError("boom")

    monkeypatch.setattr(compressors, "compress", broken)
    body = anthropic_turn(2)
    with Pipe(tmp_path / "events.db") as pipe:
        flow = await pipe.send("/v1/messages", body)
    assert json.loads(flow.request.content) == body
    assert "sent as the client sent it" in caplog.text


async def test_bad_options_are_refused(tmp_path):
    from mitmproxy import exceptions

    with Pipe(tmp_path / "events.db") as pipe:
        with pytest.raises(exceptions.OptionsError, match="cache_hints_ttl"):
            pipe.ctx.configure(pipe.compress, cache_hints_ttl="2h")
        with pytest.raises(exceptions.OptionsError, match="compress_max_tokens"):
            pipe.ctx.configure(pipe.compress, compress_max_tokens=10)


@pytest.mark.parametrize("tool,args", [("read_file", {"path": "bom.json"}), ("bash", {"command": "cat bom.json"})])
async def test_a_file_read_keeps_its_bytes_and_command_output_is_compressed(tmp_path, tool, args):
    bom = sample("pip_bom.cdx.json")
    body = anthropic_turn(0)
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_r", "name": tool, "input": args}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_r", "content": bom}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_c", "name": "bash",
                                           "input": {"command": "curl -s localhost/bom"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_c", "content": bom + " "}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_again", "name": tool, "input": args}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_again", "content": bom}]}]
    with Pipe(tmp_path / "events.db") as pipe:
        sent = await pipe.sent("/v1/messages", body)
    read, fetched, again = (sent["messages"][i]["content"][0]["content"] for i in (2, 4, 6))
    assert read == bom  # as the file is: the agent may edit it by exact text
    assert fetched.startswith('{"$schema"') and json.loads(fetched) == json.loads(bom)  # command output: minified
    assert again == "[identical to the output of tool call toolu_r above]"  # a second read of the same file


async def test_a_result_fallen_out_of_memory_is_found_on_disk(tmp_path, monkeypatch):
    with Pipe(tmp_path / "events.db") as pipe:
        first = await pipe.sent("/v1/messages", anthropic_turn(3))
        pipe.store.events.flush()
        pipe.compress.memo.items.clear()  # as if evicted by newer outputs
        monkeypatch.setattr(compressors, "compress", lambda text, count, max_tokens=None, file=False:
                            compressors.Result(text, count(text), count(text)))
        flow = await pipe.send("/v1/messages", anthropic_turn(3))
    assert json.loads(flow.request.content) == first
    terminal = next(d for d in Exchange.of(flow).decisions if d.action == "terminal")
    read = pricing.unit_prices("anthropic", "claude-sonnet-4-5").cache_read
    assert terminal.usd_saved == pytest.approx(terminal.tokens_saved * read)  # resent: priced as read


async def test_a_chat_request_routed_to_anthropic_is_compressed_and_hinted_in_anthropics_format(tmp_path):
    settings, store = Settings(), Store()
    compress = Compress(store)
    addons = [settings, store, Intake(), Route(settings.published, store), compress, Outlet()]
    (tmp_path / "settings.toml").write_text('[providers.claude]\napi = "anthropic"\n'
                                            'base_url = "http://127.0.0.1:9001"\nkey = "none"\n'
                                            '[aliases]\nsmart = "claude/claude-sonnet-4-5"\n')
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        tctx.configure(settings, settings_path=str(tmp_path / "settings.toml"))
        body = chat_turn(2) | {"model": "smart"}
        flow = make_flow("/v1/chat/completions", body, {"content-type": "application/json",
                                                         "authorization": "Bearer sk-client"})
        flow.client_conn.proxy_mode = ProxyMode.parse("reverse:https://api.openai.com")
        await arun_flow(addons, flow)
    store.done()
    sent = json.loads(flow.request.content)
    assert flow.request.path.startswith("/v1/messages") and sent["model"] == "claude-sonnet-4-5"
    results = [b for m in sent["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b.get("type") == "tool_result"]
    assert len(results) == 2 and "\x1b" not in json.dumps(results)  # compressed after translation
    assert has_cache_control(sent) and "prompt_cache_key" not in sent  # Anthropic's hints, not OpenAI's
    assert {d.action for d in Exchange.of(flow).decisions} >= {"terminal", "hints"}


# -- the hook's own memos and walk: the same results as computing everything again

def test_an_outputs_key_is_the_stored_hash_and_a_changed_text_never_reuses_one():
    compress = Compress(Store())
    context = stable_digest("cl100k_base|lossless")

    def stored(ctx: bytes, call: str, file: bool, text: str) -> bytes:  # what the store's rows are keyed by
        return stable_digest(f"{ctx.hex()}\0{call}\0{'file' if file else ''}\0{text}")

    same_length = PYTEST.replace("15.93s", "14.02s")
    for ctx, call, file, text in [(context, "toolu_1", False, PYTEST), (context, "toolu_1", False, same_length),
                                  (context, "toolu_1", True, PYTEST), (context, "toolu_2", False, PYTEST),
                                  (stable_digest("other"), "toolu_1", False, PYTEST)]:
        for _ in range(2):  # computed, then remembered
            assert compress._key(ctx, call, file, text) == stored(ctx, call, file, text)
    assert len({stored(context, "toolu_1", False, t) for t in (PYTEST, same_length)}) == 2


async def test_a_changed_output_is_compressed_anew_and_changes_the_keys_after_it(tmp_path):
    first = anthropic_turn(3)
    changed = copy.deepcopy(first)
    changed["messages"][2]["content"][0]["content"] = PYTEST.replace("15.93s", "14.02s")  # the same length
    with Pipe(tmp_path / "events.db") as pipe:
        before = await pipe.sent("/v1/messages", first)
        after = await pipe.sent("/v1/messages", changed)
        again = await pipe.sent("/v1/messages", changed)
    with Pipe(tmp_path / "fresh.db") as pipe:
        fresh = await pipe.sent("/v1/messages", changed)
    assert "15.93s" in json.dumps(before) and "15.93s" not in json.dumps(after)
    assert after == again == fresh  # what a proxy that never saw the first version sends


def anthropic_walks(body: dict):
    """Tool outputs with their message, and tool calls, from the provider's own walks."""
    api = detect("POST", "/v1/messages")
    shallow = {}
    for i, msg in enumerate(body.get("messages") or []):
        for block in msg.get("content") if isinstance(msg, dict) and isinstance(msg.get("content"), list) else []:
            shallow[id(block)] = i
            for part in block.get("content") if isinstance(block, dict) and isinstance(block.get("content"),
                                                                                        list) else []:
                shallow[id(part)] = i
                if isinstance(part, dict) and isinstance(part.get("source"), dict):
                    shallow[id(part["source"])] = i
    outputs = [(shallow.get(id(r.container), 0), id(r.container), r.key, r.call) for r in api.tool_refs(body)
               if not r.number and isinstance(r.text, str)]
    return outputs, api.tool_calls(body)


SERVER_RESULTS = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [
    {"role": "user", "content": "Run it."},
    {"role": "assistant", "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "code_execution", "input": {"code": "print(1)"}},
        {"type": "code_execution_tool_result", "tool_use_id": "srvtoolu_1", "content": {
            "type": "code_execution_result", "stdout": "1\n" * 40, "stderr": "", "return_code": 0, "content": []}},
        {"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_2", "content": [
            {"type": "document", "title": "t", "source": {"type": "text", "data": "x" * 80}}]},
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "cat a", "n": 12345678}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "y" * 90, "citations": [{"type": "char_location", "cited_text": "z" * 70}]},
            {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "w" * 70}]},
            {"type": "image", "source": {"type": "base64", "data": "AAAA"}}]},
        {"type": "tool_result", "tool_use_id": "toolu_0", "content": "plain"}, "not a block", 7]},
    "not a message"]}


@pytest.mark.parametrize("body", [anthropic_turn(len(OUTPUTS)), SERVER_RESULTS] + [
    json.loads(body_bytes(interactions(p)[i]["request"])) for p, i in RECORDED
    if api_of(interactions(p)[i]["request"]).name == "anthropic.messages"])
def test_one_walk_finds_the_outputs_their_messages_and_the_calls_the_provider_walks_do(body):
    walk = _anthropic_outputs(body)
    expected_outputs, expected_calls = anthropic_walks(body)
    assert [(i, id(r.container), r.key, r.call) for i, r in walk.outputs] == expected_outputs
    assert walk.calls == expected_calls
    assert walk.marked == messages_marked(body)
    # the breakpoints each output's price looks at: the hints' own, or the client's
    placed = anthropic_breakpoints(body, "claude-sonnet-4-5", Compress._size)
    messages = body.get("messages") or []
    expected = [(i, p.ttl) for i, msg in enumerate(messages) for p in placed
                if p.container is msg or p.container is (msg.get("content") if isinstance(msg, dict) else None)]
    if not placed:
        expected = [(i, [b["cache_control"].get("ttl") or "5m" for b in msg["content"]
                         if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)][-1])
                    for i, msg in enumerate(messages) if isinstance(msg, dict) and isinstance(msg.get("content"), list)
                    and any(isinstance(b, dict) and isinstance(b.get("cache_control"), dict) for b in msg["content"])]
    assert _breakpoints_by_message(body, placed) == expected
    assert _breakpoints_by_message(body, placed, walk.marks) == expected  # the client's, as the walk found them
