"""The official SDKs as judges of what the proxy answers: each SDK's own parser
and stream helpers over bytes handed to it as if a provider had sent them."""
from __future__ import annotations

import anthropic
import httpx
import openai


def _transport(status: int, body: bytes, content_type: str) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(status, content=body, headers={"content-type": content_type})))


def claude(status: int, body: bytes, content_type: str = "text/event-stream") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="x", max_retries=0, http_client=_transport(status, body, content_type))


def gpt(status: int, body: bytes, content_type: str = "text/event-stream") -> openai.OpenAI:
    return openai.OpenAI(api_key="x", max_retries=0, http_client=_transport(status, body, content_type))


def anthropic_final(sse: bytes):
    """The anthropic SDK's messages.stream(...).get_final_message() over a stream's bytes."""
    with claude(200, sse).messages.stream(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]) as s:
        return s.get_final_message()


def chat_final(sse: bytes):
    """The openai SDK's chat.completions.stream(...) helper over a stream's bytes."""
    with gpt(200, sse).chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
        return s.get_final_completion()
