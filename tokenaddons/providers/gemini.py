"""Google Gemini generateContent / streamGenerateContent (/v1beta/models/M:method)."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.base import Api, StreamState, TextRef, in_turns, string_ref, walk_block, walk_strings
from tokenaddons.providers.sse import Event

PATH = re.compile(r"/models/(?P<model>[^/:?]+):(?P<method>generateContent|streamGenerateContent)\b")
STATUS = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "overloaded": "UNAVAILABLE",
    "upstream": "INTERNAL",
}


def usage_of(u: dict | None) -> Usage | None:
    if not isinstance(u, dict):
        return None
    thoughts = u.get("thoughtsTokenCount") or 0
    return Usage(
        # tool-use prompt tokens are billed as input but reported apart
        input_tokens=(u.get("promptTokenCount") or 0) + (u.get("toolUsePromptTokenCount") or 0),
        cache_read_tokens=u.get("cachedContentTokenCount") or 0,
        output_tokens=(u.get("candidatesTokenCount") or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


class GenerateStream(StreamState):
    def on_event(self, event: Event) -> None:
        data = event.json()
        if not isinstance(data, dict):
            return
        if "error" in data:
            self.error_type = (data["error"] or {}).get("status", "error")
            return
        self.model = data.get("modelVersion") or self.model
        if data.get("usageMetadata"):
            self.usage = usage_of(data["usageMetadata"])  # cumulative; the last one is final
        for cand in data.get("candidates") or []:
            for part in (cand.get("content") or {}).get("parts") or []:
                if isinstance(part.get("text"), str):
                    self.text.append(part["text"])
            if cand.get("finishReason"):
                self.complete = True


def _field(part: dict, name: str) -> Any:
    """A part's field, by its JSON name or its proto (snake_case) name: the API takes both."""
    value = part.get(name)
    return value if value is not None else part.get(SNAKE.get(name, name))


SNAKE = {"functionCall": "function_call", "functionResponse": "function_response",
         "executableCode": "executable_code", "codeExecutionResult": "code_execution_result",
         "systemInstruction": "system_instruction"}
MEDIA = ("inlineData", "inline_data", "fileData", "file_data")


def _parts(content: Any, role: str) -> Iterator[TextRef]:
    """Every user- or tool-written string of a Content's parts: text, function
    calls and responses, code and its results; never thoughts (signed with the
    turn), inline or file data."""
    if not isinstance(content, dict):
        return
    for part in content.get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            yield TextRef(part, "text", role)
        elif isinstance(call := _field(part, "functionCall"), dict):
            yield from walk_strings(call.get("args"), "tool_input")
        elif isinstance(answer := _field(part, "functionResponse"), dict):
            yield from walk_strings(answer.get("response"), "tool", answer.get("id"))
        elif isinstance(code := _field(part, "executableCode"), dict):
            yield from string_ref(code, "code", "tool_input")
        elif isinstance(result := _field(part, "codeExecutionResult"), dict):
            yield from string_ref(result, "output", "tool")
        elif not any(k in part for k in MEDIA):
            yield from walk_block(part, role)  # parts to come


def _content_refs(content: Any) -> Iterator[TextRef]:
    """The texts of one content (`Generate.text_refs`)."""
    if isinstance(content, dict):
        yield from _parts(content, "assistant" if content.get("role") == "model" else "user")


class Generate(Api):
    name = "gemini.generate"
    provider = "gemini"
    turns_key = "contents"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and PATH.search(path) is not None

    def model(self, body: Any, path: str) -> str | None:
        m = PATH.search(path)
        return m.group("model") if m else None

    def set_model(self, body: Any, model: str) -> None:
        raise NotImplementedError("a Gemini model is named in the path")

    def is_stream(self, body: Any, path: str) -> bool:
        m = PATH.search(path)
        return bool(m) and m.group("method") == "streamGenerateContent"

    def usage(self, response: Any) -> Usage | None:
        if isinstance(response, list):  # streamGenerateContent without alt=sse: a JSON array
            response = response[-1] if response else {}
        return usage_of(response.get("usageMetadata")) if isinstance(response, dict) else None

    def served_model(self, response: Any) -> str | None:
        if isinstance(response, list):
            response = response[-1] if response else {}
        return response.get("modelVersion") if isinstance(response, dict) else None

    def stream_state(self) -> StreamState:
        return GenerateStream()

    def error_body(self, status: int, kind: str, message: str) -> bytes:
        return json.dumps({"error": {"code": status, "message": message,
                                     "status": STATUS.get(kind, "INTERNAL")}}).encode()

    def error_type(self, response: Any) -> str | None:
        if isinstance(response, list) and response:
            response = response[0]
        if isinstance(response, dict) and isinstance(response.get("error"), dict):
            return response["error"].get("status")
        return None

    def text_refs(self, body: Any, only: Sequence[int] | None = None) -> Iterator[TextRef]:
        if not isinstance(body, dict):
            return
        yield from _parts(_field(body, "systemInstruction"), "system")
        yield from in_turns(body.get("contents"), only, _content_refs)

    def tool_calls(self, body: Any) -> dict[str, tuple[str, Any]]:
        out = {}
        for content in body.get("contents") or [] if isinstance(body, dict) else []:
            for part in (content.get("parts") or []) if isinstance(content, dict) else []:
                call = part.get("functionCall") if isinstance(part, dict) else None
                if isinstance(call, dict) and call.get("id"):
                    out[call["id"]] = (call.get("name") or "", call.get("args"))
        return out

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        if not isinstance(response, dict):
            return
        for cand in response.get("candidates") or []:
            if isinstance(cand, dict):
                yield from _parts(cand.get("content"), "assistant")


GENERATE = Generate()
