"""Anthropic Messages <-> OpenAI Chat Completions, checked on recorded provider
traffic: every recorded request translates into a body the other SDK's own
request types accept (or is refused for a documented reason), every recorded
answer (JSON and stream) reads back through the other SDK's own parser and
stream helpers with the same text, tool calls, stop reason and usage."""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

import anthropic
import openai
import pytest
from anthropic.types import Message
from anthropic.types import message_create_params as anthropic_params
from openai.types.chat import ChatCompletion
from openai.types.chat import completion_create_params as chat_params
from pydantic import TypeAdapter

from tests.replay.traffic import body_bytes, files, interactions
from tests.sdk import anthropic_final, chat_final, claude, gpt
from tokenaddons.providers import CHAT, MESSAGES, detect
from tokenaddons.providers.sse import Event, SSEParser
from tokenaddons.providers.translate import Untranslatable, chat_on_messages
from tokenaddons.providers.translate import error as translate_error
from tokenaddons.providers.translate import request as translate_request
from tokenaddons.providers.translate import response as translate_response
from tokenaddons.providers.translate import stream as translate_stream
from tokenaddons.sim import answers


def recorded(names: tuple[str, ...]) -> dict[str, list[tuple[str, dict, dict]]]:
    """API name -> (name, request body, response) of every recorded exchange of it (the files read once)."""
    out: dict[str, list] = {name: [] for name in names}
    for path in files("test_anthropic*/*.yaml") + files("test_openai/*.yaml"):
        for i, it in enumerate(interactions(path)):
            req = it["request"]
            api = detect(req["method"], urlsplit(req["uri"]).path)
            if api is None or api.name not in out:
                continue
            try:
                body = json.loads(body_bytes(req))
            except ValueError:
                continue
            out[api.name].append((f"{path.name}#{i}", body, it["response"]))
    return out


_RECORDED = recorded(("anthropic.messages", "openai.chat"))
ANTHROPIC = _RECORDED["anthropic.messages"]
CHATS = _RECORDED["openai.chat"]


def is_sse(resp: dict) -> bool:
    return body_bytes(resp).startswith((b"event:", b"data:"))


def answer_json(resp: dict):
    if is_sse(resp):
        return None
    try:
        return json.loads(body_bytes(resp))
    except ValueError:
        return None


# ------------------------------------------------------------------ the SDKs as judges

def _force(value):
    """Validate what pydantic left lazy (the SDKs' request types use Iterable)."""
    if type(value).__name__ == "ValidatorIterator":
        return [_force(v) for v in value]
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_force(v) for v in value]
    return value


CHAT_REQUEST = {False: TypeAdapter(chat_params.CompletionCreateParamsNonStreaming),
                True: TypeAdapter(chat_params.CompletionCreateParamsStreaming)}
MESSAGES_REQUEST = {False: TypeAdapter(anthropic_params.MessageCreateParamsNonStreaming),
                    True: TypeAdapter(anthropic_params.MessageCreateParamsStreaming)}


def valid_chat_request(body: dict) -> None:
    _force(CHAT_REQUEST[bool(body.get("stream"))].validate_python(body))


def valid_messages_request(body: dict) -> None:
    _force(MESSAGES_REQUEST[bool(body.get("stream"))].validate_python(body))


def run_stream(translator, sse: bytes, one_by_one: bool = True) -> bytes:
    """A stream through a translator, event by event as the stream pump hands them."""
    events = SSEParser().feed(sse if sse.endswith(b"\n\n") else sse + b"\n\n")
    out: list[Event] = []
    if one_by_one:
        for e in events:
            out += translator.feed([e])
    else:
        out += translator.feed(events)
    out += translator.end()
    return b"".join(e.raw for e in out)


# ------------------------------------------------------------------ what a conversation says

