"""The recorded provider traffic in shared/traffic (VCR YAML)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SHARED
from tokenaddons.providers.sse import SSEParser
from tokenaddons.vcr import body_bytes, interactions, to_flow  # noqa: F401  (re-exported for tests)

TRAFFIC = SHARED / "traffic" / "pydantic-ai"


def files(pattern: str = "*/*.yaml") -> list[Path]:
    return sorted(TRAFFIC.glob(pattern))


def response_json(interaction: dict):
    """The recorded response body as JSON (None for streams and non-JSON)."""
    resp = interaction["response"]
    if "parsed_body" in resp:
        return resp["parsed_body"]
    try:
        return json.loads(body_bytes(resp))
    except ValueError:
        return None


def expected_usage(api: str, interaction: dict) -> dict | None:
    """The provider's reported usage, read straight from the recording."""
    data = response_json(interaction)
    if data is None:  # a stream: the last usage-bearing event wins (Anthropic: start + final delta)
        body = interaction["response"].get("body", {}).get("string", "")
        events = [e.json() for e in SSEParser().feed(body.encode() + b"\n\n")]
        events = [e for e in events if isinstance(e, dict)]
        if api == "anthropic.messages":
            start = next((e["message"]["usage"] for e in events if e.get("type") == "message_start"), None)
            delta = [e["usage"] for e in events if e.get("type") == "message_delta"]
            if start is None:
                return None
            u = {**start, **{k: v for k, v in (delta[-1] if delta else {}).items() if v is not None}}
            data = {"usage": u}
        elif api == "openai.chat":
            us = [e["usage"] for e in events if e.get("usage")]
            data = {"usage": us[-1]} if us else None
        elif api == "openai.responses":
            done = [e["response"] for e in events if e.get("type") in ("response.completed", "response.incomplete")]
            data = done[-1] if done else None
        elif api == "gemini.generate":
            us = [e["usageMetadata"] for e in events if e.get("usageMetadata")]
            data = {"usageMetadata": us[-1]} if us else None
        if data is None:
            return None
    if api == "anthropic.messages":
        u = data.get("usage") or {}
        cr, cw = u.get("cache_read_input_tokens") or 0, u.get("cache_creation_input_tokens") or 0
        split = u.get("cache_creation") or {}
        return {"input_tokens": u["input_tokens"] + cr + cw, "cache_read_tokens": cr,
                "cache_write_tokens": cw,
                "cache_write_1h_tokens": split.get("ephemeral_1h_input_tokens", 0),
                "cache_write_5m_tokens": split.get("ephemeral_5m_input_tokens", cw),
                "output_tokens": u["output_tokens"]}
    if api == "anthropic.count_tokens":
        return {"input_tokens": 0, "output_tokens": 0}
    if api == "openai.chat":
        u = data.get("usage")
        if not u:
            return None
        return {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"],
                "cache_read_tokens": (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
                "reasoning_tokens": (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0}
    if api == "openai.responses":
        u = data.get("usage")
        if not u:
            return None
        return {"input_tokens": u["input_tokens"], "output_tokens": u["output_tokens"],
                "cache_read_tokens": (u.get("input_tokens_details") or {}).get("cached_tokens") or 0,
                "reasoning_tokens": (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0}
    if api == "gemini.generate":
        u = (data[-1] if isinstance(data, list) else data).get("usageMetadata")
        if not u:
            return None
        thoughts = u.get("thoughtsTokenCount", 0)
        return {"input_tokens": u.get("promptTokenCount", 0) + u.get("toolUsePromptTokenCount", 0),
                "cache_read_tokens": u.get("cachedContentTokenCount", 0),
                "output_tokens": u.get("candidatesTokenCount", 0) + thoughts,
                "reasoning_tokens": thoughts}
    raise AssertionError(api)
