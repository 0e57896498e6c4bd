"""Pseudonyms: stable placeholders for scrubbed values, and their way back into
answers (whole or streamed). No mitmproxy here."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from tokenaddons.providers.sse import Event, SSEParser

LABELS = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CARD", "US_SSN": "SSN",
          "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP"}


PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)_(\d+)>")


PARTIAL = re.compile(r"<[A-Z0-9_]{0,40}$")  # what may be the start of a placeholder cut by a delta


class Pseudonyms:
    """value -> placeholder, stable per caller: the same value sent with the same
    credential always gets the same placeholder, in every request and after a
    restart, so the provider's prefix cache and our own cache keys survive.

    No value is kept on disk: numbers are remembered by a keyed hash (HMAC) of
    the value, with a key kept apart from the store (see Scrub.configure).
    Numbering is per caller, so one caller's placeholders say nothing of another's.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else os.urandom(32)
        self._keyed = hmac.new(self.key, digestmod=hashlib.sha256)  # copied per value: no key setup each time
        self.numbers: dict[tuple[str, str, str], int] = {}  # (caller, label, digest) -> n
        self.counters: Counter = Counter()  # (caller, label) -> highest n
        self.save: Callable[[tuple[str, str, str], int], None] | None = None
        self._lock = threading.Lock()

    def digest(self, value: str) -> str:
        h = self._keyed.copy()
        h.update(value.encode())
        return h.hexdigest()[:32]

    def remember(self, rows) -> None:
        """Numbers given before (caller, label, digest, n), from the store."""
        with self._lock:
            for caller, label, digest, n in rows:
                self.numbers[(caller, label, digest)] = n
                self.counters[(caller, label)] = max(self.counters[(caller, label)], n)

    def placeholder(self, caller: str, entity: str, value: str) -> str:
        label = LABELS.get(entity, entity)
        key = (caller, label, self.digest(value))
        with self._lock:
            n = self.numbers.get(key)
            if n is None:
                self.counters[(caller, label)] += 1
                n = self.numbers[key] = self.counters[(caller, label)]
                if self.save is not None:
                    self.save(key, n)
        return f"<{label}_{n}>"


class Restorer:
    """The placeholders one request was given, back to their values in its answer.
    Only this request's own placeholders: a model that echoes another caller's
    placeholder gets it back as it was."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def restore(self, text: str, escape: bool = False) -> str:
        """Every placeholder of this request back to its value (JSON-escaped inside JSON text)."""
        if "<" not in text:
            return text

        def real(m: re.Match) -> str:
            value = self.values.get(m.group(0))
            if value is None:
                return m.group(0)
            return json.dumps(value)[1:-1] if escape else value

        return PLACEHOLDER.sub(real, text)

    def could_start(self, text: str) -> bool:
        """Could `text` be the beginning of one of this request's placeholders?"""
        return any(p.startswith(text) for p in self.values)


# Signed content is given back to the provider byte for byte: a placeholder the
# model wrote there stays (scrub never reads it in a request either).
SIGNED_TYPES = frozenset({"thinking", "redacted_thinking", "thinking_delta", "signature_delta"})


def restore_strings(value: Any, restorer: Restorer, escape: bool = False,
                    skip: frozenset[tuple[int, str]] = frozenset()) -> Any:
    """Restore placeholders in every string of a JSON value but signed thinking;
    string `arguments` fields are JSON text themselves. `skip`: (id of a dict,
    key) pairs left as they are (a stream's deltas, restored on their own)."""
    if isinstance(value, str):
        return restorer.restore(value, escape)
    if isinstance(value, dict):
        if value.get("type") in SIGNED_TYPES or value.get("thought") is True:
            return value
        return {k: v if (id(value), k) in skip else
                restore_strings(v, restorer, escape or (k == "arguments" and isinstance(v, str)), skip)
                for k, v in value.items()}
    if isinstance(value, list):
        return [restore_strings(v, restorer, escape, skip) for v in value]
    return value


def maybe_placeholder(raw: str) -> bool:
    """Could this JSON text hold a placeholder? ('<' may come escaped as \\u003c)"""
    return "<" in raw or "\\u003" in raw


# A streamed delta: (stream key, the dict holding the text, its field, JSON-escaped?,
# an event carrying only a given text in that field, to send held text on its own)
Delta = tuple[tuple, dict, str, bool, Callable[[str], dict]]

# Responses' streamed text events: their `delta` is JSON text (escaped) or plain
RESPONSES_DELTAS = {
    "response.output_text.delta": False, "response.refusal.delta": False,
    "response.reasoning_summary_text.delta": False, "response.reasoning_text.delta": False,
    "response.custom_tool_call_input.delta": False, "response.code_interpreter_call_code.delta": False,
    "response.function_call_arguments.delta": True, "response.mcp_call_arguments.delta": True,
}


