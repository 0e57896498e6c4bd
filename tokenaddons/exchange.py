"""The per-flow context every addon reads and writes.

Intake creates it in the request phase (`Exchange.of(flow)` finds it later);
addons record what they did as decisions; the meter turns it into one event
row. Stream taps see every response chunk of an SSE answer in order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mitmproxy import http

from tokenaddons.usage import Usage

if TYPE_CHECKING:
    from tokenaddons.providers.base import Api

METADATA_KEY = "tokenaddons"

# Tap stages: a streamed chunk passes the taps in stage order. The meter observes
# upstream's raw bytes, then events the client did not ask for are filtered out,
# then the cache records the stream as the client asked for it but still with
# placeholders (no scrubbed value is ever stored), then pseudonyms are restored.
OBSERVE, FILTER, RECORD, RESTORE = 0, 10, 20, 30


class Tap(Protocol):
    """Sees a streamed response chunk by chunk; may rewrite it.

    `feed` returns the bytes to pass on (possibly held back or rewritten);
    `end` is called once when the upstream stream ends (complete or not) and
    returns whatever was still held back.
    """

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes: ...


class BoundedCopy:
    """A tap that keeps a copy of what passes, up to `limit` bytes: past the
    limit it keeps nothing (a partial copy is never used)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size <= self.limit:
            self.parts.append(chunk)
        elif self.parts:
            self.parts = []
        return chunk

    def end(self) -> bytes:
        return b""

    def body(self) -> bytes | None:
        return None if self.size > self.limit else b"".join(self.parts)


@dataclass
class Decision:
    """One thing an addon did to an exchange (one `decisions` row)."""

    addon: str
    action: str
    detail: dict = field(default_factory=dict)
    tokens_saved: int = 0
    usd_saved: float = 0.0


@dataclass
class Exchange:
    api: Api | None  # None: an endpoint we do not understand (passed through, metered as other)
    body: Any = None  # the request JSON, parsed once; None when not JSON
    project: str | None = None
    client: str | None = None
    auth_hash: str | None = None  # hash of the caller's credential, never the credential
    requested_model: str | None = None  # what the client asked for
    model: str | None = None  # what will be (or was) sent upstream; route may change it
    served_model: str | None = None  # what the provider says answered
    stream: bool = False
    started: float = field(default_factory=time.time)
    first_byte: float | None = None
    dirty: bool = False  # body changed: serialize once at the end of the request phase
    usage: Usage | None = None
    cost_usd: float | None = None
    complete: bool = False  # a full answer arrived (stream finished or body read)
    error_type: str | None = None
    cache_status: str | None = None  # HIT | MISS | BYPASS
    answered_by: str | None = None  # the addon that answered locally (cache, budget, scrub...)
    upstream_body: bytes | None = None  # a non-streamed answer as upstream sent it (decoded)
    decisions: list[Decision] = field(default_factory=list)
    taps: list[tuple[int, Tap]] = field(default_factory=list)
    state: dict = field(default_factory=dict)  # per-addon scratch, keyed by addon name

    @property
    def provider(self) -> str:
        return self.api.provider if self.api else "other"

    @property
    def api_name(self) -> str:
        return self.api.name if self.api else "other"

    @staticmethod
    def of(flow: http.HTTPFlow) -> Exchange | None:
        return flow.metadata.get(METADATA_KEY)

    def attach(self, flow: http.HTTPFlow) -> None:
        flow.metadata[METADATA_KEY] = self

    def mark_changed(self) -> None:
        self.dirty = True

    def decide(self, addon: str, action: str, *, tokens_saved: int = 0,
               usd_saved: float = 0.0, **detail: Any) -> Decision:
        d = Decision(addon, action, detail, tokens_saved, usd_saved)
        self.decisions.append(d)
        return d

    def add_tap(self, tap: Tap, stage: int) -> None:
        """Register a stream tap at a stage (OBSERVE, FILTER, RECORD, RESTORE)."""
        self.taps.append((stage, tap))
        self.taps.sort(key=lambda pair: pair[0])


def handled(flow: http.HTTPFlow) -> bool:
    """True when an earlier addon already answered (later ones skip the flow)."""
    return flow.response is not None