def anthropic_turns(body: dict) -> list[tuple]:
    """What an Anthropic conversation says, as comparable items (an assistant's
    text runs joined: Chat keeps one string per assistant turn)."""
    items: list[tuple] = []
    for msg in body.get("messages") or []:
        if msg["role"] == "system":
            continue  # see system_text
        content = msg["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        text = ""
        for b in blocks:
            if b["type"] == "text" and msg["role"] == "assistant":
                text += b["text"]
                continue
            if b["type"] == "document" and b["source"]["type"] == "text":
                b = {"type": "text", "text": b["source"]["data"]}  # Chat has no text documents: plain text
            if b["type"] == "text":
                if b["text"]:
                    items.append((msg["role"], "text", b["text"]))
                continue
            if text:
                items.append((msg["role"], "text", text))
                text = ""
            if b["type"] == "tool_use":
                items.append(("assistant", "tool_use", b["id"], b["name"], json.dumps(b["input"], sort_keys=True)))
            elif b["type"] == "tool_result":
                inner = b.get("content")
                inner = inner if isinstance(inner, str) else "".join(
                    x.get("text", "") for x in inner or [] if x.get("type") == "text")
                items.append(("user", "tool_result", b["tool_use_id"], inner))
            elif b["type"] == "image":
                src = b["source"]
                items.append((msg["role"], "image", src.get("data") or src.get("url")))
            elif b["type"] == "document":
                items.append((msg["role"], "document", b["source"].get("data")))
        if text:
            items.append((msg["role"], "text", text))
    return items


def system_text(body: dict) -> str:
    """The top-level system prompt and any system turns in the conversation, in order."""
    system = body.get("system") or ""
    out = system if isinstance(system, str) else "".join(b.get("text", "") for b in system)
    for msg in body.get("messages") or []:
        if msg.get("role") == "system":
            c = msg["content"]
            out += c if isinstance(c, str) else "".join(b.get("text", "") for b in c)
    return out


# ------------------------------------------------------------------ requests

ANTHROPIC_REQUESTS = [(name, body) for name, body, _ in ANTHROPIC]
UNTRANSLATABLE = ("thinking", "server tool", "block", "request field", "source", "output_config", "output format")


@pytest.mark.parametrize("name, body", ANTHROPIC_REQUESTS, ids=[n for n, _ in ANTHROPIC_REQUESTS])
def test_every_recorded_anthropic_request_translates_or_is_refused_for_a_reason(name, body):
    try:
        chat = translate_request(MESSAGES, CHAT, body).body
    except Untranslatable as e:
        assert any(word in str(e) for word in UNTRANSLATABLE), e
        return
    valid_chat_request(chat)  # the openai SDK's own request types accept it
    msgs = chat["messages"]
    assert "".join(m["content"] for m in msgs if m["role"] == "system") == system_text(body)
    calls = [c for m in msgs for c in m.get("tool_calls") or []]
    results = [m for m in msgs if m["role"] == "tool"]
    said = anthropic_turns(body)
    assert len(calls) == sum(1 for i in said if i[1] == "tool_use")
    assert [m["tool_call_id"] for m in results] == [i[2] for i in said if i[1] == "tool_result"]
    seen: set[str] = set()
    for m in msgs:  # a tool result follows the call it answers
        seen.update(c["id"] for c in m.get("tool_calls") or [])
        if m["role"] == "tool":
            assert m["tool_call_id"] in seen
    assert [t["function"]["name"] for t in chat.get("tools", [])] == [t["name"] for t in body.get("tools", [])]
    assert chat.get("max_completion_tokens") == body.get("max_tokens")
    assert chat.get("stream_options") == ({"include_usage": True} if body.get("stream") else None)
    # and back again: the conversation says the same
    back = translate_request(CHAT, MESSAGES, chat).body
    valid_messages_request(back)
    assert anthropic_turns(back) == said
    assert system_text(back) == system_text(body)
    assert [t["input_schema"] for t in back.get("tools", [])] == [t["input_schema"] for t in body.get("tools", [])]


def test_most_recorded_anthropic_requests_translate():
    done = 0
    for _, body in ANTHROPIC_REQUESTS:
        try:
            translate_request(MESSAGES, CHAT, body)
            done += 1
        except Untranslatable:
            pass
    assert done >= 45, done  # the rest use thinking, server tools or tool search (Anthropic only)


CHAT_REQUESTS = [(name, body) for name, body, _ in CHATS]
CHAT_UNTRANSLATABLE = ("input_audio", "file part", "response_format", "request field", "n)")


@pytest.mark.parametrize("name, body", CHAT_REQUESTS, ids=[n for n, _ in CHAT_REQUESTS])
def test_every_recorded_chat_request_translates_or_is_refused_for_a_reason(name, body):
    try:
        messages = translate_request(CHAT, MESSAGES, body).body
    except Untranslatable as e:
        assert any(word in str(e) for word in CHAT_UNTRANSLATABLE), e
        return
    valid_messages_request(messages)  # the anthropic SDK's own request types accept it
    roles = [m["role"] for m in messages["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:]))  # turns alternate
    system = "".join(m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])
                     for m in body["messages"] if m["role"] in ("system", "developer"))
    assert system_text(messages) == system
    calls = [c for m in body["messages"] for c in m.get("tool_calls") or []]
    uses = [b for m in messages["messages"] for b in m["content"] if b["type"] == "tool_use"]
    assert [(u["id"], u["name"], u["input"]) for u in uses] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"] or "{}")) for c in calls]
    results = [b for m in messages["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"]
    assert messages["max_tokens"] == (body.get("max_completion_tokens") or body.get("max_tokens")
                                      or chat_on_messages.DEFAULT_MAX_TOKENS)
    if body.get("tools"):
        assert [t["name"] for t in messages["tools"]] == [t["function"]["name"] for t in body["tools"]]
    valid_chat_request(translate_request(MESSAGES, CHAT, messages).body)  # and back


def test_most_recorded_chat_requests_translate():
    done = sum(1 for _, b in CHAT_REQUESTS if not _raises(lambda: translate_request(CHAT, MESSAGES, b)))
    assert done >= 40, done  # the rest ask for JSON output, moderation, web search or audio


def _raises(fn) -> bool:
    try:
        fn()
    except Untranslatable:
        return True
    return False


def test_request_fields_map_both_ways():
    body = {"model": "claude-sonnet-4-5", "max_tokens": 300, "temperature": 0.3, "top_p": 0.9, "top_k": 5,
            "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}, "stream": True,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {
                "type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                    {"type": "document", "title": "spec", "source": {
                        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                        {"type": "text", "text": "sunny"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                    {"type": "text", "text": "And tomorrow?"}]}]}
    t = translate_request(MESSAGES, CHAT, body)
    chat = t.body
    valid_chat_request(chat)
    assert t.dropped == ["top_k"]
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][1]["content"] == [
        {"type": "text", "text": "Look:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]
    assert chat["messages"][2] == {"role": "assistant", "content": "Checking.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}
    # a tool result's image cannot sit in a Chat tool message: it follows in the user turn
    assert chat["messages"][4]["content"][0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert chat["messages"][4]["content"][1] == {"type": "text", "text": "And tomorrow?"}
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False
    assert (chat["stop"], chat["temperature"], chat["top_p"], chat["user"]) == (["END"], 0.3, 0.9, "u-1")
    assert chat["tools"][0] == {"type": "function", "function": {
        "name": "get_weather", "description": "Weather", "parameters": body["tools"][0]["input_schema"]}}
    back = translate_request(CHAT, MESSAGES, chat).body
    valid_messages_request(back)
    assert back["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert back["stop_sequences"] == ["END"] and back["metadata"] == {"user_id": "u-1"}
    assert back["messages"][0]["content"][3] == {"type": "document", "title": "spec.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
    for anthropic_choice, chat_choice in (({"type": "auto"}, "auto"), ({"type": "any"}, "required"),
                                          ({"type": "none"}, "none")):
        got = translate_request(MESSAGES, CHAT, {**body, "tool_choice": anthropic_choice}).body["tool_choice"]
        assert got == chat_choice
        assert translate_request(CHAT, MESSAGES, {**chat, "tool_choice": got,
                                                  "parallel_tool_calls": True}).body["tool_choice"] == anthropic_choice


@pytest.mark.parametrize("body, reason", [
    ({"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]}]},
     "'thinking' block"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "server tool 'web_search_20250305'"),
    ({"mcp_servers": [{"type": "url", "url": "https://x"}]}, "request field(s) mcp_servers"),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "5 stop sequences"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {
        "type": "url", "url": "https://x/a.pdf"}}]}]}, "document from a 'url' source"),
])
def test_what_anthropic_has_and_chat_has_not_is_refused(body, reason):
    base = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(Untranslatable, match=re.escape(reason)):
        translate_request(MESSAGES, CHAT, {**base, **body})


def test_thinking_asked_for_is_dropped_and_structured_output_carried_both_ways():
    """What Claude Code sends: extended thinking on, context editing, a long JSON
    user id; its small model asks for a JSON schema."""
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"],
              "additionalProperties": False}
    user = json.dumps({"device_id": "d" * 64, "session_id": "426f676e-b71b-4b05-883c-78d732e876a4"})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32000, "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 31999}, "metadata": {"user_id": user},
            "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
            "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "high"}}
    t = translate_request(MESSAGES, CHAT, body)
    valid_chat_request(t.body)
    assert t.dropped == ["context_management", "thinking", "output_config.effort"]
    assert t.body["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert len(t.body["user"]) == 32 and t.body["user"] == translate_request(MESSAGES, CHAT, body).body["user"]
    back = translate_request(CHAT, MESSAGES, t.body).body
    valid_messages_request(back)
    assert back["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    # thinking already in the conversation cannot be carried over
    with pytest.raises(Untranslatable, match="'thinking' block"):
        translate_request(MESSAGES, CHAT, {**body, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                              {"type": "text", "text": "ok"}]},
            {"role": "user", "content": "and?"}]})
    with pytest.raises(Untranslatable, match="output_config task_budget"):
        translate_request(MESSAGES, CHAT, {**body, "output_config": {"task_budget": 5}})


