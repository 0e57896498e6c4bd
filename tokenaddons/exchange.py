"""The per-flow context every addon reads and writes.

Intake creates it in the request phase; `Exchange.of(flow)` finds it later.
It lives beside the flow (a weak map keyed by the flow), never inside
`flow.metadata`, which holds only what mitmproxy can serialize: when the
exchange ends, `summary()` is written to `flow.metadata["tokenaddons"]`, so a
saved flow carries its usage, cost and decisions, and a replayed flow (a new
object) gets a fresh exchange and is metered once.

Addons record what they did as decisions; the meter turns the exchange into one
event row. Stream taps see a streamed answer's events in stage order.
"""
from __future__ import annotations

import hashlib
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mitmproxy import http

from tokenaddons.engines import jsonio
from tokenaddons.engines.usage import Usage

if TYPE_CHECKING:
    from tokenaddons.engines.history import Continued, History
    from tokenaddons.providers.base import Api, TextRef
    from tokenaddons.providers.sse import Event

log = logging.getLogger(__name__)

METADATA_KEY = "tokenaddons"
WITHHELD_KEY = "tokenaddons_withheld"  # what a captured flow says was left out of it

# Tap stages: a streamed event passes the taps in stage order. The meter observes
# upstream's events, then events the client did not ask for are filtered out,
# then route translates them into the client's API (when they differ), then the
# cache records the stream as the client asked for it but still with
# placeholders (no scrubbed value is ever stored), then pseudonyms are restored.
OBSERVE, FILTER, TRANSLATE, RECORD, RESTORE = 0, 10, 15, 20, 30

_LIVE: weakref.WeakKeyDictionary[http.HTTPFlow, Exchange] = weakref.WeakKeyDictionary()
_NOT_OURS: weakref.WeakSet[http.HTTPFlow] = weakref.WeakSet()


class Tap(Protocol):
    """Sees a streamed answer as it passes; may rewrite, drop or hold back events.

    The pump splits server-sent events once and hands every tap the parsed
    events (`feed`); a stream that is not SSE (Gemini's JSON array) is handed
    over as raw bytes to `feed_bytes` instead (which returns the bytes to hand
    on, and may offer `end_bytes` for what it held back). `end` is called once
    when the upstream stream ends, complete or not, and returns what was held back.
    """

    def feed(self, events: list[Event]) -> list[Event]: ...

    def end(self) -> list[Event]: ...


