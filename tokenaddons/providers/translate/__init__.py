"""OpenAI Chat Completions <-> Anthropic Messages, both directions.

A client speaking one API can be served by a provider speaking the other: the
request is translated before it is sent, and the answer (JSON, error or stream,
event by event) back into the client's shape. What cannot be expressed on the
other side (thinking blocks, server tools, audio, several choices...) raises
`Untranslatable`, and that target is skipped rather than sent a changed meaning.
"""
from __future__ import annotations

from typing import Any

from tokenaddons.providers.anthropic import COUNT_TOKENS, MESSAGES
from tokenaddons.providers.base import Api
from tokenaddons.providers.gemini import GENERATE
from tokenaddons.providers.openai_chat import CHAT
from tokenaddons.providers.openai_responses import RESPONSES
from tokenaddons.providers.sse import Event
from tokenaddons.providers.translate import chat_on_messages, messages_on_chat
from tokenaddons.providers.translate.common import Translated, Untranslatable, error_kind, error_message

# (client API, provider family) -> the API the provider is sent
_SAME = {(MESSAGES, "anthropic"): MESSAGES, (COUNT_TOKENS, "anthropic"): COUNT_TOKENS,
         (CHAT, "openai"): CHAT, (RESPONSES, "openai"): RESPONSES, (GENERATE, "gemini"): GENERATE}
_ACROSS = {(MESSAGES, "openai"): CHAT, (CHAT, "anthropic"): MESSAGES}
_MODULES = {(MESSAGES, CHAT): messages_on_chat, (CHAT, MESSAGES): chat_on_messages}


def upstream_api(client: Api, family: str) -> Api | None:
    """The API a provider of `family` is spoken to for a client of `client`
    (None: no way to serve that client there)."""
    return _SAME.get((client, family)) or _ACROSS.get((client, family))


def request(client: Api, upstream: Api, body: Any) -> Translated:
    """The client's request body for `upstream` (a new object; the client's is not changed)."""
    if client is upstream:
        return Translated(body)
    if not isinstance(body, dict):
        raise Untranslatable("a request body that is not a JSON object")
    return _MODULES[(client, upstream)].request(body)


def response(upstream: Api, client: Api, data: Any) -> Any:
    """A complete answer of `upstream` in the client's shape."""
    if client is upstream or not isinstance(data, dict):
        return data
    return _MODULES[(client, upstream)].response(data)


def error(client: Api, status: int, data: Any, served_by: str) -> bytes:
    """An error answered by `served_by` ("provider/model") in the client's shape, its status kept."""
    message = error_message(data) or f"HTTP {status}"
    return client.error_body(status, error_kind(status), f"{served_by}: {message}")


class StreamTranslator:
    """A stream tap's worker: upstream events in, the client's events out."""

    def feed(self, events: list[Event]) -> list[Event]: ...

    def end(self) -> list[Event]: ...


def stream(upstream: Api, client: Api, include_usage: bool = False) -> StreamTranslator:
    """A translator of `upstream`'s stream into the client's events.
    `include_usage`: a Chat client asked for the usage chunk."""
    if (client, upstream) == (MESSAGES, CHAT):
        return messages_on_chat.Stream()
    if (client, upstream) == (CHAT, MESSAGES):
        return chat_on_messages.Stream(include_usage)
    raise Untranslatable(f"a {upstream.name} stream for a {client.name} client")


__all__ = ["Translated", "Untranslatable", "error", "request", "response", "stream", "upstream_api"]
