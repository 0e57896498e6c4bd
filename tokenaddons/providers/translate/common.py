"""What both translation directions share: stop reasons, usage, media, errors."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


class Untranslatable(ValueError):
    """A request uses something the other API cannot express (thinking blocks,
    server tools, audio...): the target is skipped, never sent a changed meaning."""


@dataclass
class Translated:
    body: dict
    dropped: list[str] = field(default_factory=list)  # fields with no equivalent that change nothing essential


# Anthropic stop_reason <-> Chat finish_reason
TO_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
             "pause_turn": "stop", "refusal": "content_filter", "model_context_window_exceeded": "length"}
TO_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
           "content_filter": "refusal"}


# Anthropic tool_choice type <-> Chat tool_choice (a named tool is a dict on each side)
TO_CHAT_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
TO_ANTHROPIC_CHOICE = {v: k for k, v in TO_CHAT_CHOICE.items()}


def finish_reason(stop_reason: str | None) -> str:
    return TO_FINISH.get(stop_reason or "end_turn", "stop")


def stop_reason(finish: str | None) -> str:
    return TO_STOP.get(finish or "stop", "end_turn")


def chat_usage(u: dict | None) -> dict:
    """Anthropic usage -> Chat usage (prompt tokens include cache reads and writes there)."""
    u = u or {}
    read = u.get("cache_read_input_tokens") or 0
    prompt = (u.get("input_tokens") or 0) + read + (u.get("cache_creation_input_tokens") or 0)
    out = u.get("output_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": read}}


def messages_usage(u: dict | None) -> dict:
    """Chat usage -> Anthropic usage (input_tokens there excludes cache reads)."""
    u = u or {}
    read = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": max(0, (u.get("prompt_tokens") or 0) - read), "output_tokens": u.get("completion_tokens") or 0,
            "cache_read_input_tokens": read, "cache_creation_input_tokens": 0}


# data:<media type>;base64,<data>  (bounded: a media type is short)
_DATA_URL = re.compile(r"data:([\w.+-]{1,64}/[\w.+-]{1,64});base64,")


def split_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a base64 data URL, else None."""
    m = _DATA_URL.match(url)
    return (m.group(1), url[m.end():]) if m else None


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def tool_arguments(text: Any) -> dict:
    """A Chat tool call's arguments (JSON text) as Anthropic's input object."""
    if isinstance(text, dict):
        return text
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise Untranslatable("a tool call in history has arguments that are not JSON") from None
    if not isinstance(value, dict):
        raise Untranslatable("a tool call in history has arguments that are not a JSON object")
    return value


def error_message(data: Any) -> str | None:
    """The message of any of the three providers' error JSON shapes."""
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    return None


def error_kind(status: int) -> str:
    """A status as the generic error kind each API's `error_body` knows."""
    if status == 401:
        return "authentication"
    if status == 403:
        return "permission"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limit"
    if status in (503, 529):
        return "overloaded"
    if status >= 500:
        return "upstream"
    return "invalid_request"