class BoundedCopy:
    """Keeps a copy of what passes, up to `limit` bytes: past the limit it
    keeps nothing (a partial copy is never used). Feeds on events or bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, events: list[Event]) -> list[Event]:
        for e in events:
            self.keep(e.raw)
        return events

    def feed_bytes(self, chunk: bytes) -> bytes:
        self.keep(chunk)
        return chunk

    def keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.limit:
            self.parts.append(chunk)
        elif self.parts:
            self.parts = []

    def end(self) -> list[Event]:
        return []

    def body(self) -> bytes | None:
        return None if self.size > self.limit else b"".join(self.parts)


@dataclass
class Decision:
    """One thing an addon did to an exchange (one `decisions` row).

    `settle`, if set, completes the decision from what the provider billed
    (`exchange.usage`, `exchange.cost_usd`): the meter calls it with the
    decision and the exchange just before writing the row (a plain function,
    not one bound to the decision: no cycle for the collector to find)."""

    addon: str
    action: str
    detail: dict = field(default_factory=dict)
    tokens_saved: int = 0
    usd_saved: float = 0.0
    about: tuple[str, str] | None = None  # (provider, model) it concerns, if not the exchange's (a fallback target)
    settle: Callable[[Decision, Exchange], None] | None = None


Settler = Callable[[http.HTTPFlow, "Exchange"], None]


@dataclass
class Exchange:
    # What the client speaks (error shapes, what streams back) and what is sent
    # upstream (usage parsing); they differ only when route translates.
    # None: an endpoint we do not understand (passed through, metered as other).
    client_api: Api | None
    upstream_api: Api | None = None
    path: str = ""  # the request path as the client sent it (what the row records)
    body: Any = None  # the request JSON, parsed once (see `parse_on_use`); None when not JSON
    source: bytes | None = None  # the bytes `body` was parsed from (decoded), as the client sent them
    # why a body on a known API path could not be read (not UTF-8, not JSON, nested
    # too deep, too large): such an exchange is not `known`, but it keeps its API
    # (its error shape, its metering) and scrub refuses it unless told otherwise
    unreadable: str | None = None
    withhold_body: bool = False  # the body holds what scrub did not clear: never stored
    project: str | None = None
    client: str | None = None
    auth_hash: str | None = None  # hash of the caller's credentials, never a credential
    requested_model: str | None = None  # what the client asked for
    model: str | None = None  # what will be (or was) sent upstream; route may change it
    upstream_provider: str | None = None  # the provider route sent it to, by its settings name (e.g. "groq")
    # route's chain of (provider, model) targets, in order: budgets reserve at the dearest
    chain: list[tuple[str, str]] = field(default_factory=list)
    # upstream answers route did not pass on (it fell back): (provider, status, retry-after seconds)
    upstream_refusals: list[tuple[str, int, float | None]] = field(default_factory=list)
    served_model: str | None = None  # what the provider says answered
    stream: bool = False
    started: float = field(default_factory=time.time)
    first_byte: float | None = None
    dirty: bool = False  # body changed: serialize once at the end of the request phase
    body_version: int = 0  # bumped by every change, so derived values know when to recompute
    usage: Usage | None = None
    cost_usd: float | None = None
    complete: bool = False  # a full answer arrived (stream finished or body read)
    error_type: str | None = None
    cache_status: str | None = None  # HIT | MISS | BYPASS
    answered_by: str | None = None  # the addon that answered locally (cache, budget, scrub...)
    upstream_body: bytes | None = None  # a non-streamed answer as upstream sent it (decoded)
    decisions: list[Decision] = field(default_factory=list)
    taps: list[tuple[int, Tap]] = field(default_factory=list)
    settlers: list[tuple[str, Settler]] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # per-addon scratch, keyed by addon name
    _input_tokens: tuple[int, int] | None = None  # (body_version, count)
    _text_refs: tuple[int, Any, Any, list[TextRef]] | None = None  # (body_version, body, only, refs)
    _source_digest: bytes | None = None
    history: History | None = None  # the turns of recent requests (Intake's), for `continued`
    turns_json: tuple[bytes, ...] | None = None  # the client's turns as History writes them, if Intake did
    _parse_from: bytes | None = None  # what a shelved body is parsed from again (`shelve`), if not `source`
    # an addon reads the parsed body once the request has gone upstream (route's
    # relay builds each attempt from it): it is kept, never shelved and parsed again
    keeps_body: bool = False
    _continued: Continued | None | bool = False  # False: not matched yet

    def __post_init__(self) -> None:
        if self.upstream_api is None:
            self.upstream_api = self.client_api

    @property
    def known(self) -> bool:
        """An API we understand (a parsed JSON body on a known path)."""
        return self.client_api is not None and self._body is not None

    def parse_on_use(self) -> None:
        """`body` is parsed from `source` when an addon first reads it: Intake
        knows these very bytes parse (it parsed them before), and a request
        answered from what is remembered of its bytes (a cache hit, a body
        found clean before) needs no parse at all."""
        self._body = _UNPARSED

    def shelve(self, sent: bytes | None) -> bool:
        """Let go of the parsed body once the request has gone upstream (`sent`:
        its body's bytes as sent, uncompressed). With many requests waiting on
        upstream at once, each parsed body would otherwise sit in memory, and
        in each garbage collection's walk, until its answer comes back; freed
        now, while it is fresh in the CPU's caches, it costs a fraction. An
        addon that reads it later (a fallback to another provider, an estimate
        of usage the answer did not report) parses it again from those bytes
        (the client's own while no addon changed it): the same body.
        True if it was let go of."""
        body = self._body
        if body is None or body is _UNPARSED or self.keeps_body:
            return False
        if self.body_version == 0 and self.source is not None:
            self._parse_from = None
        elif sent is not None and not self.dirty:
            self._parse_from = sent
        else:
            return False
        self._body = _UNPARSED
        self._text_refs = None
        self.turns_json = None
        return True

    @property
    def provider(self) -> str:
        """The provider the request goes to (and is billed by)."""
        if self.upstream_provider:
            return self.upstream_provider
        return self.upstream_api.provider if self.upstream_api else "other"

    @property
    def api_name(self) -> str:
        return self.upstream_api.name if self.upstream_api else "other"

    @staticmethod
    def of(flow: http.HTTPFlow) -> Exchange | None:
        return _LIVE.get(flow)

    def attach(self, flow: http.HTTPFlow) -> None:
        _LIVE[flow] = self

    def mark_changed(self) -> None:
        self.dirty = True
        self.body_version += 1

    def input_tokens(self) -> int:
        """The request's input tokens, counted locally once per body version
        (rate limits and budgets both need it)."""
        from tokenaddons.engines import tokens

        if self._input_tokens is None or self._input_tokens[0] != self.body_version:
            n = tokens.estimate_input_tokens(self.upstream_api, self.body, self.model)
            self._input_tokens = (self.body_version, n)
        return self._input_tokens[1]

    def source_digest(self) -> bytes | None:
        """SHA-256 of the client's body bytes, computed once: the cache key and
        the memos of bodies seen before (guard, scrub) share it."""
        if self._source_digest is None and self.source is not None:
            self._source_digest = hashlib.sha256(self.source).digest()
        return self._source_digest

    def unchanged_digest(self) -> bytes | None:
        """`source_digest()` while the body is still the client's own (no addon
        changed it), else None."""
        return self.source_digest() if self.body_version == 0 and self._body is not None else None

    def text_refs(self, only: Sequence[int] | None = None) -> list[TextRef]:
        """The client's texts in the body (`client_api.text_refs`), of its turns
        only those at the indexes `only` (None: all), walked once per body
        version: guard and scrub read the same list."""
        key = None if only is None else tuple(only)
        cached = self._text_refs
        if cached is None or cached[0] != self.body_version or cached[1] is not self.body or cached[2] != key:
            refs = list(self.client_api.text_refs(self.body, key)) if self.known else []
            cached = self._text_refs = (self.body_version, self.body, key, refs)
        return cached[3]

    def turns(self) -> list | None:
        """The body's turns (`client_api.turns`), or None."""
        return self.client_api.turns(self.body) if self.known else None

    def continued(self) -> Continued | None:
        """Which earlier request this one continues, and for how many leading
        turns (`History.match`), matched once, on the client's own body: None
        once an addon changed it (what an addon learnt of the earlier request's
        turns is of them as the client sent them), or without turns."""
        found = self._continued
        if found is False:
            if self.body_version != 0 or self.history is None or (turns := self.turns()) is None:
                return None
            try:
                found = self.history.match(turns, self.client_api.name, self.turns_json)
            except Exception:  # never a reason to scan less: the addons walk every turn
                log.exception("tokenaddons: matching %s with earlier requests failed", self.path)
                found = None
            self._continued = found
        return found if self.body_version == 0 else None

    def release(self) -> None:
        """Let go of what only handling the request and its answer needed (the
        parsed body and its bytes, the walk of its texts, taps, settlers, the
        addons' scratch) once the exchange has ended and its summary is kept.
        mitmproxy's flows are freed only by the cyclic garbage collector, and an
        exchange lives as long as its flow: without this, a finished agent
        request's thousands of parsed objects would wait for a collection, and
        each collection until then would walk them."""
        self.body = None
        self.source = None
        self._parse_from = None
        self.turns_json = None
        self._text_refs = None
        self.upstream_body = None
        self.taps = []
        self.settlers = []
        # the addons' scratch, but for its flags ("metered", "settled"): a late
        # error hook must still find the exchange accounted for
        self.state = {k: v for k, v in self.state.items() if v is True}

    def decide(self, addon: str, action: str, *, tokens_saved: int = 0,
               usd_saved: float = 0.0, about: tuple[str, str] | None = None, **detail: Any) -> Decision:
        d = Decision(addon, action, detail, tokens_saved, usd_saved, about)
        self.decisions.append(d)
        return d

    def add_tap(self, tap: Tap, stage: int) -> None:
        """Register a stream tap at a stage (OBSERVE, FILTER, TRANSLATE, RECORD, RESTORE)."""
        self.taps.append((stage, tap))
        self.taps.sort(key=lambda pair: pair[0])

    def on_settle(self, addon: str, fn: Settler) -> None:
        """Run `fn(flow, exchange)` when the exchange ends, after the meter
        (fill the cache, settle a budget reservation), in the order registered."""
        self.settlers.append((addon, fn))

    def summary(self) -> dict:
        """What a saved flow keeps: serializable, and never a scrubbed value."""
        return {
            "provider": self.provider, "api": self.api_name,
            "client_api": self.client_api.name if self.client_api else "other",
            "requested_model": self.requested_model, "model": self.served_model or self.model,
            "project": self.project, "stream": self.stream, "complete": self.complete,
            "usage": self.usage.as_row() if self.usage else None, "cost_usd": self.cost_usd,
            "cache": self.cache_status, "answered_by": self.answered_by, "error_type": self.error_type,
            "decisions": [{"addon": d.addon, "action": d.action, "tokens_saved": d.tokens_saved,
                           "usd_saved": d.usd_saved} for d in self.decisions],
        }


_UNPARSED = object()


def _get_body(ex: Exchange) -> Any:
    body = ex._body
    if body is _UNPARSED:
        body = ex._body = jsonio.loads(ex._parse_from if ex._parse_from is not None else ex.source)
    return body


def _set_body(ex: Exchange, value: Any) -> None:
    ex._body = value


# after the dataclass is made: its __init__ and every `ex.body = ...` go through the setter
Exchange.body = property(_get_body, _set_body, doc="The request JSON (parsed on first use after `parse_on_use`).")


def handled(flow: http.HTTPFlow) -> bool:
    """True for a flow answered locally in any way: a response set here, or a
    request that will be answered without going upstream (a cache follower
    relayed from its leader's stream). Every later addon skips it."""
    if flow.response is not None:
        return True
    ex = _LIVE.get(flow)
    return ex is not None and ex.answered_by is not None


def pass_through(flow: http.HTTPFlow) -> None:
    """Mark a flow as none of ours (a host that is not intercepted): it gets no
    exchange, so no addon touches it and no row is written."""
    _NOT_OURS.add(flow)


def passed_through(flow: http.HTTPFlow) -> bool:
    return flow in _NOT_OURS
