"""Provider prompt-cache hints, as pure functions of a request body.

Anthropic caches a prompt prefix only up to a `cache_control` breakpoint the
request marks. For a request that marks none, breakpoints go where they earn
reads: the end of the stable prefix (tools and system, shared by every
conversation of the same agent), and, in a conversation (a request that
offers tools or carries an earlier answer), the end of the newest turn (what
the next turn will read) and the end of the turn before (what this one reads,
even when more than 20 blocks came in between, beyond the provider's lookback).
A one-off question gets no turn breakpoint: its cache write (1.25x the input
price) would never be read back.
Never more than the provider's limit of 4, never below the model's minimum
cacheable length, never on a block that cannot carry one, and never when the
client placed any breakpoint of its own (its choices are left exactly as
they are).

OpenAI caches prefixes by itself; `prompt_cache_key` makes requests that share
a prefix land on the same cache machine. A request without one gets a key
derived from the caller, the project and the stable prefix (tools, system and
developer instructions), so one agent's requests share a cache.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenaddons.engines.memo import stable_digest

MAX_BREAKPOINTS = 4
# The shortest prefix each Anthropic model caches (published minimums); others 1024.
MINIMUMS = (("opus-4-5", 4096), ("opus-4-6", 4096), ("haiku-4-5", 4096), ("sonnet-4-6", 2048),
            ("haiku-3", 2048), ("3-5-haiku", 2048), ("3-haiku", 2048))
ESTIMATE_SHARE = 0.85  # of the minimum, as estimated locally
UNMARKABLE = {"thinking", "redacted_thinking"}  # blocks the API refuses a breakpoint on
TTLS = ("5m", "1h")


def anthropic_minimum(model: str | None) -> int:
    for fragment, tokens in MINIMUMS:
        if fragment in (model or ""):
            return tokens
    return 1024


def has_cache_control(body: Any) -> bool:
    """Any `cache_control` in a request: at the top level, on a tool, a system
    block, a message's block or a block inside a tool result (the places the
    API accepts one)."""
    return isinstance(body, dict) and (prefix_marked(body) or messages_marked(body))


def prefix_marked(body: dict) -> bool:
    """A `cache_control` at the top level, on a tool or on a system block."""
    if "cache_control" in body:
        return True
    return marked(body.get("tools") or []) or (isinstance(body.get("system"), list) and marked(body["system"]))


def messages_marked(body: dict) -> bool:
    """A `cache_control` on a message's block or on a block inside one (a tool result's)."""
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict):
                if "cache_control" in block:
                    return True
                inner = block.get("content")
                if isinstance(inner, list) and marked(inner):
                    return True
    return False


def marked(blocks: Any) -> bool:
    """Whether any of `blocks` carries a `cache_control`."""
    return any(isinstance(b, dict) and "cache_control" in b for b in blocks)


@dataclass
class Breakpoint:
    where: str  # "prefix", "previous turn", "newest turn"
    container: Any  # the list holding the block, or the dict whose string becomes a block
    key: Any
    ttl: str

    def apply(self) -> None:
        marker = {"type": "ephemeral"} if self.ttl == "5m" else {"type": "ephemeral", "ttl": self.ttl}
        value = self.container[self.key]
        if isinstance(value, str):  # a plain string becomes one text block: the same text to the model
            self.container[self.key] = [{"type": "text", "text": value, "cache_control": marker}]
        else:
            self.container[self.key] = {**value, "cache_control": marker}


def _markable(block: Any) -> bool:
    if isinstance(block, str):
        return bool(block)
    if not isinstance(block, dict) or block.get("type") in UNMARKABLE:
        return False
    return not (block.get("type") == "text" and not block.get("text"))


def _last_markable(holder: Any, key: Any) -> tuple[Any, Any] | None:
    """(container, key) of the last block of `holder[key]` (a string or a list
    of blocks) that may carry a breakpoint."""
    value = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(value, str):
        return (holder, key) if value else None
    if isinstance(value, list):
        for i in range(len(value) - 1, -1, -1):
            if _markable(value[i]):
                return value, i
    return None


def anthropic_breakpoints(body: dict, model: str | None, count: Callable[[Any], int],
                          ttl: str = "5m", in_messages: bool | None = None) -> list[Breakpoint]:
    """Where breakpoints earn reads in a request that has none (empty if it has
    any). `count(value)` estimates a block's tokens; `ttl` is the stable
    prefix's (turn breakpoints are 5-minute ones: the next turn renews them,
    and 1-hour breakpoints must come before 5-minute ones). `in_messages`:
    whether the messages carry a breakpoint, when the caller's own walk of
    them found out (None: looked for here)."""
    if not isinstance(body, dict) or prefix_marked(body):
        return []
    if messages_marked(body) if in_messages is None else in_messages:
        return []
    # Counts are estimates (tiktoken; Anthropic's tokenizer counts more), and a
    # breakpoint on a prefix under the minimum costs nothing (it is just not
    # cached): so a prefix counts as long enough a little early.
    minimum = anthropic_minimum(model) * ESTIMATE_SHARE
    size = 0  # the prompt's size so far, counted only until it reaches the minimum

    def grows(value: Any) -> bool:
        nonlocal size
        for part in value if isinstance(value, list) else [value]:
            if size >= minimum:
                break
            size += count(part)
        return size >= minimum

    out: list[Breakpoint] = []
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    stable = grows({"tools": tools})  # (tool definitions are counted as the JSON they are)
    if body.get("system"):
        stable = grows(body["system"])
        found = _last_markable(body, "system")
    else:
        found = (tools, len(tools) - 1) if tools and _markable(tools[-1]) else None
    if stable and found is not None:
        out.append(Breakpoint("prefix", *found, ttl))
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    if not tools and not any(m.get("role") == "assistant" for m in messages):
        return out  # a one-off question: nothing says a next turn will read it back
    last = len(messages) - 1
    # the turn before: the last user message an assistant message follows
    previous = next((i for i in range(last - 1, -1, -1) if messages[i].get("role") == "user"
                     and any(m.get("role") == "assistant" for m in messages[i + 1:])), None)
    # the first message with which the prompt reaches the minimum: a turn breakpoint goes no earlier
    reached = next((i for i, msg in enumerate(messages) if grows(msg.get("content"))), None)
    for i in (previous, last):
        if reached is not None and i is not None and i >= reached:
            found = _last_markable(messages[i], "content")
            if found is not None and len(out) < MAX_BREAKPOINTS:
                out.append(Breakpoint("newest turn" if i == last else "previous turn", *found, "5m"))
    return out


def _stable_prefix(api_name: str, body: dict) -> list:
    """What every request of one agent starts with: tools, system and developer instructions."""
    lead: list = [body.get("tools"), body.get("instructions")]
    items = body.get("messages") if api_name == "openai.chat" else body.get("input")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("role") not in ("system", "developer"):
            break
        lead.append(item.get("content"))
    return lead


def openai_cache_key(api_name: str, body: dict, caller: str | None, project: str | None) -> str | None:
    """A `prompt_cache_key` for a request without one, the same for every
    request of one caller, project and stable prefix."""
    if not isinstance(body, dict) or body.get("prompt_cache_key") is not None:
        return None
    stable = json.dumps([caller, project, _stable_prefix(api_name, body)], sort_keys=True, default=str)
    return "tokenaddons-" + stable_digest(stable)[:12].hex()
