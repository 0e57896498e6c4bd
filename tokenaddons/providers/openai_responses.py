"""OpenAI Responses API (/v1/responses)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.base import (
    OPAQUE_TYPES,
    StreamState,
    TextRef,
    in_turns,
    parsed_arguments,
    string_ref,
    walk_block,
)
from tokenaddons.providers.openai_chat import ROLES, OpenAIApi, content_refs, request_metadata
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


JSON_ARGUMENTS = ("function_call", "mcp_call", "mcp_approval_request")  # `arguments` is JSON text
DEFINITIONS = ("additional_tools", "mcp_list_tools")  # tool definitions, like the request's `tools`


def _item_refs(item: dict) -> Iterator[TextRef]:
    """Every user- or tool-written string of one input item (the request
    schema's ResponseInputItemParam: messages, every tool's calls and outputs,
    reasoning summaries, and items to come)."""
    kind = item.get("type", "message")
    if kind == "message":
        yield from content_refs(item, "content", ROLES.get(item.get("role"), "user"))
    elif kind in JSON_ARGUMENTS:
        if isinstance(item.get("arguments"), str):
            yield TextRef(item, "arguments", "tool_input", json_text=True)
        yield from string_ref(item, "output", "tool", item.get("call_id"))
        yield from walk_block(item.get("error"), "tool", item.get("call_id"))
    elif kind == "custom_tool_call":  # free text: Codex sends apply_patch this way
        yield from string_ref(item, "input", "tool_input")
    elif kind in ("function_call_output", "custom_tool_call_output"):
        yield from content_refs(item, "output", "tool", item.get("call_id"))
    elif kind == "reasoning":  # summaries and reasoning text; encrypted_content is opaque
        for key in ("summary", "content"):
            for part in item.get(key) or []:
                yield from string_ref(part, "text", "assistant")
    elif kind not in DEFINITIONS and kind not in OPAQUE_TYPES:
        # every other tool's call and output (shell, apply_patch, computer, web and file search,
        # code interpreter, MCP...), and items to come
        yield from walk_block(item, "tool" if kind.endswith("_output") else "tool_input", item.get("call_id"))


def _turn_refs(item: Any) -> Iterator[TextRef]:
    """The texts of one input item (`Responses.text_refs`)."""
    if isinstance(item, dict):
        yield from _item_refs(item)


class Responses(OpenAIApi):
    name = "openai.responses"
    suffix = "/responses"
    turns_key = "input"
    usage_of = staticmethod(usage_of)

    def stream_state(self) -> StreamState:
        return ResponsesStream()

    def text_refs(self, body: Any, only: Sequence[int] | None = None) -> Iterator[TextRef]:
        if not isinstance(body, dict):
            return
        yield from string_ref(body, "instructions", "system")
        items = body.get("input")
        if isinstance(items, str):
            yield TextRef(body, "input", "user")
        yield from in_turns(items, only, _turn_refs)
        prompt = body.get("prompt")  # a stored prompt's variables
        if isinstance(prompt, dict) and isinstance(prompt.get("variables"), dict):
            variables = prompt["variables"]
            for key in list(variables):
                if isinstance(variables[key], str):
                    yield TextRef(variables, key, "user")
                else:
                    yield from content_refs(variables, key, "user")
        yield from request_metadata(body)

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
