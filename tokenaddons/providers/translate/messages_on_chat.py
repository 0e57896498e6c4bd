"""An Anthropic Messages client served by an OpenAI Chat Completions upstream:
the request into Chat's shape, and the answer (JSON or stream) back into
Anthropic's, event by event."""
from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from tokenaddons.providers.sse import Event
from tokenaddons.providers.translate.common import (
    TO_CHAT_CHOICE,
    Translated,
    Untranslatable,
    data_url,
    messages_usage,
    stop_reason,
)

# Request fields with a Chat equivalent, and those dropped because Chat has none
# and the answer does not depend on them (recorded as dropped).
HANDLED = {"model", "messages", "system", "max_tokens", "tools", "tool_choice", "stop_sequences", "temperature",
           "top_p", "stream", "metadata", "thinking", "output_config"}
# thinking: the other model answers without visible thinking (thinking blocks already in the
# conversation are another matter: they cannot be carried over); context_management edits
# history on Anthropic's side, the other side gets it whole.
DROPPED = {"top_k", "service_tier", "cache_control", "context_management"}
USER_MAX = 64  # longer end-user ids (Claude Code's are JSON) are sent hashed
MAX_STOPS = 4  # Chat accepts at most four stop sequences


# ------------------------------------------------------------------ request

def _image(block: dict) -> dict:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        return {"type": "image_url", "image_url": {"url": data_url(src.get("media_type", "image/png"), src["data"])}}
    if src.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": src["url"]}}
    raise Untranslatable(f"an image from a {src.get('type')!r} source")


def _document(block: dict) -> list[dict]:
    src = block.get("source") or {}
    kind = src.get("type")
    if kind == "base64" and src.get("media_type") == "application/pdf":
        name = (block.get("title") or "document") + ".pdf"
        return [{"type": "file", "file": {"filename": name, "file_data": data_url("application/pdf", src["data"])}}]
    if kind == "text":
        return [{"type": "text", "text": src.get("data", "")}]
    if kind == "content":
        return _user_parts(src.get("content") if isinstance(src.get("content"), list) else
                           [{"type": "text", "text": src.get("content") or ""}])
    raise Untranslatable(f"a document from a {kind!r} source")


def _user_parts(blocks: list) -> list[dict]:
    parts: list[dict] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "document":
            parts.extend(_document(block))
        else:
            raise Untranslatable(f"a {kind!r} content block")
    return parts


def _text_of(blocks: list[dict]) -> str:
    return "".join(p["text"] for p in blocks if p.get("type") == "text")


def _tool_result(block: dict) -> tuple[dict, list[dict]]:
    """A tool_result as a Chat tool message, plus images it held (Chat's tool
    messages take text only: the images follow in a user message)."""
    inner = block.get("content")
    parts = _user_parts(inner) if isinstance(inner, list) else [{"type": "text", "text": inner or ""}]
    media = [p for p in parts if p["type"] != "text"]
    text = _text_of(parts) or ("(see the attached content)" if media else "")
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}, media


