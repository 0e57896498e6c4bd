"""Anthropic Messages API (/v1/messages, /v1/messages/count_tokens)."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.base import (
    OPAQUE_TYPES,
    Api,
    StreamState,
    TextRef,
    in_turns,
    string_ref,
    strings_into,
    walk_block,
)
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


TOOL_USES = ("tool_use", "server_tool_use", "mcp_tool_use")
TOOL_RESULTS = ("tool_result", "mcp_tool_result")


def _content_refs(content: Any, role: str, call: str | None = None) -> list[TextRef]:
    """Every user- or tool-written string of a list of content blocks (the
    request schema's ContentBlockParam: text, document, search_result,
    tool_use and tool_result, the server tools' results, and blocks to come)."""
    out: list[TextRef] = []
    _content_into(out, content, role, call)
    return out


def _content_into(out: list[TextRef], content: Any, role: str, call: str | None = None) -> None:
    """_content_refs, appending to `out` (one list for the whole body: the walk
    runs on every request)."""
    if not isinstance(content, list):
        return
    add = out.append
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":  # the commonest blocks first, tested inline
            if type(block.get("text")) is str:
                add(TextRef(block, "text", role, False, False, call))
            if block.get("citations"):
                out.extend(walk_block(block["citations"], role, call))  # cited_text, titles
        elif kind in TOOL_RESULTS:
            answers = block.get("tool_use_id")
            if isinstance(block.get("content"), str):
                add(TextRef(block, "content", "tool", False, False, answers))
            else:
                _content_into(out, block.get("content"), "tool", answers)
        elif kind in TOOL_USES:
            strings_into(out, block.get("input"), "tool_input")
        elif kind in OPAQUE_TYPES or kind == "tool_reference":
            continue  # media, files, and signed thinking (editing it invalidates the turn)
        elif kind == "document":
            out.extend(_document(block, role, call))
        elif kind == "search_result":
            out.extend(string_ref(block, "source", role, call))
            out.extend(string_ref(block, "title", role, call))
            _content_into(out, block.get("content"), role, call)
        else:  # the server tools' results (web search/fetch, code execution, text editor...), blocks to come
            out.extend(walk_block(block, "tool" if is_result(kind) else role, call))


def is_result(kind: Any) -> bool:
    """A block type whose content a tool produced: tool_result, a server tool's result."""
    return kind in TOOL_RESULTS or (str(kind).endswith("_result") and kind not in OPAQUE_TYPES)


def result_refs(block: dict) -> Iterator[TextRef] | list[TextRef]:
    """The tool-written strings of one result block (see is_result)."""
    if block.get("type") == "tool_result" and isinstance(block.get("content"), str):
        return [TextRef(block, "content", "tool", call=block.get("tool_use_id"))]  # most of them: no generator
    return _content_refs([block], "user")


def tool_call(block: dict) -> tuple[str, Any]:
    """(tool name, input) of a tool_use block."""
    return block.get("name") or "", block.get("input")


def _document(block: dict, role: str, call: str | None = None) -> Iterator[TextRef]:
    yield from string_ref(block, "title", role, call)
    yield from string_ref(block, "context", role, call)
    src = block.get("source")
    if not isinstance(src, dict):
        return
    if src.get("type") == "text":
        yield from string_ref(src, "data", role, call)
    elif src.get("type") == "content":
        if isinstance(src.get("content"), str):
            yield TextRef(src, "content", role, call=call)
        else:
            yield from _content_refs(src.get("content"), role, call)
    # base64, url and file sources are media or references, not text


def _message_refs(msg: Any) -> list[TextRef]:
    """The texts of one message (`Messages.text_refs`)."""
    out: list[TextRef] = []
    if isinstance(msg, dict):
        role = msg.get("role") if msg.get("role") in ("user", "assistant", "system") else "user"
        if isinstance(msg.get("content"), str):
            out.append(TextRef(msg, "content", role))
        else:
            _content_into(out, msg.get("content"), role)
    return out


class Messages(Api):
    name = "anthropic.messages"
    provider = "anthropic"
    suffix = "/v1/messages"
    turns_key = "messages"

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

    def text_refs(self, body: Any, only: Sequence[int] | None = None) -> list[TextRef]:
        out: list[TextRef] = []
        if not isinstance(body, dict):
            return out
        system = body.get("system")
        if isinstance(system, str):
            out.append(TextRef(body, "system", "system"))
        else:
            _content_into(out, system, "system")
        out.extend(in_turns(body.get("messages"), only, _message_refs))
        out.extend(string_ref(body.get("metadata"), "user_id", "metadata"))
        return out

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        if isinstance(response, dict):
            yield from _content_refs(response.get("content"), "assistant")

    def tool_refs(self, body: Any) -> Iterator[TextRef]:
        # the blocks text_refs reads as tool output: tool results, and the server tools' results
        for msg in body.get("messages") or [] if isinstance(body, dict) else []:
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, list):
                yield from _content_refs([b for b in content if isinstance(b, dict) and is_result(b.get("type"))],
                                         "user")

    def tool_calls(self, body: Any) -> dict[str, tuple[str, Any]]:
        out = {}
        for msg in body.get("messages") or [] if isinstance(body, dict) else []:
            content = msg.get("content") if isinstance(msg, dict) else None
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_use" and block.get("id"):
                    out[block["id"]] = tool_call(block)
        return out


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