def deltas(api_name: str, data: dict) -> list[Delta]:
    """The incremental text fields of one streamed event, per wire format."""
    out: list[Delta] = []
    if api_name in ("anthropic.messages", "anthropic.count_tokens"):
        d = data.get("delta") if data.get("type") == "content_block_delta" else None
        kind = d.get("type") if isinstance(d, dict) else None
        field, escape = {"text_delta": ("text", False), "input_json_delta": ("partial_json", True)}.get(
            kind, (None, False))
        if field and isinstance(d.get(field), str):
            index = data.get("index")
            out.append((("block", index), d, field, escape, lambda t, i=index, k=kind, f=field: {
                "type": "content_block_delta", "index": i, "delta": {"type": k, f: t}}))
    elif api_name == "openai.chat":
        top = {k: v for k, v in data.items() if k not in ("choices", "usage")}
        for choice in data.get("choices") or []:
            d = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(d, dict):
                continue
            ci = choice.get("index")

            def chunk(delta: dict, ci=ci) -> dict:
                return {**top, "choices": [{"index": ci, "delta": delta}]}

            for field in ("content", "refusal"):
                if isinstance(d.get(field), str):
                    out.append((("choice", ci, field), d, field, False, lambda t, f=field, c=chunk: c({f: t})))
            for call in d.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    ti = call.get("index")
                    out.append((("choice", ci, "tool", ti), fn, "arguments", True, lambda t, ti=ti, c=chunk: c(
                        {"tool_calls": [{"index": ti, "function": {"arguments": t}}]})))
            fn = d.get("function_call")
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                out.append((("choice", ci, "function"), fn, "arguments", True,
                            lambda t, c=chunk: c({"function_call": {"arguments": t}})))
    elif api_name == "openai.responses":
        kind = data.get("type")
        if kind in RESPONSES_DELTAS and isinstance(data.get("delta"), str):
            index = data.get("content_index", data.get("summary_index"))
            out.append((("item", data.get("item_id"), kind, index), data, "delta", RESPONSES_DELTAS[kind],
                        lambda t, d=data: {**d, "delta": t}))
    elif api_name == "gemini.generate":
        top = {k: v for k, v in data.items() if k in ("modelVersion", "responseId")}
        for c, cand in enumerate(data.get("candidates") or []):
            content = cand.get("content") if isinstance(cand, dict) else None
            for p, part in enumerate((content or {}).get("parts") or []):
                if isinstance(part, dict) and isinstance(part.get("text"), str) and not part.get("thought"):
                    ci = cand.get("index", c)
                    out.append((("cand", ci, p), part, "text", False, lambda t, ci=ci, r=content.get("role"): {
                        **top, "candidates": [{"index": ci, "content": {"role": r, "parts": [{"text": t}]}}]}))
    return out


def ends(api_name: str, data: Any, raw_data: str) -> Callable[[tuple], bool] | None:
    """Which held streams an event closes (their held text must go out before it)."""
    if raw_data == "[DONE]":
        return lambda key: True
    if not isinstance(data, dict):
        return None
    if api_name == "anthropic.messages" and data.get("type") in ("content_block_stop", "message_delta", "message_stop"):
        index = data.get("index")
        return lambda key: index is None or key[1] == index
    if api_name == "openai.chat":
        done = {c.get("index") for c in data.get("choices") or [] if isinstance(c, dict) and c.get("finish_reason")}
        return (lambda key: key[1] in done) if done else None
    if api_name == "openai.responses":
        kind = data.get("type") or ""
        if kind.endswith(".done") or kind in ("response.completed", "response.failed", "response.incomplete"):
            item = data.get("item_id") or (data.get("item") or {}).get("id")
            return lambda key: item is None or key[1] == item
    if api_name == "gemini.generate" and any(isinstance(c, dict) and c.get("finishReason")
                                             for c in data.get("candidates") or []):
        return lambda key: True
    return None


