"""Pseudonyms: stable placeholders for scrubbed values, and their way back into
answers (whole or streamed). No mitmproxy here."""
from __future__ import annotations

import copy
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
        self.numbers: dict[tuple[str, str, str], int] = {}  # (caller, label, digest) -> n
        self.counters: Counter = Counter()  # (caller, label) -> highest n
        self.save: Callable[[tuple[str, str, str], int], None] | None = None
        self._lock = threading.Lock()

    def digest(self, value: str) -> str:
        return hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:32]

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


def restore_strings(value: Any, restorer: Restorer, escape: bool = False) -> Any:
    """Restore placeholders in every string of a JSON value; `arguments` fields
    are JSON text themselves."""
    if isinstance(value, str):
        return restorer.restore(value, escape)
    if isinstance(value, dict):
        return {k: restore_strings(v, restorer, escape or k == "arguments") for k, v in value.items()}
    if isinstance(value, list):
        return [restore_strings(v, restorer, escape) for v in value]
    return value


# A streamed delta: (stream key, the dict holding the text, its field, JSON-escaped?)
Delta = tuple[tuple, dict, str, bool]


def deltas(api_name: str, data: dict) -> list[Delta]:
    """The incremental text fields of one streamed event, per wire format."""
    out: list[Delta] = []
    if api_name == "anthropic.messages":
        if data.get("type") == "content_block_delta":
            d = data.get("delta") or {}
            if d.get("type") == "text_delta":
                out.append((("block", data.get("index")), d, "text", False))
            elif d.get("type") == "input_json_delta":
                out.append((("block", data.get("index")), d, "partial_json", True))
    elif api_name == "openai.chat":
        for choice in data.get("choices") or []:
            d = choice.get("delta") or {}
            if isinstance(d.get("content"), str):
                out.append((("choice", choice.get("index"), "content"), d, "content", False))
            for call in d.get("tool_calls") or []:
                fn = call.get("function") or {}
                if isinstance(fn.get("arguments"), str):
                    out.append((("choice", choice.get("index"), "tool", call.get("index")), fn, "arguments", True))
    elif api_name == "openai.responses":
        kind = data.get("type")
        if kind == "response.output_text.delta":
            out.append((("item", data.get("item_id"), data.get("content_index")), data, "delta", False))
        elif kind == "response.function_call_arguments.delta":
            out.append((("item", data.get("item_id"), None), data, "delta", True))
    elif api_name == "gemini.generate":
        for c, cand in enumerate(data.get("candidates") or []):
            for p, part in enumerate((cand.get("content") or {}).get("parts") or []):
                if isinstance(part.get("text"), str):
                    out.append((("cand", c, p), part, "text", False))
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
        done = {c.get("index") for c in data.get("choices") or [] if c.get("finish_reason")}
        return (lambda key: key[1] in done) if done else None
    if api_name == "openai.responses":
        kind = data.get("type") or ""
        if kind.endswith(".done") or kind in ("response.completed", "response.failed", "response.incomplete"):
            item = data.get("item_id") or (data.get("item") or {}).get("id")
            return lambda key: item is None or key[1] == item
    if api_name == "gemini.generate" and any(c.get("finishReason") for c in data.get("candidates") or []):
        return lambda key: True
    return None


class RestoreTap:
    """Restores placeholders in a stream as it passes (a RESTORE-stage tap).
    Only a possible placeholder prefix at the end of a delta is held back, and
    it goes out with the next delta of the same block (or before the block
    ends). Events are never changed in place (other taps share them): a
    changed event is a new one."""

    def __init__(self, api_name: str, restorer: Restorer):
        self.api_name = api_name
        self.restorer = restorer
        self.held: dict[tuple, tuple[str, Callable[[str], Event]]] = {}

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for e in events:
            self._event(e, out)
        return out

    def end(self) -> list[Event]:
        out: list[Event] = []
        self._flush(lambda key: True, out)
        return out

    def restore_whole(self, body: bytes) -> bytes:
        """A stream that arrived whole (a cache hit, a replayed capture)."""
        parser = SSEParser()
        events = self.feed(parser.feed(body)) + self.end()
        return b"".join(e.raw for e in events) + parser.rest()

    def _flush(self, which: Callable[[tuple], bool], out: list[Event]) -> None:
        for key in [k for k in self.held if which(k)]:
            text, make = self.held.pop(key)
            if text:
                out.append(make(text))

    def _event(self, event: Event, out: list[Event]) -> None:
        data = event.json()
        closing = ends(self.api_name, data, event.data)
        if closing:
            self._flush(closing, out)
        if not isinstance(data, dict):
            out.append(event)
            return
        found = deltas(self.api_name, data)
        if not found:
            restored = restore_strings(data, self.restorer)
            out.append(event if restored == data else Event.make(restored, event.event))
        elif not any("<" in holder[field] or key in self.held for key, holder, field, _ in found):
            out.append(event)  # the usual delta: nothing to restore, nothing held
        else:
            data = copy.deepcopy(data)
            for key, holder, field, escape in deltas(self.api_name, data):
                held, _ = self.held.pop(key, ("", None))
                text = self.restorer.restore(held + holder[field], escape)
                cut = PARTIAL.search(text)
                holder[field] = text[:cut.start()] if cut else text
                if cut:
                    self.held[key] = (text[cut.start():], self._maker(data, event.event, holder, field))
            out.append(Event.make(_dumps(data), event.event))  # text: `data` is still held below
        if closing:  # an event that both carries text and ends its block (Gemini's last chunk)
            self._flush(closing, out)

    @staticmethod
    def _maker(data: dict, name: str | None, holder: dict, field: str) -> Callable[[str], Event]:
        """An event like `data` carrying only `text` in the held field, to flush it."""
        original = holder[field]

        def make(text: str) -> Event:
            holder[field] = text
            try:
                return Event.make(_dumps(data), name)
            finally:
                holder[field] = original

        return make


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
