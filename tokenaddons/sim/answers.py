"""What the simulated model answers, and its usage, for each wire format.

Answers are deterministic: a sentence derived from the last user message (or
the message itself, in echo mode), or a tool call when asked for one with
`[[tool:NAME {json args}]]` in the last user text or an `x-sim-tool: NAME`
header, if the request offers that tool. Several directives in one user text
are a script: one tool call per turn, in order, as the tool results come
back. A turn that ends with a tool result and no directive left is answered
with text that quotes the result, so agent loops end.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tokenaddons.engines import tokens
from tokenaddons.engines.cache_hints import MAX_BREAKPOINTS
from tokenaddons.providers import base
from tokenaddons.providers.sse import frame
from tokenaddons.sim.prompt_cache import PromptCache

TOOL_DIRECTIVE = re.compile(r"\[\[tool:(?P<name>[\w.-]+)\s*(?P<args>\{.*?\})?\]\]", re.S)
FILLER = ("The simulator answers deterministically so that tests and demos can rely on "
          "every token it reports. ")


@dataclass
class Turn:
    text: str = ""
    tool: tuple[str, dict] | None = None
    usage: dict = field(default_factory=dict)  # input, read, write_5m, write_1h, output

    @property
    def tool_json(self) -> str:
        return json.dumps(self.tool[1]) if self.tool else ""


def _id(prefix: str, seed: str, n: int = 24) -> str:
    return prefix + hashlib.sha256(f"{seed}{time.time_ns()}".encode()).hexdigest()[:n]


def tool_names(api_name: str, body: dict) -> set[str]:
    names = set()
    for t in body.get("tools") or []:
        if not isinstance(t, dict):
            continue
        if api_name == "gemini.generate":
            names.update(f.get("name") for f in t.get("functionDeclarations") or t.get("function_declarations") or [])
        elif api_name == "openai.chat":
            names.add((t.get("function") or {}).get("name"))
        else:
            names.add(t.get("name"))
    return names - {None}


def ends_with_tool_result(api_name: str, body: dict) -> str | None:
    """The text of a trailing tool result, if the conversation ends with one."""
    if api_name in ("anthropic.messages",):
        msgs = body.get("messages") or []
        last = msgs[-1] if msgs else {}
        for block in last.get("content") or [] if isinstance(last.get("content"), list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                return inner if isinstance(inner, str) else json.dumps(inner)
    elif api_name == "openai.chat":
        msgs = body.get("messages") or []
        if msgs and msgs[-1].get("role") == "tool":
            return str(msgs[-1].get("content"))
    elif api_name == "openai.responses":
        items = body.get("input")
        if isinstance(items, list) and items and isinstance(items[-1], dict) \
                and items[-1].get("type") in ("function_call_output", "custom_tool_call_output"):
            return str(items[-1].get("output"))
    elif api_name == "gemini.generate":
        contents = body.get("contents") or []
        parts = (contents[-1].get("parts") or []) if contents else []
        for p in parts:
            if isinstance(p, dict) and "functionResponse" in p:
                return json.dumps(p["functionResponse"].get("response"))
    return None


def last_user_text(api: base.Api, body: dict) -> str:
    texts = [ref.text for ref in api.text_refs(body) if ref.role == "user"]
    return texts[-1] if texts else ""


def _steps(api_name: str, body: dict) -> list[str | None]:
    """The conversation as the script reads it: each user text, and None for each tool result."""
    out: list[str | None] = []

    def texts(content: Any) -> None:
        if isinstance(content, str):
            out.append(content)
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])

    if api_name in ("anthropic.messages", "openai.chat"):
        for msg in body.get("messages") or []:
            if not isinstance(msg, dict):
                continue
            if msg.get("role") == "tool":
                out.append(None)
            elif msg.get("role") == "user":
                blocks = msg.get("content") if isinstance(msg.get("content"), list) else [msg.get("content")]
                for block in blocks:
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        out.append(None)
                    else:
                        texts([block] if isinstance(block, dict) else block)
    elif api_name == "openai.responses":
        items = body.get("input")
        for item in items if isinstance(items, list) else [{"role": "user", "content": items}]:
            if not isinstance(item, dict):
                continue
            if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                out.append(None)
            elif item.get("role") == "user":
                texts(item.get("content"))
    elif api_name == "gemini.generate":
        for content in body.get("contents") or []:
            if isinstance(content, dict) and content.get("role", "user") == "user":
                for part in content.get("parts") or []:
                    if isinstance(part, dict) and "functionResponse" in part:
                        out.append(None)
                    elif isinstance(part, dict) and isinstance(part.get("text"), str):
                        out.append(part["text"])
    return out


def script(api_name: str, body: dict) -> tuple[list[re.Match], int]:
    """The tool directives of the latest user text that has any, and how many
    tool results came after it: a prompt with several directives is played
    one tool call per turn, in order."""
    directives: list[re.Match] = []
    done = 0
    for step in _steps(api_name, body):
        if step is None:
            done += 1
        elif found := list(TOOL_DIRECTIVE.finditer(step)):
            directives, done = found, 0
    return directives, done


def plan(api: base.Api, body: dict, headers: dict, echo: bool, words: int) -> Turn:
    user = last_user_text(api, body)
    result = ends_with_tool_result(api.name, body)
    offered = tool_names(api.name, body)
    directives, done = script(api.name, body)
    directive = directives[done] if done < len(directives) else None
    if directive and directive.group("name") in offered:
        try:
            args = json.loads(directive.group("args") or "{}")
        except ValueError:
            args = {}
        return Turn(text="", tool=(directive.group("name"), args))
    if result is not None:
        return Turn(text=f"The tool returned: {result[:400]}")
    wanted = headers.get("x-sim-tool")
    if wanted and wanted in offered:
        return Turn(text="", tool=(wanted, {}))
    if echo:
        return Turn(text=user)
    head = f"Simulated reply to: {user[:60]}. "
    text = head + " ".join((FILLER * (words // 10 + 1)).split()[:words])
    return Turn(text=text)


def chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


# ---------------------------------------------------------------- usage

def anthropic_blocks(body: dict) -> list[tuple[str, int, str | None]]:
    """(canonical json, tokens, breakpoint ttl) for tools, system, then message blocks.

    Tokens are those of the text the model reads (a tool definition as compact
    JSON, a content block as its strings), not of the block's JSON escaping:
    a control character such as an ANSI escape is one character to the
    provider's tokenizer, not six (\\u001b). A top-level `cache_control`
    (automatic caching) is a breakpoint on the last block."""
    out = []

    def add(block: Any, tool: bool = False) -> None:
        cc = block.get("cache_control") if isinstance(block, dict) else None
        clean = {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        read = json.dumps(clean, separators=(",", ":")) if tool else tokens.prompt_text([clean])[0]
        out.append((json.dumps(clean, sort_keys=True), tokens.count_text(read),
                    (cc.get("ttl") or "5m") if isinstance(cc, dict) else None))

    for tool in body.get("tools") or []:
        add(tool, tool=True)
    for block in system_blocks(body):
        add(block)
    for block in message_blocks(body):
        add(block)
    auto = body.get("cache_control")
    if isinstance(auto, dict) and out and out[-1][2] is None:
        out[-1] = (*out[-1][:2], auto.get("ttl") or "5m")
    return out


def system_blocks(body: dict) -> list:
    system = body.get("system")
    return [{"type": "text", "text": system}] if isinstance(system, str) else list(system or [])


def message_blocks(body: dict) -> list:
    out = []
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        out += [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    return out


def anthropic_cache_error(body: dict) -> str | None:
    """What the Messages API refuses about breakpoints (a 400), or None."""
    marked = [b for b in list(body.get("tools") or []) + system_blocks(body) + message_blocks(body)
              if isinstance(b, dict) and isinstance(b.get("cache_control"), dict)]
    count = len(marked) + isinstance(body.get("cache_control"), dict)
    if count > MAX_BREAKPOINTS:
        return f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {count}."
    ttls = [(b["cache_control"].get("ttl") or "5m") for b in marked]
    if "5m" in ttls and "1h" in ttls[ttls.index("5m"):]:
        return "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block"
    for b in marked:
        if b.get("type") in ("thinking", "redacted_thinking"):
            return "cache_control cannot be set on thinking blocks"
        if b.get("type") == "text" and not b.get("text"):
            return "cache_control cannot be set for empty text blocks"
    return None


def usage_for(api: base.Api, body: dict, turn: Turn, model: str, cache: PromptCache) -> dict:
    out_text = turn.text + turn.tool_json
    output = max(1, tokens.count_text(out_text, model))
    if api.name == "anthropic.messages":
        blocks = anthropic_blocks(body)
        total = sum(n for _, n, _ in blocks) + tokens.MESSAGE_OVERHEAD * len(body.get("messages") or [])
        c = cache.anthropic(model, blocks)
        return {"input": total - c.read - c.write_5m - c.write_1h, "read": c.read, "write_5m": c.write_5m,
                "write_1h": c.write_1h, "output": output}
    text, messages = tokens.prompt_text(body)
    ids = tokens.encoding_for(model).encode_ordinary(text)
    total = len(ids) + tokens.MESSAGE_OVERHEAD * messages
    read = cache.openai(model, ids) if api.provider == "openai" else 0
    return {"input": total, "read": read, "write_5m": 0, "write_1h": 0, "output": output}


# ---------------------------------------------------------------- Anthropic

def anthropic_usage(u: dict, final: bool) -> dict:
    return {"input_tokens": u["input"], "cache_creation_input_tokens": u["write_5m"] + u["write_1h"],
            "cache_read_input_tokens": u["read"],
            "cache_creation": {"ephemeral_5m_input_tokens": u["write_5m"], "ephemeral_1h_input_tokens": u["write_1h"]},
            "output_tokens": u["output"] if final else 1, "service_tier": "standard"}


def anthropic_content(turn: Turn, seed: str) -> list[dict]:
    if turn.tool:
        return [{"type": "tool_use", "id": _id("toolu_01", seed), "name": turn.tool[0], "input": turn.tool[1]}]
    return [{"type": "text", "text": turn.text}]


def anthropic_json(model: str, turn: Turn) -> dict:
    return {"id": _id("msg_01", model), "type": "message", "role": "assistant", "model": model,
            "content": anthropic_content(turn, model), "stop_reason": "tool_use" if turn.tool else "end_turn",
            "stop_sequence": None, "usage": anthropic_usage(turn.usage, True)}


def anthropic_events(model: str, turn: Turn, size: int) -> list[bytes]:
    msg = anthropic_json(model, turn)
    start = {**msg, "content": [], "stop_reason": None, "usage": anthropic_usage(turn.usage, False)}
    events = [frame({"type": "message_start", "message": start}, "message_start")]
    block = msg["content"][0]
    if turn.tool:
        events.append(frame({"type": "content_block_start", "index": 0,
                             "content_block": {**block, "input": {}}}, "content_block_start"))
        events.append(frame({"type": "ping"}, "ping"))
        for piece in chunks(turn.tool_json, size):
            events.append(frame({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": piece}}, "content_block_delta"))
    else:
        events.append(frame({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}, "content_block_start"))
        events.append(frame({"type": "ping"}, "ping"))
        for piece in chunks(turn.text, size):
            events.append(frame({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": piece}}, "content_block_delta"))
    events.append(frame({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    final = anthropic_usage(turn.usage, True)
    final.pop("service_tier")
    events.append(frame({"type": "message_delta", "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
                         "usage": final}, "message_delta"))
    events.append(frame({"type": "message_stop"}, "message_stop"))
    return events


# ---------------------------------------------------------------- OpenAI Chat

def chat_usage(u: dict) -> dict:
    return {"prompt_tokens": u["input"], "completion_tokens": u["output"], "total_tokens": u["input"] + u["output"],
            "prompt_tokens_details": {"cached_tokens": u["read"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def chat_json(model: str, turn: Turn) -> dict:
    message: dict = {"role": "assistant", "content": None if turn.tool else turn.text, "refusal": None,
                     "annotations": []}
    if turn.tool:
        message["tool_calls"] = [{"id": _id("call_", model), "type": "function",
                                  "function": {"name": turn.tool[0], "arguments": turn.tool_json}}]
    return {"id": _id("chatcmpl-", model), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": "tool_calls" if turn.tool else "stop"}],
            "usage": chat_usage(turn.usage), "service_tier": "default", "system_fingerprint": "fp_sim"}


def chat_events(model: str, turn: Turn, size: int, include_usage: bool) -> list[bytes]:
    base_chunk = {"id": _id("chatcmpl-", model), "object": "chat.completion.chunk", "created": int(time.time()),
                  "model": model, "service_tier": "default", "system_fingerprint": "fp_sim"}
    extra = {"usage": None} if include_usage else {}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        return frame({**base_chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}], **extra})

    events = [chunk({"role": "assistant", "content": "" if not turn.tool else None, "refusal": None})]
    if turn.tool:
        call_id = _id("call_", model)
        events.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                             "function": {"name": turn.tool[0], "arguments": ""}}]}))
        for piece in chunks(turn.tool_json, size):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        for piece in chunks(turn.text, size):
            events.append(chunk({"content": piece}))
    events.append(chunk({}, "tool_calls" if turn.tool else "stop"))
    if include_usage:
        events.append(frame({**base_chunk, "choices": [], "usage": chat_usage(turn.usage)}))
    events.append(frame("[DONE]"))
    return events


# ---------------------------------------------------------------- OpenAI Responses

def responses_usage(u: dict) -> dict:
    return {"input_tokens": u["input"], "input_tokens_details": {"cached_tokens": u["read"]},
            "output_tokens": u["output"], "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u["input"] + u["output"]}


def responses_item(turn: Turn, seed: str) -> dict:
    if turn.tool:
        return {"id": _id("fc_", seed, 40), "type": "function_call", "status": "completed",
                "arguments": turn.tool_json, "call_id": _id("call_", seed), "name": turn.tool[0]}
    return {"id": _id("msg_", seed, 40), "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}]}


def responses_json(model: str, body: dict, turn: Turn, status: str = "completed") -> dict:
    return {"id": _id("resp_", model, 40), "object": "response", "created_at": int(time.time()), "status": status,
            "background": False, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": model, "output": [responses_item(turn, model)] if status == "completed" else [],
            "parallel_tool_calls": True, "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": body.get("store", True),
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": body.get("tools") or [], "top_p": 1.0, "truncation": "disabled",
            "usage": responses_usage(turn.usage) if status == "completed" else None,
            "user": None, "metadata": {}}


def responses_events(model: str, body: dict, turn: Turn, size: int) -> list[bytes]:
    done = responses_json(model, body, turn)
    pending = {**done, "status": "in_progress", "output": [], "usage": None}
    item = done["output"][0]
    seq = iter(range(10_000))

    def ev(kind: str, **fields) -> bytes:
        return frame({"type": kind, "sequence_number": next(seq), **fields}, kind)

    events = [ev("response.created", response=pending), ev("response.in_progress", response=pending)]
    if turn.tool:
        events.append(ev("response.output_item.added", output_index=0,
                         item={**item, "status": "in_progress", "arguments": ""}))
        for piece in chunks(turn.tool_json, size):
            events.append(ev("response.function_call_arguments.delta", item_id=item["id"], output_index=0,
                             delta=piece))
        events.append(ev("response.function_call_arguments.done", item_id=item["id"], output_index=0,
                         arguments=turn.tool_json))
    else:
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events.append(ev("response.output_item.added", output_index=0,
                         item={**item, "status": "in_progress", "content": []}))
        events.append(ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0,
                         part=part))
        for piece in chunks(turn.text, size):
            events.append(ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0,
                             delta=piece, logprobs=[]))
        events.append(ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0,
                         text=turn.text, logprobs=[]))
        events.append(ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                         part={**part, "text": turn.text}))
    events.append(ev("response.output_item.done", output_index=0, item=item))
    events.append(ev("response.completed", response=done))
    return events


# ---------------------------------------------------------------- Gemini

def gemini_usage(u: dict, output: int) -> dict:
    out = {"promptTokenCount": u["input"], "candidatesTokenCount": output,
           "totalTokenCount": u["input"] + output,
           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": u["input"]}]}
    return out


def gemini_part(turn: Turn, text: str | None = None) -> dict:
    if turn.tool:
        return {"functionCall": {"name": turn.tool[0], "args": turn.tool[1]}}
    return {"text": turn.text if text is None else text}


def gemini_json(model: str, turn: Turn) -> dict:
    return {"candidates": [{"content": {"parts": [gemini_part(turn)], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": gemini_usage(turn.usage, turn.usage["output"]),
            "modelVersion": model, "responseId": _id("", model, 22)}


def gemini_events(model: str, turn: Turn, size: int) -> list[bytes]:
    rid = _id("", model, 22)
    pieces = [None] if turn.tool else chunks(turn.text, size)
    events = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        so_far = turn.usage["output"] if last else max(1, turn.usage["output"] * (i + 1) // len(pieces))
        cand = {"content": {"parts": [gemini_part(turn, piece)], "role": "model"}, "index": 0}
        if last:
            cand["finishReason"] = "STOP"
        events.append(frame({"candidates": [cand], "usageMetadata": gemini_usage(turn.usage, so_far),
                             "modelVersion": model, "responseId": rid}))
    return events
