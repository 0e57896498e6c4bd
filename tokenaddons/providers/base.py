"""What every wire format (one module per API) provides."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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


def in_turns(turns: Any, only: Sequence[int] | None, refs_of: Callable[[Any], Iterable[TextRef]]) -> Iterator[TextRef]:
    """What `refs_of` finds in each of the turns (`Api.turns`; of those at the
    indexes `only`, if given), each ref marked with its turn's index
    (`TextRef.turn`): where a finding sits is known without walking the turns
    again. Nothing if `turns` is not a list."""
    if not isinstance(turns, list):
        return
    for i in range(len(turns)) if only is None else only:
        for ref in refs_of(turns[i]):
            ref.turn = i
            yield ref


@dataclass(slots=True)
class TextRef:
    """A user- or tool-authored value inside a request body, readable and writable.

    `role` says where it sits: system, user, assistant, tool (a tool result),
    tool_input (arguments of an earlier tool call in history), metadata (ids and
    tags the caller set on the request).

    Most refs are strings. `json_text`: the string is itself JSON (OpenAI
    tool-call arguments). `number`: an integer in free-form JSON (a tool's input
    or result); its `text` is the number's digits, and writing a string puts a
    string in its place (a placeholder is never a bare number).
    """

    container: Any  # dict or list holding the value
    key: Any  # key or index in the container
    role: str
    json_text: bool = False
    number: bool = False
    call: str | None = None  # for a tool output: the id of the tool call it answers
    # the index of the turn (`Api.turns`) it sits in, set by `Api.text_refs`; None outside the turns
    turn: int | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        value = self.container[self.key]
        return str(value) if self.number else value

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
    turns_key: str | None = None  # the body's list of turns (`turns`), if it has one

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

    def turns(self, body: Any) -> list | None:
        """The conversation's turns (messages, input items, contents: the list
        under `turns_key`), which an agent resends on every request; None if
        the body has no list of them."""
        turns = body.get(self.turns_key) if self.turns_key and isinstance(body, dict) else None
        return turns if isinstance(turns, list) else None

    def text_refs(self, body: Any, only: Sequence[int] | None = None) -> Iterator[TextRef]:
        """Every user/tool-authored string in a request, in order; never JSON
        structure, ids, or base64 media. `only`: of the turns (`turns`), only
        those at these indexes (the rest of the body whole)."""
        return iter(())

    def response_text_refs(self, response: Any) -> Iterator[TextRef]:
        """Every model-written string in a complete answer (text and tool inputs)."""
        return iter(())

    def tool_refs(self, body: Any) -> Iterator[TextRef]:
        """The strings tools produced (text_refs' role "tool"), without walking the rest."""
        return (ref for ref in self.text_refs(body) if ref.role == "tool")

    def tool_calls(self, body: Any) -> dict[str, tuple[str, Any]]:
        """The tool calls in a request's history: call id -> (tool name, arguments, parsed where they are JSON)."""
        return {}


def parsed_arguments(arguments: Any) -> Any:
    """Tool-call arguments sent as JSON text, parsed (left as they are if they are not JSON)."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


# An integer this large may be a card, phone or account number; smaller ones are counts and ids.
NUMBER_MIN = 10**6

# Keys whose values are structure, ids, signatures, encrypted or binary content:
# never text a user or a tool wrote (outside free-form tool input, where every key is data).
OPAQUE_KEYS = frozenset({
    "type", "id", "role", "status", "name", "index", "tool_use_id", "tool_call_id", "call_id", "approval_request_id",
    "caller_id", "fingerprint", "signature", "encrypted_content", "encrypted_index", "encrypted_stdout",
    "thoughtSignature", "thought_signature", "cache_control", "media_type", "mime_type", "mimeType", "file_id",
    "fileUri", "file_uri", "image_url", "file_data", "file_url", "inlineData", "inline_data", "fileData",
    "result",  # an image generation call's image (base64)
})
# Blocks that are media or signed (editing a signed block invalidates the turn): skipped whole.
OPAQUE_TYPES = frozenset({"base64", "image", "input_image", "input_audio", "image_url", "thinking",
                          "redacted_thinking", "container_upload", "compaction", "item_reference"})
# Keys holding free-form JSON a model or a tool wrote (tool inputs): every value in them is data.
FREE_FORM_KEYS = frozenset({"input", "args", "arguments", "response", "env"})


def walk_strings(value: Any, role: str, call: str | None = None) -> list[TextRef]:
    """Every string and large integer leaf of free-form JSON (a tool's input or
    result): keys there are the tool's own, so every value is data."""
    out: list[TextRef] = []
    strings_into(out, value, role, call)
    return out


def strings_into(out: list[TextRef], value: Any, role: str, call: str | None = None) -> None:
    """walk_strings, appending to `out`: walkers on the hot path build one list
    (a generator per level costs more than the walk itself)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    add = out.append
    for k, v in items:
        t = type(v)
        if t is str:
            add(TextRef(value, k, role, False, False, call))
        elif t is dict or t is list:
            strings_into(out, v, role, call)
        elif isinstance(v, str):
            add(TextRef(value, k, role, False, False, call))
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= NUMBER_MIN:
            add(TextRef(value, k, role, False, True, call))
        elif isinstance(v, (dict, list)):
            strings_into(out, v, role, call)


def walk_block(value: Any, role: str, call: str | None = None) -> Iterator[TextRef]:
    """Every string a user or a tool wrote in a block of a known or future type
    (a server tool's result, a shell call's output): all but ids, signatures,
    encrypted and binary content, and media. Free-form tool input inside is
    walked whole."""
    if isinstance(value, dict):
        if value.get("type") in OPAQUE_TYPES:
            return
        for k, v in value.items():
            if k in OPAQUE_KEYS:
                continue
            if isinstance(v, str):
                yield TextRef(value, k, role, json_text=k == "arguments", call=call)  # arguments are JSON text
            elif k in FREE_FORM_KEYS:
                yield from walk_strings(v, role, call)
            else:
                yield from walk_block(v, role, call)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str):
                yield TextRef(value, i, role, call=call)
            else:
                yield from walk_block(v, role, call)


def string_ref(container: Any, key: Any, role: str, call: str | None = None) -> Iterator[TextRef]:
    """The ref of `container[key]` if it is a string."""
    if isinstance(container, dict) and isinstance(container.get(key), str):
        yield TextRef(container, key, role, call=call)


def json_error(obj: Any) -> bytes:
    return json.dumps(obj).encode()


Hook = Callable[..., Any]
