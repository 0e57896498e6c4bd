"""What every wire format (one module per API) provides."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tokenaddons.engines.usage import Usage
from tokenaddons.providers.sse import Event


def model_name(value: Any) -> str | None:
    """A model name as the exchange keeps it: a string, or None. Anything else
    a client or an upstream put there (a list, an object) becomes its JSON
    text, so every addon can compare, hash and price it (a price is not found)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=repr)[:200]


@dataclass
class TextRef:
    """A user- or tool-authored string inside a request body, readable and writable.

    `role` says where it sits: system, user, assistant, tool (a tool result),
    tool_input (arguments of an earlier tool call in history).
    """

    container: Any  # dict or list holding the string
    key: Any  # key or index in the container
    role: str
    json_text: bool = False  # the string is itself JSON (OpenAI tool-call arguments)

    @property
    def text(self) -> str:
        return self.container[self.key]

    @text.setter
    def text(self, value: str) -> None:
        self.container[self.key] = value


class StreamState:
    """Follows one streamed answer event by event: usage, model, completion.

    Subclasses (one per API) override `on_event`.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.model: str | None = None
        self.complete = False  # the API's terminal event was seen
        self.error_type: str | None = None
        self.text: list[str] = []  # streamed output text, for estimating usage a provider did not report

    def on_event(self, event: Event) -> None:
        raise NotImplementedError


class Api:
    """One wire format. Instances are stateless singletons (see providers/__init__)."""

    name: str  # e.g. "anthropic.messages"
    provider: str  # "anthropic" | "openai" | "gemini"
    suffix: str = ""  # the API's path ends so (a reverse proxy may put a prefix before it)

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.split("?")[0].rstrip("/").endswith(self.suffix)

    def model(self, body: Any, path: str) -> str | None:
        return body.get("model") if isinstance(body, dict) else None

    def set_model(self, body: Any, model: str) -> None:
        body["model"] = model

    def is_stream(self, body: Any, path: str) -> bool:
        return isinstance(body, dict) and bool(body.get("stream"))

    def usage(self, response: Any) -> Usage | None:
        """Usage from a complete JSON answer."""
        raise NotImplementedError

    def served_model(self, response: Any) -> str | None:
        return response.get("model") if isinstance(response, dict) else None

    def stream_state(self) -> StreamState:
        raise NotImplementedError

    def prepare_stream_usage(self, body: Any) -> bool:
        """Ask upstream for usage in a stream if the client did not; True if the
        body changed (the extra usage must then be hidden from the client)."""
        return False

    def hide_usage_event(self, event: Event) -> bool:
        """True for an event that only exists because prepare_stream_usage asked for it."""
        return False

    def error_body(self, status: int, kind: str, message: str) -> bytes:
        """The provider's own error JSON. `kind` is a generic word
        (invalid_request, authentication, permission, not_found, rate_limit, overloaded, upstream)."""
        raise NotImplementedError

    def error_type(self, response: Any) -> str | None:
        """The error's type from an error answer of this API."""
        return None

    def text_refs(self, body: Any) -> Iterator[TextRef]:
        """Every user/tool-authored string in a request, in order; never JSON
        structure, ids, or base64 media."""
        return iter(())

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        """Every model-written string in a complete answer (text and tool inputs)."""
        return iter(())


def walk_strings(value: Any, role: str) -> Iterator[TextRef]:
    """Every string leaf of a JSON value (tool inputs are free-form JSON)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str):
                yield TextRef(value, k, role)
            else:
                yield from walk_strings(v, role)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str):
                yield TextRef(value, i, role)
            else:
                yield from walk_strings(v, role)


def json_error(obj: Any) -> bytes:
    return json.dumps(obj).encode()


Hook = Callable[..., Any]
