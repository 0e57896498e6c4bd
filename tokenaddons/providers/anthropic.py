"""Anthropic Messages API (/v1/messages, /v1/messages/count_tokens)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.base import Api, StreamState, TextRef, walk_strings
from tokenaddons.providers.sse import Event

ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "upstream": "api_error",
}


def usage_of(u: dict | None) -> Usage | None:
    if not isinstance(u, dict):
        return None
    read = u.get("cache_read_input_tokens") or 0
    write = u.get("cache_creation_input_tokens") or 0
    split = u.get("cache_creation") or {}
    w1h = split.get("ephemeral_1h_input_tokens") or 0
    # Without the split (older API versions) every write is a 5-minute write.
    w5m = split.get("ephemeral_5m_input_tokens", write - w1h) or 0
    return Usage(
        input_tokens=(u.get("input_tokens") or 0) + read + write,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_5m_tokens=w5m,
        cache_write_1h_tokens=w1h,
        output_tokens=u.get("output_tokens") or 0,
    )


def _merge(start: dict, delta: dict) -> dict:
    """message_delta carries the final cumulative totals; fields it omits keep
    their message_start values."""
    merged = dict(start)
    merged.update({k: v for k, v in delta.items() if v is not None})
    return merged


class MessagesStream(StreamState):
    def __init__(self) -> None:
        super().__init__()
        self._start_usage: dict = {}

    def on_event(self, event: Event) -> None:
        data = event.json()
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "message_start":
            msg = data.get("message") or {}
            self.model = msg.get("model")
            self._start_usage = msg.get("usage") or {}
            self.usage = usage_of(self._start_usage)
        elif kind == "message_delta":
            self.usage = usage_of(_merge(self._start_usage, data.get("usage") or {}))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            self.text.append(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
        elif kind == "message_stop":
            self.complete = True
        elif kind == "error":
            self.error_type = (data.get("error") or {}).get("type", "error")


def _content_refs(content: Any, role: str) -> Iterator[TextRef]:
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            yield TextRef(block, "text", role)
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, str):
                yield TextRef(block, "content", "tool")
            else:
                yield from _content_refs(inner, "tool")
        elif kind == "tool_use":
            yield from walk_strings(block.get("input"), "tool_input")
        elif kind == "document":
            src = block.get("source") or {}
            if src.get("type") == "text" and isinstance(src.get("data"), str):
                yield TextRef(src, "data", "tool" if role == "tool" else role)
            elif src.get("type") == "content":
                yield from _content_refs(src.get("content"), role)
        # thinking blocks are signed (editing them invalidates the turn);
        # images and base64 documents are media, not text.


class Messages(Api):
    name = "anthropic.messages"
    provider = "anthropic"
    suffix = "/v1/messages"

    def usage(self, response: Any) -> Usage | None:
        return usage_of(response.get("usage")) if isinstance(response, dict) else None

    def stream_state(self) -> StreamState:
        return MessagesStream()

    def error_body(self, status: int, kind: str, message: str) -> bytes:
        return json.dumps({"type": "error", "error": {
            "type": ERROR_TYPES.get(kind, "api_error"), "message": message}}).encode()

    def error_type(self, response: Any) -> str | None:
        if isinstance(response, dict) and isinstance(response.get("error"), dict):
            return response["error"].get("type")
        return None

    def text_refs(self, body: Any) -> Iterator[TextRef]:
        if not isinstance(body, dict):
            return
        system = body.get("system")
        if isinstance(system, str):
            yield TextRef(body, "system", "system")
        else:
            yield from _content_refs(system, "system")
        for msg in body.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            role = msg.get("role") if msg.get("role") in ("user", "assistant", "system") else "user"
            if isinstance(msg.get("content"), str):
                yield TextRef(msg, "content", role)
            else:
                yield from _content_refs(msg.get("content"), role)

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        if isinstance(response, dict):
            yield from _content_refs(response.get("content"), "assistant")


class CountTokens(Messages):
    """Free to call: metered with zero tokens billed."""

    name = "anthropic.count_tokens"
    suffix = "/v1/messages/count_tokens"

    def usage(self, response: Any) -> Usage | None:
        return Usage()

    def is_stream(self, body: Any, path: str) -> bool:
        return False


MESSAGES = Messages()
COUNT_TOKENS = CountTokens()