@pytest.mark.parametrize("body, reason", [
    ({"n": 2}, "more than one choice"),
    ({"logprobs": True}, "request field"),
    ({"response_format": {"type": "json_object"}}, "response_format 'json_object'"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "x", "format": "wav"}}]}]}, "'input_audio' content part"),
    ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tool type 'custom'"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]}, "not JSON"),
])
def test_what_chat_has_and_anthropic_has_not_is_refused(body, reason):
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(Untranslatable, match=re.escape(reason)):
        translate_request(CHAT, MESSAGES, {**base, **body})


def test_chat_details_anthropic_needs():
    chat = {"model": "gpt-4.1", "temperature": 1.7, "seed": 3, "stop": "STOP", "parallel_tool_calls": False,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "messages": [{"role": "developer", "content": "Rule one."},
                         {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                         {"role": "system", "content": [{"type": "text", "text": "Rule two."}]},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "done"},
                         {"role": "user", "content": "thanks"}]}
    t = translate_request(CHAT, MESSAGES, chat)
    m = t.body
    valid_messages_request(m)
    assert m["max_tokens"] == chat_on_messages.DEFAULT_MAX_TOKENS  # Anthropic requires one
    assert m["temperature"] == 1.0 and "temperature above 1" in t.dropped and "seed" in t.dropped
    assert m["stop_sequences"] == ["STOP"]
    assert m["system"] == [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}]
    assert [x["role"] for x in m["messages"]] == ["user", "assistant", "user"]
    assert m["messages"][0]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert m["messages"][1]["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    assert m["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1", "content": "done"},
                                           {"type": "text", "text": "thanks"}]
    assert m["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


# ------------------------------------------------------------------ JSON answers

def translatable(body: dict) -> bool:
    try:
        translate_request(MESSAGES, CHAT, body)
    except Untranslatable:
        return False
    return True


# answers to the requests that translate (the others are never sent across)
ANTHROPIC_ANSWERS = [(n, answer_json(r)) for n, b, r in ANTHROPIC
                     if r["status"]["code"] == 200 and isinstance(answer_json(r), dict) and translatable(b)]
# (a recorded "invalid response" from a compatible server is not an answer to translate)
CHAT_ANSWERS = [(n, answer_json(r)) for n, _, r in CHATS if r["status"]["code"] == 200
                and isinstance(answer_json(r), dict) and answer_json(r).get("choices")]


def _texts(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


@pytest.mark.parametrize("name, data", ANTHROPIC_ANSWERS, ids=[n for n, _ in ANTHROPIC_ANSWERS])
def test_every_recorded_anthropic_answer_reads_as_a_chat_completion(name, data):
    original = Message.model_validate(data)
    chat = ChatCompletion.model_validate(translate_response(MESSAGES, CHAT, data))  # the openai SDK's type
    msg = chat.choices[0].message
    assert (msg.content or "") == _texts(original)
    uses = [b for b in original.content if b.type == "tool_use"]
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls or []] == [
        (u.id, u.name, u.input) for u in uses]
    assert chat.choices[0].finish_reason == {"tool_use": "tool_calls", "max_tokens": "length",
                                             "refusal": "content_filter"}.get(original.stop_reason, "stop")
    u = original.usage
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    assert chat.usage.prompt_tokens == u.input_tokens + read + write
    assert chat.usage.prompt_tokens_details.cached_tokens == read
    assert chat.usage.completion_tokens == u.output_tokens
    assert (chat.id, chat.model) == (original.id, original.model)


@pytest.mark.parametrize("name, data", CHAT_ANSWERS, ids=[n for n, _ in CHAT_ANSWERS])
def test_every_recorded_chat_answer_reads_as_an_anthropic_message(name, data):
    original = ChatCompletion.model_validate(data)
    message = Message.model_validate(translate_response(CHAT, MESSAGES, data))  # the anthropic SDK's type
    choice = original.choices[0]
    assert _texts(message) == (choice.message.content or "") + (choice.message.refusal or "")
    uses = [b for b in message.content if b.type == "tool_use"]
    calls = choice.message.tool_calls or []
    assert [(u.id if c.id else "", u.name, u.input) for u, c in zip(uses, calls)] == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] and len(uses) == len(calls)
    assert all(u.id for u in uses)  # a compatible server's empty id is replaced: the client must answer the call
    assert message.stop_reason == {"tool_calls": "tool_use", "length": "max_tokens",
                                   "content_filter": "refusal"}.get(choice.finish_reason, "end_turn")
    cached = (original.usage.prompt_tokens_details.cached_tokens or 0) if original.usage.prompt_tokens_details else 0
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == original.usage.prompt_tokens
    assert message.usage.cache_read_input_tokens == cached
    assert message.usage.output_tokens == original.usage.completion_tokens


