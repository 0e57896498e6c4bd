"""OpenAI Chat Completions (/v1/chat/completions)."""
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
    parsed_arguments,
    string_ref,
    walk_block,
)
from tokenaddons.providers.sse import Event

ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_api_key",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "rate_limit": "rate_limit_exceeded",
    "overloaded": "server_error",
    "upstream": "server_error",
}

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}


def usage_of(u: dict | None) -> Usage | None:
    if not isinstance(u, dict):
        return None
    details = u.get("prompt_tokens_details") or {}
    out_details = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=u.get("prompt_tokens") or 0,
        cache_read_tokens=details.get("cached_tokens") or 0,
        output_tokens=u.get("completion_tokens") or 0,
        reasoning_tokens=out_details.get("reasoning_tokens") or 0,
    )


def is_usage_only_chunk(data: Any) -> bool:
    return isinstance(data, dict) and data.get("choices") == [] and bool(data.get("usage"))


class ChatStream(StreamState):
    def on_event(self, event: Event) -> None:
        if event.data == "[DONE]":
            self.complete = True
            return
        data = event.json()
        if not isinstance(data, dict):
            return
        if "error" in data:
            self.error_type = CHAT.error_type(data) or "error"
            return
        self.model = data.get("model") or self.model
        if data.get("usage"):
            self.usage = usage_of(data["usage"])
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                self.text.append((call.get("function") or {}).get("arguments") or "")


def content_refs(msg: dict, key: str, role: str, call: str | None = None) -> Iterator[TextRef]:
    """A message's content: a string, or a list of parts (shared with Responses):
    text and refusals, and a file's name; never images, audio or file data."""
    content = msg.get(key)
    if isinstance(content, str):
        yield TextRef(msg, key, role, call=call)
    elif isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if part.get("type") in OPAQUE_TYPES:
                continue
            yield from string_ref(part, "text", role, call)
            yield from string_ref(part, "refusal", role, call)
            yield from string_ref(part, "filename", role, call)  # Responses' input_file
            yield from string_ref(part.get("file"), "filename", role, call)  # Chat's file part
            yield from walk_block(part.get("annotations"), role, call)  # output_text citations


def _answers(msg: dict) -> str | None:
    """The tool call a tool message answers (legacy function messages: by name)."""
    return msg.get("tool_call_id") or msg.get("name")


def request_metadata(body: dict) -> Iterator[TextRef]:
    """What the caller tags a request with (both OpenAI APIs): an end user's id
    is often an e-mail address."""
    yield from string_ref(body, "user", "metadata")
    yield from string_ref(body, "safety_identifier", "metadata")
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for key in list(metadata):
            yield from string_ref(metadata, key, "metadata")


class OpenAIApi(Api):
    """What OpenAI's two APIs share: the error shape and where usage sits."""

    provider = "openai"

    @staticmethod
    def usage_of(u: dict | None) -> Usage | None:
        raise NotImplementedError

    def usage(self, response: Any) -> Usage | None:
        return self.usage_of(response.get("usage")) if isinstance(response, dict) else None

    def error_body(self, status: int, kind: str, message: str) -> bytes:
        code = ERROR_TYPES.get(kind, "server_error")
        return json.dumps({"error": {"message": message, "type": code, "param": None, "code": code}}).encode()

    def error_type(self, response: Any) -> str | None:
        if isinstance(response, dict) and isinstance(response.get("error"), dict):
            err = response["error"]
            return err.get("code") or err.get("type")
        return None


def _message_refs(msg: Any) -> Iterator[TextRef]:
    """The texts of one message (`ChatCompletions.text_refs`)."""
    if not isinstance(msg, dict):
        return
    role = ROLES.get(msg.get("role"), "user")
    yield from content_refs(msg, "content", role, _answers(msg) if role == "tool" else None)
    yield from string_ref(msg, "refusal", role)
    for call in msg.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            yield TextRef(fn, "arguments", "tool_input", json_text=True)
        yield from string_ref(call.get("custom"), "input", "tool_input")  # custom tools: free text
    fn = msg.get("function_call")  # the legacy function calling
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        yield TextRef(fn, "arguments", "tool_input", json_text=True)


class ChatCompletions(OpenAIApi):
    name = "openai.chat"
    suffix = "/chat/completions"
    turns_key = "messages"
    usage_of = staticmethod(usage_of)

    def stream_state(self) -> StreamState:
        return ChatStream()

    def prepare_stream_usage(self, body: Any) -> bool:
        opts = body.get("stream_options")
        if isinstance(opts, dict) and opts.get("include_usage"):
            return False
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return True

    def hide_usage_event(self, event: Event) -> bool:
        return is_usage_only_chunk(event.json())

    def text_refs(self, body: Any, only: Sequence[int] | None = None) -> Iterator[TextRef]:
        if not isinstance(body, dict):
            return
        yield from in_turns(body.get("messages"), only, _message_refs)
        prediction = body.get("prediction")
        if isinstance(prediction, dict):  # predicted output: the file being regenerated
            yield from content_refs(prediction, "content", "prediction")
        yield from request_metadata(body)

    def tool_refs(self, body: Any) -> Iterator[TextRef]:
        for msg in body.get("messages") or [] if isinstance(body, dict) else []:
            if isinstance(msg, dict) and ROLES.get(msg.get("role")) == "tool":
                yield from content_refs(msg, "content", "tool", _answers(msg))

    def tool_calls(self, body: Any) -> dict[str, tuple[str, Any]]:
        out = {}
        for msg in body.get("messages") or [] if isinstance(body, dict) else []:
            for call in (msg.get("tool_calls") or []) if isinstance(msg, dict) else []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and call.get("id"):
                    out[call["id"]] = (fn.get("name") or "", parsed_arguments(fn.get("arguments")))
        return out

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        if not isinstance(response, dict):
            return
        for choice in response.get("choices") or []:
            msg = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(msg, dict):
                continue
            yield from content_refs(msg, "content", "assistant")
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    yield TextRef(fn, "arguments", "tool_input", json_text=True)


CHAT = ChatCompletions()
