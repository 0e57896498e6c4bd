"""Scrub: PII and secrets never leave the machine, and come back restored.

Every user- or tool-written string of a request (never JSON structure, media or
auth headers) is scanned (tokenaddons.engines.pii). Per entity type the action is:
pseudonymize (default: a stable placeholder such as <EMAIL_1>, the same value
from the same caller always the same placeholder, so the provider's prefix
cache survives; the request's own placeholders are restored to the real values
in its answer, streamed or not), redact, hash (keyed), log, or block.

Scanning runs in a worker thread, never on mitmproxy's event loop (one slow scan
would stall every client), and what the detector loads on first use (the public
suffix list, phone numbering plans) loads as the proxy starts, before it
listens, not at the first request. A request that cannot be scanned is refused, not sent unscanned,
unless `scrub_fail_open` is set: a scan failure, and a body on a known API path
that the intake could not read (not UTF-8, not JSON, nested too deep, over
`intake_max_body`). Such a body is metered either way, and never stored.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from mitmproxy import ctx, exceptions, http

from tokenaddons.addons.store import Store
from tokenaddons.engines.history import FoundTurns
from tokenaddons.engines.memo import INLINE_CHARS, SEEN_BODIES, Memo
from tokenaddons.engines.pii import ALL_ENTITIES, Detector
from tokenaddons.engines.placeholders import LABELS, Pseudonyms, Restorer, RestoreTap, restore_strings
from tokenaddons.errors import refuse
from tokenaddons.exchange import RESTORE, Exchange, handled
from tokenaddons.options import check, number
from tokenaddons.providers.base import TextRef, walk_strings
from tokenaddons.providers.sse import is_sse
from tokenaddons.store import connect

log = logging.getLogger(__name__)

ACTIONS = ("pseudonymize", "redact", "hash", "log", "block")
# Where a request is scanned (Scrub._where)
CLEAN, LOOP, THREAD = "clean", "loop", "thread"
# Texts holding findings already known are replaced on the event loop up to
# this many characters in all (string slicing and joining: tens of µs); more
# goes to a worker thread.
INLINE_REPLACE_CHARS = 64 * 1024
SWITCH_INTERVAL = 0.0005  # seconds


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


@dataclass
class Outcome:
    """What scanning one request found and did (worked out in a worker thread)."""

    counts: Counter = field(default_factory=Counter)
    actions: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    changed: bool = False
    restorer: Restorer = field(default_factory=Restorer)
    found_in: list = field(default_factory=list)  # the turns (`TextRef.turn`) of the texts with a finding


class Scrub:
    def __init__(self, store: Store | None = None, detector_factory: Callable[..., Detector] = Detector):
        self.store = store
        self.detector_factory = detector_factory
        self.detector: Detector | None = None
        self.clean_json: Memo[bool] = Memo()  # tool-call arguments this detector found nothing in
        # bodies (by source digest) this detector found nothing in: an identical
        # request again (a retry, a cache hit) is not walked again
        self.clean_bodies: Memo[bool] = Memo(size=SEEN_BODIES)
        # and which turns of recent requests held a finding: the next turn of the
        # conversation scans only what it adds, those turns again, and the
        # texts outside the turns
        self.found_turns = FoundTurns()
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
        loader.add_option("scrub_private_ips", bool, False,
                          "Treat loopback, private, link-local and documentation IP addresses as personal data "
                          "too (by default only globally routable ones are).")
        loader.add_option("scrub_fail_open", bool, False,
                          "If a request cannot be scanned (a scan failure, a body that cannot be read), send it "
                          "unscanned instead of refusing it.")

    def configure(self, updated) -> None:
        self._open_pseudonyms()
        self.enabled = ctx.options.scrub_enabled
        self.fail_open = ctx.options.scrub_fail_open
        if not updated & {"scrub_entities", "scrub_threshold", "scrub_action", "scrub_actions",
                          "scrub_private_ips"} and self.detector:
            return
        check("scrub_threshold")
        entities = tuple(e.strip() for e in ctx.options.scrub_entities.split(",") if e.strip())
        try:
            self.detector = self.detector_factory(entities, number("scrub_threshold"),
                                                  private_ips=ctx.options.scrub_private_ips)
            self.clean_json = Memo(size=self.detector.memo.size)
            self.clean_bodies = Memo(size=SEEN_BODIES)
            self.found_turns = FoundTurns()
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
        self._warm()

    def running(self) -> None:
        # Scans run in worker threads beside the event loop; a thread wanting the GIL
        # waits up to the switch interval (5 ms) each time, and the loop wants it many
        # times per request: hand it over sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))

    def _warm(self) -> None:
        """Load what the detector loads on first use (phonenumbers and its
        numbering plans, tldextract and the public suffix list: about 0.3 s) as
        the proxy starts: the first configure comes before the proxy listens, so
        no request ever waits for it and no scan stalls the others while it loads
        (a thread beside the event loop would: imports hold the GIL). Afterwards
        this costs one small scan."""
        if self.detector is None or not self.enabled:
            return
        start = time.monotonic()
        try:
            self.detector.warm()
        except Exception:
            log.exception("tokenaddons scrub: loading the detector failed; requests will be refused "
                          "(scrub_fail_open=true sends them unscanned)")
            return
        if time.monotonic() - start > 0.5:
            log.info("tokenaddons scrub: the detector loaded in %.1f s", time.monotonic() - start)

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

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or handled(flow) or not self.enabled or self.detector is None:
            return
        if ex.unreadable is not None:
            self._unreadable(flow, ex)
            return
        if not ex.known:
            return
        body_key = ex.unchanged_digest()
        if body_key is not None and self.clean_bodies.peek(body_key):
            return
        continued = ex.continued()
        turns = ex.turns() or []
        only = self.found_turns.to_scan(continued, len(turns))
        try:
            where = self._where(ex, self.detector, only)
            clean = where == CLEAN
            if where == LOOP:  # every finding known, the texts holding them short: replaced here
                outcome = self._scan(ex, self.detector, only)
            elif where == THREAD:
                outcome = await asyncio.to_thread(self._scan, ex, self.detector, only)
            found = not clean and bool(outcome.counts)
            self.found_turns.found(continued, len(turns), outcome.found_in if found else [])
            if not found and body_key is not None:
                self.clean_bodies.remember(body_key, True)
            if clean:
                return
        except Exception:
            log.exception("tokenaddons scrub: scanning %s failed", flow.request.path)
            ex.withhold_body = True
            if self.fail_open:
                ex.decide("scrub", "pass_unscanned", reason="scan failed")
            else:
                ex.decide("scrub", "refuse", reason="scan failed")
                refuse(flow, "scrub", "upstream", "the request could not be scanned for PII and secrets, so it "
                       "was not sent (scrub_fail_open=true sends such requests unscanned)", status=500)
            return
        self._settle(flow, ex, outcome)

    def _unreadable(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """A body on a known API path that could not be read may hold exactly what
        scrub exists to stop: refused (a 400 the SDKs do not retry), or sent
        unscanned if so configured; never stored either way."""
        ex.withhold_body = True
        if self.fail_open:
            ex.decide("scrub", "pass_unscanned", reason=ex.unreadable)
            log.warning("tokenaddons scrub: %s: the body %s; sent unscanned (scrub_fail_open)",
                        flow.request.path, ex.unreadable)
            return
        ex.decide("scrub", "refuse", reason=ex.unreadable)
        refuse(flow, "scrub", "invalid_request",
               f"the request body {ex.unreadable}, so it could not be scanned for PII and secrets and was not "
               "sent (scrub_fail_open=true sends such requests unscanned)", status=400)

    def _where(self, ex: Exchange, detector: Detector, only: list[int] | None = None) -> str:
        """Where the request is scanned, decided on the event loop. CLEAN: every
        text scanned before and found clean (an agent resends its whole history
        every turn), and the few new characters, if any, scanned here and clean
        too. LOOP: the same, but some texts hold findings, all of them known
        and in texts short enough to be replaced here (an email in an earlier
        tool output, replaced again on every turn). THREAD: more new text,
        longer texts with findings, or tool-call arguments not seen clean.
        `only`: the turns to look at (the others are known to hold nothing);
        None: all."""
        texts = []
        clean_json = self.clean_json.peek
        for ref in ex.text_refs(only):
            if ref.json_text:
                if not clean_json(ref.text):
                    return THREAD
                continue
            text = ref.text
            if ref.number and isinstance(ref.key, str):
                text = f"{ref.key}: {text}"
            texts.append(text)
        new, chars, holding = [], 0, 0
        for text, found in zip(texts, detector.memo.peek_many(texts)):
            if found is None:
                chars += len(text)
                if chars > INLINE_CHARS:
                    return THREAD
                new.append(text)
            elif found:
                holding += len(text)
        holding += sum(len(text) for text in new if detector.find(text))
        if holding > INLINE_REPLACE_CHARS:
            return THREAD
        return LOOP if holding else CLEAN

    def _scan(self, ex: Exchange, detector: Detector, only: list[int] | None = None) -> Outcome:
        """Runs in a worker thread: finds and replaces, in the body itself (no
        other hook touches this flow meanwhile), in the turns `only` (the
        others are known to hold nothing; None: all) and the rest of the body."""
        out = Outcome()
        caller = ex.auth_hash or ""
        for ref in list(ex.text_refs(only)):
            found = out.counts.total()
            if ref.json_text:
                self._json_text(ref, detector, caller, out)
            else:
                out.changed |= self._text(ref, detector, caller, out)
            if out.counts.total() != found:
                out.found_in.append(ref.turn)
        return out

    def _json_text(self, ref: TextRef, detector: Detector, caller: str, out: Outcome) -> None:
        """JSON inside a string (tool-call arguments): its values are scanned one by
        one and the JSON written again, so a placeholder never breaks it (a
        number becomes a quoted placeholder). Text that is not JSON (a model's
        broken arguments) has no JSON to keep valid: scanned as text."""
        text = ref.text
        try:
            holder = [json.loads(text)]
        except (ValueError, RecursionError):
            out.changed |= self._text(ref, detector, caller, out)
            return
        changed = False
        found = sum(out.counts.values())
        for inner in list(walk_strings(holder, ref.role)):
            changed |= self._text(inner, detector, caller, out)
        if sum(out.counts.values()) == found:
            self.clean_json.remember(text, True)
        if changed:
            compact = '": ' not in text and '", "' not in text
            ref.text = json.dumps(holder[0], ensure_ascii=False, separators=(",", ":") if compact else None)
            out.changed = True

    def _text(self, ref: TextRef, detector: Detector, caller: str, out: Outcome) -> bool:
        """Scan one value and replace what the actions say; True if it changed."""
        text = ref.text
        # a number is read with its key: `"phone": 4155550199` is a phone number, 4155550199 alone may not be
        prefix = f"{ref.key}: " if ref.number and isinstance(ref.key, str) else ""
        findings = [f for f in detector.find(prefix + text) if f.end > len(prefix)]
        if not findings:
            return False
        parts, pos = [], 0
        for f in findings:
            start, end = max(0, f.start - len(prefix)), f.end - len(prefix)
            action = self.actions.get(f.entity, "log")
            out.counts[f.entity] += 1
            out.actions.add(action)
            if action == "block":
                out.blocked.add(f.entity)
            if action in ("block", "log"):
                continue
            parts += [text[pos:start], self.replacement(action, f.entity, text[start:end], caller, out.restorer)]
            pos = end
        if not parts:
            return False
        ref.text = "".join(parts) + text[pos:]
        return True

    def _settle(self, flow: http.HTTPFlow, ex: Exchange, out: Outcome) -> None:
        if out.blocked:
            ex.withhold_body = True
            ex.decide("scrub", "block", counts=dict(out.counts))
            refuse(flow, "scrub", "invalid_request",
                   f"the request contains {', '.join(sorted(out.blocked))}, which scrub_actions blocks", status=400)
            return
        if out.counts:
            ex.decide("scrub", "+".join(sorted(out.actions)), counts=dict(out.counts))
        if out.changed:
            ex.mark_changed()
        if out.restorer.values:
            ex.state["scrub"] = out.restorer
            if ex.stream:
                ex.add_tap(RestoreTap(ex.client_api.name, out.restorer), RESTORE)

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
