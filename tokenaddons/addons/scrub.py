"""Scrub: PII and secrets never leave the machine, and come back restored.

Every user- or tool-written string of a request (never JSON structure, media or
auth headers) is scanned (tokenaddons.engines.pii). Per entity type the action is:
pseudonymize (default: a stable placeholder such as <EMAIL_1>, the same value
from the same caller always the same placeholder, so the provider's prefix
cache survives; the request's own placeholders are restored to the real values
in its answer, streamed or not), redact, hash (keyed), log, or block.

A scan failure fails closed (the request is refused, not sent unscanned) unless
`scrub_fail_open` is set.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from tokenaddons.addons.store import Store
from tokenaddons.engines.pii import ALL_ENTITIES, Detector
from tokenaddons.engines.placeholders import LABELS, Pseudonyms, Restorer, RestoreTap, restore_strings
from tokenaddons.errors import refuse
from tokenaddons.exchange import RESTORE, Exchange, handled
from tokenaddons.options import check, number
from tokenaddons.providers.sse import is_sse
from tokenaddons.store import connect

log = logging.getLogger(__name__)

ACTIONS = ("pseudonymize", "redact", "hash", "log", "block")


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
        # options, parsed in configure
        self.enabled = True
        self.fail_open = False

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
        self.enabled = ctx.options.scrub_enabled
        self.fail_open = ctx.options.scrub_fail_open
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
        events.add_schema("scrub_schema", MIGRATIONS)
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
        if ex is None or not ex.known or handled(flow) or not self.enabled or self.detector is None:
            return
        try:
            self._scrub(flow, ex)
        except Exception:
            log.exception("tokenaddons scrub: scanning %s failed", flow.request.path)
            if not self.fail_open:
                refuse(flow, "scrub", "upstream", "the request could not be scanned for PII and secrets, so it "
                       "was not sent (scrub_fail_open=true sends such requests unscanned)", status=500)

    def _scrub(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        counts: Counter = Counter()
        restorer = Restorer()
        caller = ex.auth_hash or ""
        blocked: set[str] = set()
        done: set[str] = set()
        changed = False
        for ref in ex.client_api.text_refs(ex.body):
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
                ex.add_tap(RestoreTap(ex.client_api.name, restorer), RESTORE)

    def response(self, flow: http.HTTPFlow) -> None:
        """Placeholders back to values in a whole answer: upstream's, or a cache
        hit (the cache keeps answers with placeholders)."""
        ex = Exchange.of(flow)
        resp = flow.response
        restorer = ex.state.get("scrub") if ex is not None else None
        if restorer is None or resp is None or resp.stream:
            return  # (an answer made here, a refusal, carries no placeholder to restore)
        if is_sse(resp.headers.get("content-type")):  # a stream replayed whole
            resp.content = RestoreTap(ex.client_api.name, restorer).restore_whole(resp.content or b"")
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