def test_cache_reads_survive_translation_both_ways():
    cached = [d for _, d in ANTHROPIC_ANSWERS if (d["usage"].get("cache_read_input_tokens") or 0) > 0]
    assert cached, "the recordings hold Anthropic answers with cache reads"
    for data in cached:
        chat = translate_response(MESSAGES, CHAT, data)
        assert chat["usage"]["prompt_tokens_details"]["cached_tokens"] == data["usage"]["cache_read_input_tokens"]
        back = translate_response(CHAT, MESSAGES, chat)
        assert back["usage"]["cache_read_input_tokens"] == data["usage"]["cache_read_input_tokens"]
    chat_cached = [d for _, d in CHAT_ANSWERS
                   if ((d.get("usage") or {}).get("prompt_tokens_details") or {}).get("cached_tokens")]
    for data in chat_cached:
        got = translate_response(CHAT, MESSAGES, data)["usage"]
        assert got["cache_read_input_tokens"] == data["usage"]["prompt_tokens_details"]["cached_tokens"]


def test_tool_calls_without_ids_get_unique_ones():
    """Some OpenAI-compatible servers leave tool-call ids out (recorded: test_compatible_api_with_tool_calls_without_id)."""
    data = {"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"type": "function", "function": {"name": "g", "arguments": "{}"}}]}}], "usage": {}}
    ids = [b.id for b in Message.model_validate(translate_response(CHAT, MESSAGES, data)).content]
    assert len(set(ids)) == 2 and all(i.startswith("toolu_") for i in ids)


def test_a_refusal_and_a_length_stop_translate():
    refusal = {"id": "c", "model": "gpt-4.1", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that."}}],
               "usage": {"prompt_tokens": 5, "completion_tokens": 6}}
    m = Message.model_validate(translate_response(CHAT, MESSAGES, refusal))
    assert m.stop_reason == "refusal" and _texts(m) == "I can't help with that."
    cut = {"id": "m", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "max_tokens",
           "stop_sequence": None, "content": [{"type": "text", "text": "abc"}],
           "usage": {"input_tokens": 3, "output_tokens": 5}}
    assert translate_response(MESSAGES, CHAT, cut)["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------ streams

ANTHROPIC_STREAMS = [(n, body_bytes(r)) for n, b, r in ANTHROPIC
                     if is_sse(r) and r["status"]["code"] == 200 and translatable(b)]
CHAT_STREAMS = [(n, body_bytes(r)) for n, _, r in CHATS if is_sse(r) and r["status"]["code"] == 200]


def _sim_streams(tool: bool):
    turn = answers.Turn(text="" if tool else "Paris is the capital of France, of course.",
                        tool=("get_capital", {"country": "France", "détail": "é"}) if tool else None,
                        usage={"input": 40, "read": 12, "write_5m": 3, "write_1h": 0, "output": 9})
    return (b"".join(answers.anthropic_events("claude-sonnet-4-5", turn, 7)),
            b"".join(answers.chat_events("gpt-4.1", turn, 7, include_usage=True)))


SIM = {"text": _sim_streams(False), "tool": _sim_streams(True)}


def _compare_to_anthropic(final_chat, original) -> None:
    msg = final_chat.choices[0].message
    assert (msg.content or "") == _texts(original)
    uses = [b for b in original.content if b.type == "tool_use"]
    assert [(c.id, c.function.name, json.loads(c.function.arguments or "{}")) for c in msg.tool_calls or []] == [
        (u.id, u.name, u.input) for u in uses]
    assert final_chat.choices[0].finish_reason == {"tool_use": "tool_calls", "max_tokens": "length"}.get(
        original.stop_reason, "stop")


@pytest.mark.parametrize("name, sse", ANTHROPIC_STREAMS + [(f"sim-{k}", v[0]) for k, v in SIM.items()],
                         ids=[n for n, _ in ANTHROPIC_STREAMS] + [f"sim-{k}" for k in SIM])
@pytest.mark.parametrize("one_by_one", [True, False])
def test_every_recorded_anthropic_stream_works_with_the_openai_stream_helper(name, sse, one_by_one):
    original = anthropic_final(sse)
    out = run_stream(translate_stream(MESSAGES, CHAT, include_usage=True), sse, one_by_one)
    final = chat_final(out)  # openai's chat.completions.stream helper, on the translated stream
    _compare_to_anthropic(final, original)
    u = original.usage
    read, write = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    assert final.usage.prompt_tokens == u.input_tokens + read + write
    assert final.usage.completion_tokens == u.output_tokens
    assert final.usage.prompt_tokens_details.cached_tokens == read
    # without include_usage the client gets no usage chunk, as OpenAI would send it
    plain = run_stream(translate_stream(MESSAGES, CHAT, include_usage=False), sse)
    chunks = [e.json() for e in SSEParser().feed(plain)]
    assert all(c is None or c.get("choices") for c in chunks) and plain.endswith(b"data: [DONE]\n\n")


def _compare_to_chat(message, original) -> None:
    msg = original.choices[0].message
    assert _texts(message) == (msg.content or "")
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        (c.id, c.function.name, json.loads(c.function.arguments or "{}")) for c in msg.tool_calls or []]


@pytest.mark.parametrize("name, sse", CHAT_STREAMS + [(f"sim-{k}", v[1]) for k, v in SIM.items()],
                         ids=[n for n, _ in CHAT_STREAMS] + [f"sim-{k}" for k in SIM])
@pytest.mark.parametrize("one_by_one", [True, False])
def test_every_recorded_chat_stream_works_with_the_anthropic_stream_helper(name, sse, one_by_one):
    original = chat_final(sse)
    out = run_stream(translate_stream(CHAT, MESSAGES), sse, one_by_one)
    message = anthropic_final(out)  # anthropic's messages.stream(...).get_final_message(), translated
    _compare_to_chat(message, original)
    assert message.stop_reason == {"tool_calls": "tool_use", "length": "max_tokens"}.get(
        original.choices[0].finish_reason, "end_turn")
    # the last chunk that reports usage (a later moderation chunk may say usage: null)
    usage = [e.json()["usage"] for e in SSEParser().feed(sse) if isinstance(e.json(), dict) and e.json().get("usage")][-1]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == usage["prompt_tokens"]
    assert message.usage.cache_read_input_tokens == cached
    assert message.usage.output_tokens == usage["completion_tokens"]


def test_stream_event_types_both_ways():
    """Each event type's translation, one at a time."""
    anthropic_sse, chat_sse = SIM["tool"]
    names = [e.event for e in SSEParser().feed(run_stream(translate_stream(CHAT, MESSAGES), chat_sse))]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1:4] == ["content_block_start", "content_block_delta", "content_block_delta"]
    assert "content_block_stop" in names
    chunks = [e for e in SSEParser().feed(run_stream(translate_stream(MESSAGES, CHAT, True), anthropic_sse))]
    data = [c.json() for c in chunks]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    first_call = data[1]["choices"][0]["delta"]["tool_calls"][0]
    assert first_call["function"] == {"name": "get_capital", "arguments": ""} and first_call["id"].startswith("toolu")
    assert all(d["choices"][0]["delta"]["tool_calls"][0]["index"] == 0 for d in data[2:-3])
    assert data[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert data[-2]["choices"] == [] and data[-2]["usage"]["prompt_tokens"] == 40 + 12 + 3
    assert chunks[-1].data == "[DONE]"


def test_parallel_tool_calls_in_a_chat_stream_become_blocks():
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}

    def chunk(delta, finish=None):
        return f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"

    sse = "".join([
        chunk({"role": "assistant", "content": "Two calls:"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "f", "arguments": '{"x":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        f"data: {json.dumps({**base, 'choices': [], 'usage': {'prompt_tokens': 10, 'completion_tokens': 4}})}\n\n",
        "data: [DONE]\n\n"]).encode()
    message = anthropic_final(run_stream(translate_stream(CHAT, MESSAGES), sse))
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert (message.content[1].id, message.content[1].input) == ("call_a", {"x": 1})
    assert (message.content[2].name, message.content[2].input) == ("g", {})
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 4
    # a server that ends without [DONE] still ends the message
    no_done = sse.replace(b"data: [DONE]\n\n", b"")
    assert anthropic_final(run_stream(translate_stream(CHAT, MESSAGES), no_done)).stop_reason == "tool_use"


def test_an_error_mid_stream_raises_the_clients_own_error():
    anthropic_sse, chat_sse = SIM["text"]
    events = SSEParser().feed(anthropic_sse)
    broken = b"".join(e.raw for e in events[:4]) + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    out = run_stream(translate_stream(MESSAGES, CHAT, True), broken)
    with pytest.raises(openai.APIError, match="Overloaded"):
        chat_final(out)
    chat_events = SSEParser().feed(chat_sse)
    broken = b"".join(e.raw for e in chat_events[:3]) + b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    out = run_stream(translate_stream(CHAT, MESSAGES), broken)
    with pytest.raises(anthropic.APIError, match="boom"):
        anthropic_final(out)


def test_a_cut_stream_stays_cut():
    anthropic_sse, chat_sse = SIM["text"]
    cut = b"".join(e.raw for e in SSEParser().feed(chat_sse)[:4])
    out = run_stream(translate_stream(CHAT, MESSAGES), cut)
    assert b"message_stop" not in out and b"content_block_delta" in out
    cut = b"".join(e.raw for e in SSEParser().feed(anthropic_sse)[:5])
    assert b"[DONE]" not in run_stream(translate_stream(MESSAGES, CHAT, True), cut)


# ------------------------------------------------------------------ errors

ERRORS = [(n, r["status"]["code"], body_bytes(r)) for n, _, r in ANTHROPIC + CHATS if r["status"]["code"] >= 400]


@pytest.mark.parametrize("name, status, raw", ERRORS, ids=[n for n, _, _ in ERRORS])
def test_every_recorded_error_reaches_the_other_sdk_as_its_own_exception(name, status, raw):
    data = json.loads(raw)
    for client, sdk in ((MESSAGES, lambda b: claude(status, b, "application/json").messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])),
                        (CHAT, lambda b: gpt(status, b, "application/json").chat.completions.create(
                            model="m", messages=[{"role": "user", "content": "x"}]))):
        body = translate_error(client, status, data, "openai/gpt-4.1")
        module = anthropic if client is MESSAGES else openai
        with pytest.raises(module.APIStatusError) as err:
            sdk(body)
        assert err.value.status_code == status
        assert "openai/gpt-4.1: " in err.value.message


@pytest.mark.parametrize("status, exc, anthropic_exc", [
    (401, "AuthenticationError", "AuthenticationError"), (404, "NotFoundError", "NotFoundError"),
    (429, "RateLimitError", "RateLimitError"), (529, "InternalServerError", "OverloadedError"),
    (500, "InternalServerError", "InternalServerError")])
def test_error_statuses_map_to_each_sdks_exception(status, exc, anthropic_exc):
    upstream = {"type": "error", "error": {"type": "x", "message": "from upstream"}}
    with pytest.raises(getattr(openai, exc)):
        gpt(status, translate_error(CHAT, status, upstream, "anthropic/claude"), "application/json") \
            .chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(getattr(anthropic, anthropic_exc)):
        claude(status, translate_error(MESSAGES, status, {"error": {"message": "m"}}, "openai/gpt"),
               "application/json").messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