class RestoreTap:
    """Restores placeholders in a stream as it passes (a RESTORE-stage tap).
    Only a possible placeholder prefix at the end of a delta is held back, and
    it goes out with the next delta of the same block (or, on its own, before
    the block ends). Events are never changed in place (other taps share them):
    a changed event is a new one.

    A stream that is one JSON array sent an element at a time (Gemini without
    alt=sse) comes as bytes (`feed_bytes`): each complete element is restored
    like an event, and the bytes between elements pass as they came."""

    def __init__(self, api_name: str, restorer: Restorer):
        self.api_name = api_name
        self.restorer = restorer
        self.held: dict[tuple, tuple[str, Callable[[str], dict], str | None]] = {}
        self.array = JsonArraySplitter()

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for e in events:
            self._event(e, out)
        return out

    def end(self) -> list[Event]:
        out: list[Event] = []
        self._flush(lambda key: True, out)
        return out

    def feed_bytes(self, chunk: bytes) -> bytes:
        out = bytearray()
        for piece, element in self.array.feed(chunk):
            if not element:
                if self.held and (close := piece.rfind(b"]")) >= 0:  # held text goes in before the array ends
                    piece = piece[:close] + b"".join(b",\r\n" + e.data.encode() for e in self.end()) + piece[close:]
                out += piece
                continue
            events = self.feed([Event(None, piece.decode("utf-8", "replace"), piece)])
            out += b",\r\n".join(e.raw if e.raw is piece else e.data.encode() for e in events)
        return bytes(out)

    def end_bytes(self) -> bytes:
        held = self.end()
        tail = b"".join(b",\r\n" + e.data.encode() for e in held)
        return tail + self.array.rest()

    def restore_whole(self, body: bytes) -> bytes:
        """A stream that arrived whole (a cache hit, a replayed capture)."""
        parser = SSEParser()
        events = self.feed(parser.feed(body)) + self.end()
        return b"".join(e.raw for e in events) + parser.rest()

    def _flush(self, which: Callable[[tuple], bool], out: list[Event]) -> None:
        for key in [k for k in self.held if which(k)]:
            text, make, name = self.held.pop(key)
            if text:
                out.append(Event.make(make(text), name))

    def _event(self, event: Event, out: list[Event]) -> None:
        data = event.json()
        closing = ends(self.api_name, data, event.data)
        if not isinstance(data, dict):
            if closing:
                self._flush(closing, out)
            out.append(event)
            return
        found = deltas(self.api_name, data)
        here = {d[0] for d in found}
        if closing:  # held text of blocks this event ends goes out first (unless the event carries more)
            self._flush(lambda key: closing(key) and key not in here, out)
        if not here & self.held.keys() and not maybe_placeholder(event.data):
            out.append(event)  # the usual event: nothing to restore, nothing held
            return
        originals = [holder[field] for _, holder, field, _, _ in found]
        # all of it (a function call beside the text too) but the deltas, restored below with what was held
        restored = restore_strings(data, self.restorer, skip=frozenset((id(h), f) for _, h, f, _, _ in found))
        moved = False  # held text came in or went out
        for original, (key, holder, field, escape, make) in zip(originals, deltas(self.api_name, restored)):
            held = self.held.pop(key, ("",))[0]
            text = self.restorer.restore(held + original if held else original, escape)
            # a possible placeholder's start at the end waits for the next delta, unless this one ends it
            cut = None if closing and closing(key) else PARTIAL.search(text, max(0, len(text) - 48))
            if cut and not self.restorer.could_start(cut.group()):
                cut = None
            holder[field] = text[:cut.start()] if cut else text
            if cut:
                self.held[key] = (text[cut.start():], make, event.event)
            moved = moved or bool(held) or cut is not None
        # (a placeholder of someone else's, say, is left as it came: the event too)
        out.append(event if not moved and restored == data else Event.make(restored, event.event))


class JsonArraySplitter:
    """Splits a JSON array arriving in pieces into its elements (objects) and
    the bytes between them. Linear: the scan resumes where it stopped."""

    INTERESTING = re.compile(rb'["{}\[\]]')
    IN_STRING = re.compile(rb'["\\]')

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0  # where the scan resumes
        self.start = -1  # where the current element began (-1: between elements)
        self.depth = 0
        self.in_string = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bool]]:
        """(bytes, is a whole element) pieces, in order; an unfinished element waits."""
        self.buf += chunk
        out: list[tuple[bytes, bool]] = []
        done = 0  # bytes of buf already handed out
        buf, pos = self.buf, self.pos
        while pos < len(buf):
            if self.in_string:
                m = self.IN_STRING.search(buf, pos)
                if m is None:
                    pos = len(buf)
                    break
                if m.group() == b"\\":
                    if m.end() >= len(buf):
                        pos = m.start()  # the escaped character has not arrived yet
                        break
                    pos = m.end() + 1
                    continue
                self.in_string = False
                pos = m.end()
                continue
            m = self.INTERESTING.search(buf, pos)
            if m is None:
                pos = len(buf)
                break
            c = m.group()
            pos = m.end()
            if c == b'"':
                self.in_string = True
            elif c == b"{":
                if self.depth == 0:
                    if m.start() > done:
                        out.append((bytes(buf[done:m.start()]), False))
                    self.start = done = m.start()
                self.depth += 1
            elif c == b"}":
                self.depth -= 1
                if self.depth == 0 and self.start >= 0:
                    out.append((bytes(buf[self.start:pos]), True))
                    self.start = -1
                    done = pos
        if self.start < 0 and done < len(buf) and pos >= len(buf):
            out.append((bytes(buf[done:]), False))  # separators and brackets go out at once
            done = len(buf)
        del buf[:done]
        self.pos = pos - done
        if self.start >= 0:
            self.start -= done
        return out

    def rest(self) -> bytes:
        """What was left unfinished (a stream cut mid-element) goes out as it is."""
        rest, self.buf = bytes(self.buf), bytearray()
        return rest
