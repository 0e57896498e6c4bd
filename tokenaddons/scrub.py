"""Scrub: PII and secrets never leave the machine, and come back restored.

Every user- or tool-written string of a request (never JSON structure, media or
auth headers) is scanned (tokenaddons.pii). Per entity type the action is:
pseudonymize (default: a stable placeholder such as <EMAIL_1>, the same value
from the same caller always the same placeholder, so the provider's prefix
cache survives; the request's own placeholders are restored to the real values
in its answer, streamed or not), redact, hash (keyed), log, or block.

A scan failure fails closed (the request is refused, not sent unscanned) unless
`scrub_fail_open` is set.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, http

from tokenaddons.errors import refuse
from tokenaddons.exchange import RESTORE, Exchange, handled
from tokenaddons.options import check, number
from tokenaddons.pii import ALL_ENTITIES, Detector
from tokenaddons.providers.sse import SSEParser, frame, is_sse
from tokenaddons.store import Store, connect, migrate

log = logging.getLogger(__name__)

ACTIONS = ("pseudonymize", "redact", "hash", "log", "block")
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
    """Restores placeholders in a stream as it passes. Only a possible placeholder
    prefix at the end of a delta is held back, and it goes out with the next
    delta of the same block (or before the block ends)."""

    def __init__(self, api_name: str, restorer: Restorer):
        self.api_name = api_name
        self.restorer = restorer
        self.parser = SSEParser()
        self.held: dict[tuple, tuple[str, Callable[[str], bytes]]] = {}

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(e) for e in self.parser.feed(chunk))

    def end(self) -> bytes:
        return self._flush(lambda key: True) + self.parser.rest()

    def _flush(self, which: Callable[[tuple], bool]) -> bytes:
        out = b""
        for key in [k for k in self.held if which(k)]:
            text, make = self.held.pop(key)
            if text:
                out += make(text)
        return out

    def _event(self, event) -> bytes:
        data = event.json()
        closing = ends(self.api_name, data, event.data)
        prefix = self._flush(closing) if closing else b""
        if not isinstance(data, dict):
            return prefix + event.raw
        found = deltas(self.api_name, data)
        if not found:
            restored = restore_strings(data, self.restorer)
            return prefix + (event.raw if restored == data else frame(restored, event.event))
        changed = False
        for key, holder, field, escape in found:
            held, _ = self.held.pop(key, ("", None))
            text = self.restorer.restore(held + holder[field], escape)
            cut = PARTIAL.search(text)
            keep = text[cut.start():] if cut else ""
            emit = text[:cut.start()] if cut else text
            if emit != holder[field] or keep:
                changed = True
            holder[field] = emit
            if keep:
                self.held[key] = (keep, self._maker(data, event.event, holder, field))
        body = frame(data, event.event) if changed else event.raw
        # an event that both carries text and ends its block (Gemini's last chunk)
        return prefix + body + (self._flush(closing) if closing else b"")

    @staticmethod
    def _maker(data: dict, name: str | None, holder: dict, field: str) -> Callable[[str], bytes]:
        """An event like `data` carrying only `text` in the held field, to flush it."""
        original = holder[field]

        def make(text: str) -> bytes:
            holder[field] = text
            try:
                return frame(data, name)
            finally:
                holder[field] = original

        return make


MIGRATIONS = [
    """
    CREATE TABLE pseudonyms (caller TEXT NOT NULL, label TEXT NOT NULL, digest TEXT NOT NULL, n INTEGER NOT NULL,
                             PRIMARY KEY (caller, label, digest)) WITHOUT ROWID;
    """,
]


def key_file(store_path: Path) -> Path:
    """The pseudonym key lives beside the store, not in it: the store alone never
    lets anyone test guesses against the remembered digests."""
    return store_path.with_name(store_path.name + ".scrub-key")


def read_or_create_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < 32:
            raise exceptions.OptionsError(f"scrub: the pseudonym key {path} is damaged (under 32 bytes)") from None
        return key
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class Scrub:
    def __init__(self, store: Store | None = None, detector_factory: Callable[..., Detector] = Detector):
        self.store = store
        self.detector_factory = detector_factory
        self.detector: Detector | None = None
        self.pseudonyms = Pseudonyms()
        self.actions: dict[str, str] = {}
        self._pseudonyms_for: str | None = None

    def load(self, loader) -> None:
        loader.add_option("scrub_enabled", bool, True, "Scan requests for PII and secrets.")
        loader.add_option("scrub_entities", str, ",".join(ALL_ENTITIES), "Entity types to find (comma-separated).")
        loader.add_option("scrub_threshold", str, "0.4", "Minimum detection score (0-1).")
        loader.add_option("scrub_action", str, "pseudonymize", f"What to do with a finding: {', '.join(ACTIONS)}.")
        loader.add_option("scrub_actions", str, "",
                          "Per-type overrides, e.g. 'EMAIL_ADDRESS=redact,AWS_ACCESS_KEY=block'.")
        loader.add_option("scrub_fail_open", bool, False,
                          "If scanning fails, send the request unscanned instead of refusing it.")

    def configure(self, updated) -> None:
        self._open_pseudonyms()
        if not updated & {"scrub_entities", "scrub_threshold", "scrub_action", "scrub_actions"} and self.detector:
            return
        check("scrub_threshold")
        entities = tuple(e.strip() for e in ctx.options.scrub_entities.split(",") if e.strip())
        try:
            self.detector = self.detector_factory(entities, number("scrub_threshold"))
        except ValueError as e:
            raise exceptions.OptionsError(f"scrub_entities: {e}") from None
        actions = {e: ctx.options.scrub_action for e in entities}
        for item in filter(None, (x.strip() for x in ctx.options.scrub_actions.split(","))):
            entity, _, action = item.partition("=")
            actions[entity.strip()] = action.strip()
        bad = {a for a in actions.values() if a not in ACTIONS}
        if bad:
            raise exceptions.OptionsError(f"scrub actions must be one of {', '.join(ACTIONS)}, not {', '.join(bad)}")
        self.actions = actions

    def _open_pseudonyms(self) -> None:
        """Numbers given before, and the key they were given under, for this store."""
        events = self.store.events if self.store is not None else None
        if events is None or self._pseudonyms_for == str(events.path):
            return
        self._pseudonyms_for = str(events.path)
        pseudonyms = Pseudonyms(read_or_create_key(key_file(Path(events.path))))
        events.submit(lambda conn: migrate(conn, MIGRATIONS, version_table="scrub_schema"))
        events.flush()
        try:
            with closing(connect(events.path, readonly=True)) as conn:
                pseudonyms.remember(conn.execute("SELECT caller, label, digest, n FROM pseudonyms"))
        except sqlite3.Error as e:
            log.warning("tokenaddons scrub: placeholders given before could not be read (%s); numbering anew", e)

        def save(key: tuple[str, str, str], n: int) -> None:
            events.submit(lambda conn: conn.execute("INSERT OR IGNORE INTO pseudonyms VALUES (?,?,?,?)", (*key, n)))

        pseudonyms.save = save
        self.pseudonyms = pseudonyms

    def replacement(self, action: str, entity: str, value: str, caller: str, restorer: Restorer) -> str:
        label = LABELS.get(entity, entity)
        if action == "pseudonymize":
            placeholder = self.pseudonyms.placeholder(caller, entity, value)
            restorer.values[placeholder] = value
            return placeholder
        if action == "hash":  # keyed: a short value (a phone, an SSN) cannot be found by trying them all
            return f"<{label}_{self.pseudonyms.digest(value)[:10]}>"
        return f"<{label}_REDACTED>"

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or ex.api is None or handled(flow) or not ctx.options.scrub_enabled or self.detector is None:
            return
        try:
            self._scrub(flow, ex)
        except Exception:
            log.exception("tokenaddons scrub: scanning %s failed", flow.request.path)
            if not ctx.options.scrub_fail_open:
                refuse(flow, "scrub", "upstream", "the request could not be scanned for PII and secrets, so it "
                       "was not sent (scrub_fail_open=true sends such requests unscanned)", status=500)

    def _scrub(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        counts: Counter = Counter()
        restorer = Restorer()
        caller = ex.auth_hash or ""
        blocked: set[str] = set()
        done: set[str] = set()
        changed = False
        for ref in ex.api.text_refs(ex.body):
            text = ref.text
            findings = self.detector.find(text)
            if not findings:
                continue
            parts, pos = [], 0
            for f in findings:
                action = self.actions.get(f.entity, "log")
                counts[f.entity] += 1
                done.add(action)
                if action == "block":
                    blocked.add(f.entity)
                if action in ("block", "log"):
                    continue
                value = text[f.start:f.end]
                parts += [text[pos:f.start], self.replacement(action, f.entity, value, caller, restorer)]
                pos = f.end
            if parts:
                new = "".join(parts) + text[pos:]
                # inside JSON text (tool-call arguments) a placeholder must not break the JSON
                ref.text = new if not ref.json_text or _valid_json(new) else text
                changed = changed or ref.text != text
        if blocked:
            ex.decide("scrub", "block", counts=dict(counts))
            refuse(flow, "scrub", "invalid_request",
                   f"the request contains {', '.join(sorted(blocked))}, which scrub_actions blocks", status=400)
            return
        if counts:
            ex.decide("scrub", "+".join(sorted(done)), counts=dict(counts))
        if changed:
            ex.mark_changed()
        if restorer.values:
            ex.state["scrub"] = restorer
            if ex.stream:
                ex.add_tap(RestoreTap(ex.api.name, restorer), RESTORE)

    def response(self, flow: http.HTTPFlow) -> None:
        """Placeholders back to values in a whole answer: upstream's, or a cache
        hit (the cache keeps answers with placeholders)."""
        ex = Exchange.of(flow)
        resp = flow.response
        restorer = ex.state.get("scrub") if ex is not None else None
        if restorer is None or resp is None or resp.stream or ex.answered_by not in (None, "cache"):
            return
        if is_sse(resp.headers.get("content-type")):  # a stream replayed whole
            tap = RestoreTap(ex.api.name, restorer)
            resp.content = tap.feed(resp.content or b"") + tap.end()
            return
        try:
            data = json.loads(resp.content or b"")
        except ValueError:
            return
        restored = restore_strings(data, restorer)
        if restored != data:
            resp.content = json.dumps(restored, ensure_ascii=False).encode()


def _valid_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False
