"""Wire formats, one module per API; `detect` picks one from a request line."""
from __future__ import annotations

from tokenaddons.providers.anthropic import COUNT_TOKENS, MESSAGES
from tokenaddons.providers.base import Api, StreamState, TextRef
from tokenaddons.providers.gemini import GENERATE
from tokenaddons.providers.openai_chat import CHAT
from tokenaddons.providers.openai_responses import RESPONSES

# The host is often 127.0.0.1 in reverse mode, so the path decides.
APIS: tuple[Api, ...] = (COUNT_TOKENS, MESSAGES, CHAT, RESPONSES, GENERATE)
BY_NAME = {api.name: api for api in APIS}


def detect(method: str, path: str) -> Api | None:
    for api in APIS:
        if api.matches(method, path):
            return api
    return None


__all__ = ["APIS", "BY_NAME", "Api", "StreamState", "TextRef", "detect"]