def _user(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise Untranslatable("a message whose content is neither text nor blocks")
    out, media, rest = [], [], []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            message, attached = _tool_result(block)
            out.append(message)
            media.extend(attached)
        else:
            rest.append(block)
    parts = media + _user_parts(rest)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant(content: Any) -> dict:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for block in content if isinstance(content, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function", "function": {
                "name": block.get("name"), "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}})
        else:  # thinking is signed and provider-specific; server tools ran at Anthropic
            raise Untranslatable(f"a {kind!r} block in the conversation")
    # Chat wants null content beside tool calls, and a string in an empty turn
    out: dict = {"role": "assistant", "content": "".join(texts) or (None if calls else "")}
    if calls:
        out["tool_calls"] = calls
    return out


def _system(system: Any) -> dict | None:
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    if isinstance(system, list) and system:
        return {"role": "system", "content": _text_of(_user_parts(system))}
    return None


def _tools(tools: list) -> list[dict]:
    out = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") not in (None, "custom"):
            raise Untranslatable(f"the server tool {tool.get('type')!r}")
        fn = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict) -> str | dict:
    kind = choice.get("type")
    if kind in TO_CHAT_CHOICE:
        return TO_CHAT_CHOICE[kind]
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise Untranslatable(f"tool_choice {kind!r}")


def request(body: dict) -> Translated:
    """An Anthropic Messages request as a Chat Completions request."""
    unknown = sorted(set(body) - HANDLED - DROPPED)
    if unknown:
        raise Untranslatable(f"the request field(s) {', '.join(unknown)}")
    dropped = sorted(k for k in body if k in DROPPED)
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled"):
        dropped.append("thinking")
    messages = []
    if (system := _system(body.get("system"))) is not None:
        messages.append(system)
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            raise Untranslatable("a message that is not an object")
        role = msg.get("role")
        if role == "assistant":
            messages.append(_assistant(msg.get("content")))
        elif role == "system":  # a system turn mid-conversation: Chat has them too
            if (turn := _system(msg.get("content"))) is not None:
                messages.append(turn)
        else:
            messages.extend(_user(msg.get("content")))
    out: dict = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("max_tokens"), int):
        out["max_completion_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        if len(stops) > MAX_STOPS:
            raise Untranslatable(f"{len(stops)} stop sequences (Chat takes {MAX_STOPS})")
        out["stop"] = list(stops)
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if out.get("tools") or choice.get("type") == "none":
            out["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use") and out.get("tools"):
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user if len(user) <= USER_MAX else hashlib.sha256(user.encode()).hexdigest()[:32]
    config = body.get("output_config")
    if isinstance(config, dict):
        unknown = sorted(set(config) - {"format", "effort"})
        if unknown:
            raise Untranslatable(f"output_config {', '.join(unknown)}")
        if config.get("effort") is not None:
            dropped.append("output_config.effort")
        fmt = config.get("format")
        if isinstance(fmt, dict):
            if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
                raise Untranslatable(f"output format {fmt.get('type')!r}")
            out["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # Anthropic's answer always carries usage
    return Translated(out, dropped)


# ------------------------------------------------------------------ response

def _tool_input(arguments: Any) -> dict:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_arguments": arguments}  # kept, not lost: the model wrote something that is not JSON
    return value if isinstance(value, dict) else {"_arguments": value}


def response(data: dict) -> dict:
    """A Chat Completions answer as an Anthropic message."""
    choice = (data.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict] = []
    text = msg.get("content")
    if isinstance(text, list):  # some compatible servers answer with parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    if msg.get("refusal"):
        content.append({"type": "text", "text": msg["refusal"]})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        # some compatible servers leave the id out; Anthropic's clients need one to answer the call
        content.append({"type": "tool_use", "id": call.get("id") or _new_id(), "name": fn.get("name"),
                        "input": _tool_input(fn.get("arguments"))})
    stop = "refusal" if msg.get("refusal") and not text else stop_reason(choice.get("finish_reason"))
    return {"id": data.get("id"), "type": "message", "role": "assistant", "model": data.get("model"),
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": messages_usage(data.get("usage"))}


# ------------------------------------------------------------------ stream

class Stream:
    """Chat chunks in, Anthropic events out, as they arrive: message_start at the
    first chunk, a content block per text run and per tool call (argument
    deltas as input_json_delta), message_delta with the final usage at the end."""

    def __init__(self) -> None:
        self.started = False
        self.index = -1  # Anthropic block index of the open block
        self.open: str | None = None  # "text" | "tool" | None
        self.tools: dict[int, int] = {}  # Chat tool-call index -> Anthropic block index
        self.finish: str | None = None
        self.refused = False
        self.usage: dict | None = None
        self.done = False

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if event.data == "[DONE]":
                out += self._finish()
                continue
            data = event.json()
            if not isinstance(data, dict):
                continue  # keep-alives, comments
            if isinstance(data.get("error"), dict) or isinstance(data.get("error"), str):
                out.append(_error_event(data))
                continue
            if not self.started:
                out.append(self._start(data))
            if data.get("usage"):
                self.usage = data["usage"]
            for choice in data.get("choices") or []:
                out += self._choice(choice)
        return out

    def end(self) -> list[Event]:
        # Some compatible servers end without [DONE]; a stream cut before its
        # finish reason stays cut (the client sees it end early, as it did).
        return self._finish() if self.finish is not None else []

    def _start(self, data: dict) -> Event:
        self.started = True
        message = {"id": data.get("id"), "type": "message", "role": "assistant", "model": data.get("model"),
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 0, "output_tokens": 0}}
        return Event.make({"type": "message_start", "message": message}, "message_start")

    def _choice(self, choice: dict) -> list[Event]:
        out: list[Event] = []
        delta = choice.get("delta") or {}
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self.refused = self.refused or key == "refusal"
                if self.open != "text":
                    out += self._open({"type": "text", "text": ""}, "text")
                out.append(Event.make({"type": "content_block_delta", "index": self.index,
                                       "delta": {"type": "text_delta", "text": text}}, "content_block_delta"))
        for call in delta.get("tool_calls") or []:
            n = call.get("index", 0)
            fn = call.get("function") or {}
            if n not in self.tools:
                block = {"type": "tool_use", "id": call.get("id") or _new_id(), "name": fn.get("name") or "",
                         "input": {}}
                out += self._open(block, "tool")
                self.tools[n] = self.index
            if fn.get("arguments"):
                out.append(Event.make({"type": "content_block_delta", "index": self.tools[n], "delta": {
                    "type": "input_json_delta", "partial_json": fn["arguments"]}}, "content_block_delta"))
        if choice.get("finish_reason"):
            self.finish = choice["finish_reason"]
            out += self._close()
        return out

    def _open(self, block: dict, kind: str) -> list[Event]:
        out = self._close()
        self.index += 1
        self.open = kind
        out.append(Event.make({"type": "content_block_start", "index": self.index, "content_block": block},
                              "content_block_start"))
        return out

    def _close(self) -> list[Event]:
        if self.open is None:
            return []
        self.open = None
        return [Event.make({"type": "content_block_stop", "index": self.index}, "content_block_stop")]

    def _finish(self) -> list[Event]:
        if self.done or not self.started:
            return []
        self.done = True
        stop = "refusal" if self.refused and self.finish in (None, "stop", "content_filter") else stop_reason(self.finish)
        out = self._close()
        out.append(Event.make({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                               "usage": messages_usage(self.usage)}, "message_delta"))
        out.append(Event.make({"type": "message_stop"}, "message_stop"))
        return out


def _new_id() -> str:
    """A tool call's id where a compatible server gave none (each must be unique in a conversation)."""
    return "toolu_" + secrets.token_hex(12)


def _error_event(data: dict) -> Event:
    err = data.get("error")
    message = err.get("message") if isinstance(err, dict) else str(err)
    return Event.make({"type": "error", "error": {"type": "api_error", "message": message or "upstream error"}},
                      "error")

