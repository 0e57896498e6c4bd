"""An OpenAI Chat Completions client served by an Anthropic Messages upstream:
the request into Anthropic's shape, and the answer (JSON or stream) back into
Chat's, chunk by chunk."""
from __future__ import annotations

import json
import time
from typing import Any

from tokenaddons.providers.sse import Event
from tokenaddons.providers.translate.common import (
    TO_ANTHROPIC_CHOICE,
    Translated,
    Untranslatable,
    chat_usage,
    finish_reason,
    split_data_url,
    tool_arguments,
)

# Anthropic requires an output cap; Chat does not. Every current Claude model can
# write this much, so a request without one is not refused for asking too much.
DEFAULT_MAX_TOKENS = 4096
HANDLED = {"model", "messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "top_p", "tools",
           "tool_choice", "parallel_tool_calls", "stream", "stream_options", "user", "n", "response_format"}
# No Anthropic equivalent, and the answer's shape does not depend on them.
DROPPED = {"seed", "frequency_penalty", "presence_penalty", "logit_bias", "store", "metadata", "service_tier",
           "prediction", "reasoning_effort", "verbosity", "safety_identifier", "prompt_cache_key",
           "prompt_cache_retention"}


# ------------------------------------------------------------------ request

def _image(part: dict) -> dict:
    url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else part.get("image_url")
    if not isinstance(url, str):
        raise Untranslatable("an image without a URL")
    inline = split_data_url(url)
    if inline:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file(part: dict) -> dict:
    f = part.get("file") or {}
    inline = split_data_url(f.get("file_data") or "")
    if inline and inline[0] == "application/pdf":
        block = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": inline[1]}}
        if f.get("filename"):
            block["title"] = f["filename"]
        return block
    raise Untranslatable("a file part that is not an inline PDF")


def _blocks(content: Any) -> list[dict]:
    """Chat content (a string or parts) as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out = []
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            if text := part.get(kind) or "":  # Anthropic refuses empty text blocks
                out.append({"type": "text", "text": text})
        elif kind == "image_url":
            out.append(_image(part))
        elif kind == "file":
            out.append(_file(part))
        else:
            raise Untranslatable(f"a {kind!r} content part")
    return out


def _system_text(content: Any) -> str:
    return "".join(b["text"] for b in _blocks(content) if b["type"] == "text")


def _append(messages: list[dict], role: str, blocks: list[dict]) -> None:
    """Consecutive turns of one role become one (Anthropic alternates roles)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _messages(chat: list) -> tuple[list[dict], list[dict]]:
    system: list[dict] = []
    messages: list[dict] = []
    for msg in chat:
        if not isinstance(msg, dict):
            raise Untranslatable("a message that is not an object")
        role = msg.get("role")
        if role in ("system", "developer"):
            if text := _system_text(msg.get("content")):
                system.append({"type": "text", "text": text})
        elif role == "user":
            _append(messages, "user", _blocks(msg.get("content")))
        elif role == "assistant":
            if msg.get("function_call") or msg.get("audio"):
                raise Untranslatable("a legacy function_call or audio in an assistant turn")
            blocks = _blocks(msg.get("content"))
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                               "input": tool_arguments(fn.get("arguments"))})
            _append(messages, "assistant", blocks)  # an empty turn says nothing (and Anthropic refuses it)
        elif role == "tool":
            content = msg.get("content")
            result = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id"),
                      "content": content if isinstance(content, str) else _blocks(content)}
            _append(messages, "user", [result])
        else:
            raise Untranslatable(f"a {role!r} message")
    return system, messages


