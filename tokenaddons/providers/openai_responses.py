"""OpenAI Responses API (/v1/responses)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.base import StreamState, TextRef, parsed_arguments
from tokenaddons.providers.openai_chat import ROLES, OpenAIApi, content_refs
from tokenaddons.providers.sse import Event

TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def usage_of(u: dict | None) -> Usage | None:
    if not isinstance(u, dict):
        return None
    return Usage(
        input_tokens=u.get("input_tokens") or 0,
        cache_read_tokens=(u.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        output_tokens=u.get("output_tokens") or 0,
        reasoning_tokens=(u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


class ResponsesStream(StreamState):
    def on_event(self, event: Event) -> None:
        data = event.json()
        if not isinstance(data, dict):
            return
        kind = data.get("type") or event.event
        resp = data.get("response")
        if isinstance(resp, dict):
            self.model = resp.get("model") or self.model
            if resp.get("usage"):
                self.usage = usage_of(resp["usage"])
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            self.text.append(data.get("delta") or "")
        elif kind == "response.completed":
            self.complete = True
        elif kind in ("response.failed", "response.incomplete"):
            self.complete = True
            self.error_type = kind.split(".")[1]
        elif kind == "error":
            self.error_type = data.get("code") or "error"


class Responses(OpenAIApi):
    name = "openai.responses"
    suffix = "/responses"
    usage_of = staticmethod(usage_of)

    def stream_state(self) -> StreamState:
        return ResponsesStream()

    def text_refs(self, body: Any) -> Iterator[TextRef]:
        if not isinstance(body, dict):
            return
        if isinstance(body.get("instructions"), str):
            yield TextRef(body, "instructions", "system")
        items = body.get("input")
        if isinstance(items, str):
            yield TextRef(body, "input", "user")
            return
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            if kind == "message":
                yield from content_refs(item, "content", ROLES.get(item.get("role"), "user"))
            elif kind in ("function_call", "custom_tool_call") and isinstance(item.get("arguments"), str):
                yield TextRef(item, "arguments", "tool_input", json_text=True)
            elif kind in ("function_call_output", "custom_tool_call_output"):
                yield from content_refs(item, "output", "tool", item.get("call_id"))

    def tool_calls(self, body: Any) -> dict[str, tuple[str, Any]]:
        out = {}
        items = body.get("input") if isinstance(body, dict) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not item.get("call_id"):
                continue
            if item.get("type") == "function_call":
                out[item["call_id"]] = (item.get("name") or "", parsed_arguments(item.get("arguments")))
            elif item.get("type") == "custom_tool_call":
                out[item["call_id"]] = (item.get("name") or "", item.get("input"))
            elif item.get("type") == "local_shell_call":
                out[item["call_id"]] = ("local_shell", (item.get("action") or {}).get("command"))
        return out

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        if not isinstance(response, dict):
            return
        for item in response.get("output") or []:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "message":
                yield from content_refs(item, "content", "assistant")
            elif isinstance(item.get("arguments"), str):
                yield TextRef(item, "arguments", "tool_input", json_text=True)


RESPONSES = Responses()