def _tools(tools: list) -> list[dict]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise Untranslatable(f"the tool type {tool.get('type') if isinstance(tool, dict) else tool!r}")
        fn = tool.get("function") or {}
        item = {"name": fn.get("name"), "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            item["description"] = fn["description"]
        out.append(item)
    return out


def _tool_choice(choice: Any) -> dict:
    if isinstance(choice, str) and choice in TO_ANTHROPIC_CHOICE:
        return {"type": TO_ANTHROPIC_CHOICE[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise Untranslatable(f"tool_choice {choice!r}")


def request(body: dict) -> Translated:
    """A Chat Completions request as an Anthropic Messages request."""
    unknown = sorted(set(body) - HANDLED - DROPPED)
    if unknown:
        raise Untranslatable(f"the request field(s) {', '.join(unknown)}")
    if (body.get("n") or 1) != 1:
        raise Untranslatable("more than one choice (n)")
    fmt = body.get("response_format")
    schema = None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise Untranslatable("response_format json_schema without a schema")
    elif isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise Untranslatable(f"response_format {fmt.get('type')!r}")
    system, messages = _messages(body.get("messages") or [])
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    out: dict = {"model": body.get("model"), "max_tokens": cap, "messages": messages}
    if system:
        out["system"] = system
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    dropped = sorted(k for k in body if k in DROPPED)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's scale ends at 1
        if out["temperature"] != body["temperature"]:
            dropped.append("temperature above 1")
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None and (out.get("tools") or choice == "none"):
        out["tool_choice"] = _tool_choice(choice)
    if body.get("parallel_tool_calls") is False and out.get("tools"):
        out["tool_choice"] = {**out.get("tool_choice", {"type": "auto"}), "disable_parallel_tool_use": True}
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if schema is not None:  # structured output: Anthropic's output_config format
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    if body.get("stream"):
        out["stream"] = True
    return Translated(out, dropped)


# ------------------------------------------------------------------ response

def _message(content: list) -> tuple[dict, bool]:
    texts, calls = [], []
    for block in content or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
        # thinking blocks have no place in a Chat answer
    msg: dict = {"role": "assistant", "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if calls:
        msg["tool_calls"] = calls
    return msg, bool(calls)


def response(data: dict) -> dict:
    """An Anthropic message as a Chat Completions answer."""
    msg, _ = _message(data.get("content"))
    return {"id": data.get("id"), "object": "chat.completion", "created": int(time.time()),
            "model": data.get("model"),
            "choices": [{"index": 0, "message": msg, "logprobs": None,
                         "finish_reason": finish_reason(data.get("stop_reason"))}],
            "usage": chat_usage(data.get("usage"))}


# ------------------------------------------------------------------ stream

class Stream:
    """Anthropic events in, Chat chunks out, as they arrive: text deltas as
    content, each tool_use block as a tool call (its input_json_delta as
    argument deltas), the finish reason, the usage chunk if the client asked
    for one, then [DONE]."""

    def __init__(self, include_usage: bool):
        self.include_usage = include_usage
        self.base: dict = {}
        self.tools: dict[int, int] = {}  # Anthropic block index -> Chat tool-call index
        self.start_usage: dict = {}
        self.usage: dict = {}
        self.stop: str | None = None
        self.done = False

    def _chunk(self, delta: dict, finish: str | None = None) -> Event:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return Event.make({**self.base, "choices": [choice]})

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            data = event.json()
            if not isinstance(data, dict):
                continue
            kind = data.get("type") or event.event
            if kind == "message_start":
                msg = data.get("message") or {}
                self.base = {"id": msg.get("id"), "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": msg.get("model")}
                self.start_usage = msg.get("usage") or {}
                out.append(self._chunk({"role": "assistant", "content": ""}))
            elif kind == "content_block_start":
                block = data.get("content_block") or {}
                if block.get("type") == "tool_use":
                    n = self.tools[data.get("index", 0)] = len(self.tools)
                    out.append(self._chunk({"tool_calls": [{"index": n, "id": block.get("id"), "type": "function",
                                                            "function": {"name": block.get("name"),
                                                                         "arguments": ""}}]}))
                elif block.get("type") == "text" and block.get("text"):
                    out.append(self._chunk({"content": block["text"]}))
            elif kind == "content_block_delta":
                delta = data.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    out.append(self._chunk({"content": delta["text"]}))
                elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                    n = self.tools.get(data.get("index", 0))
                    if n is not None:
                        out.append(self._chunk({"tool_calls": [{"index": n, "function": {
                            "arguments": delta["partial_json"]}}]}))
                # thinking and signature deltas have no place in a Chat answer
            elif kind == "message_delta":
                self.stop = (data.get("delta") or {}).get("stop_reason") or self.stop
                self.usage = {**self.start_usage, **{k: v for k, v in (data.get("usage") or {}).items()
                                                     if v is not None}}
            elif kind == "message_stop":
                out += self._finish()
            elif kind == "error":
                err = data.get("error") or {}
                out.append(Event.make({"error": {"message": err.get("message") or "upstream error",
                                                 "type": err.get("type") or "api_error", "param": None,
                                                 "code": err.get("type")}}))
            # ping, content_block_stop: nothing to say in Chat
        return out

    def end(self) -> list[Event]:
        return []  # no message_stop: the stream was cut, and the client sees it cut

    def _finish(self) -> list[Event]:
        if self.done:
            return []
        self.done = True
        out = [self._chunk({}, finish_reason(self.stop))]
        if self.include_usage:
            out.append(Event.make({**self.base, "choices": [], "usage": chat_usage(self.usage or self.start_usage)}))
        out.append(Event.make("[DONE]"))
        return out
