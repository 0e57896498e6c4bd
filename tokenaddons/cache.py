"""Exact-match response cache: two tiers, streams replayed, concurrent twins coalesced.

`Cache` sits after scrub in the request phase (the key is what would really be
sent) and answers hits; `CacheFill` sits after the meter and stores complete
answers with the usage and cost they were billed, which a hit then records as
saved. A stream and a non-stream request for the same thing share a key but
not an entry: each form is stored as the client received it, and a request for
the other form is a miss (see docs/cache.md).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import ctx, http

from tokenaddons.exchange import RECORD, BoundedCopy, Exchange, handled
from tokenaddons.fanout import Broadcast, FanoutServer
from tokenaddons.options import check, number
from tokenaddons.store import Store, connect, migrate
from tokenaddons.usage import Usage

log = logging.getLogger(__name__)

HEADER = "x-tokenaddons-cache"
# Request headers that change the answer; everything else (user agent, retries...) does not.
VARY = ("anthropic-version", "anthropic-beta", "openai-beta", "openai-organization", "openai-project")
# Fields that never change the answer: Anthropic's per-session user id, the stream flag.
MIGRATIONS = [
    """
    CREATE TABLE cache_entries (
        key TEXT PRIMARY KEY, created REAL NOT NULL, expires REAL NOT NULL, last_used REAL NOT NULL,
        content_type TEXT, body BLOB NOT NULL, model TEXT, usage TEXT, cost_usd REAL, size INTEGER NOT NULL
    );
    CREATE INDEX cache_entries_last_used ON cache_entries(last_used);
    """,
]


@dataclass
class Entry:
    body: bytes
    content_type: str
    created: float
    expires: float
    model: str | None
    usage: dict
    cost_usd: float | None

    @property
    def size(self) -> int:
        return len(self.body) + 256


def canonical_body(body) -> bytes:
    if isinstance(body, dict):
        body = dict(body)
        body.pop("stream", None)
        meta = body.get("metadata")
        if isinstance(meta, dict) and "user_id" in meta:
            body["metadata"] = {k: v for k, v in meta.items() if k != "user_id"} or None
            if body["metadata"] is None:
                del body["metadata"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(flow: http.HTTPFlow, ex: Exchange) -> str:
    """Provider, path, caller identity, answer-changing headers and the normalized body."""
    path = flow.request.path.split("?")[0]
    query = sorted((k, v) for k, v in flow.request.query.items(multi=True) if k not in ("key", "alt"))
    h = hashlib.sha256()
    h.update(json.dumps([ex.provider, path, query, ex.auth_hash,
                         [(name, flow.request.headers.get(name)) for name in VARY]]).encode())
    h.update(canonical_body(ex.body))
    return h.hexdigest()


class Tiers:
    """A memory LRU bounded in bytes in front of an SQLite table in the event store's file."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.memory: OrderedDict[str, Entry] = OrderedDict()
        self.memory_bytes = 0
        self.memory_max = 64 << 20
        self.disk_max = 1 << 30
        self._read: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.store: Store | None = None

    def open(self, store: Store) -> None:
        self.store = store
        events = store.events
        assert events is not None
        conn = connect(events.path)
        migrate(conn, MIGRATIONS, version_table="cache_schema")
        conn.close()
        self._read = connect(events.path)

    def close(self) -> None:
        if self._read:
            self._read.close()
            self._read = None

    # memory tier
    def _remember(self, key: str, entry: Entry) -> None:
        old = self.memory.pop(key, None)
        if old:
            self.memory_bytes -= old.size
        self.memory[key] = entry
        self.memory_bytes += entry.size
        while self.memory_bytes > self.memory_max and self.memory:
            _, evicted = self.memory.popitem(last=False)
            self.memory_bytes -= evicted.size

    def get_memory(self, key: str) -> Entry | None:
        entry = self.memory.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            self.memory.pop(key)
            self.memory_bytes -= entry.size
            return None
        self.memory.move_to_end(key)
        return entry

    def get_disk(self, key: str) -> Entry | None:
        """Blocking read: called off the event loop."""
        if self._read is None:
            return None
        with self._read_lock:
            row = self._read.execute("SELECT * FROM cache_entries WHERE key = ?", (key,)).fetchone()
        if row is None or row["expires"] <= self.clock():
            return None
        entry = Entry(row["body"], row["content_type"], row["created"], row["expires"], row["model"],
                      json.loads(row["usage"] or "{}"), row["cost_usd"])
        self._remember(key, entry)
        return entry

    def put(self, key: str, entry: Entry) -> None:
        self._remember(key, entry)
        events = self.store.events if self.store else None
        if events is None:
            return
        disk_max = self.disk_max

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO cache_entries VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (key, entry.created, entry.expires, entry.created, entry.content_type, entry.body,
                          entry.model, json.dumps(entry.usage), entry.cost_usd, entry.size))
            conn.execute("DELETE FROM cache_entries WHERE expires <= ?", (entry.created,))
            total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM cache_entries").fetchone()[0]
            if total > disk_max:  # evict least recently used until under the cap
                conn.execute("""DELETE FROM cache_entries WHERE key IN (
                    SELECT key FROM (SELECT key, SUM(size) OVER (ORDER BY last_used DESC) AS running
                                     FROM cache_entries) WHERE running > ?)""", (disk_max,))

        events.submit(write)

    def touch(self, key: str) -> None:
        events = self.store.events if self.store else None
        if events is not None:
            now = self.clock()
            events.submit(lambda conn: conn.execute("UPDATE cache_entries SET last_used = ? WHERE key = ?",
                                                    (now, key)))


class Recorder(BoundedCopy):
    """Keeps a copy of a stream as the client asked for it, placeholders not yet
    restored (a RECORD-stage tap), and hands each chunk on to identical requests
    following it (each restores its own)."""

    def __init__(self, limit: int, broadcast: Broadcast | None = None):
        super().__init__(limit)
        self.broadcast = broadcast

    def feed(self, chunk: bytes) -> bytes:
        if self.broadcast is not None:
            self.broadcast.push(chunk)
        return super().feed(chunk)


class Cache:
    """Looks requests up and answers hits; coalesces concurrent identical misses."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time):
        self.store = store
        self.clock = clock
        self.tiers = Tiers(clock)
        self.inflight: dict[str, asyncio.Future] = {}
        self.broadcasts: dict[str, Broadcast] = {}  # streams in flight, by key
        self.fanout = FanoutServer()

    def load(self, loader) -> None:
        loader.add_option("cache_enabled", bool, True, "Answer exact repeats of LLM requests from the cache.")
        loader.add_option("cache_ttl", int, 3600, "Seconds a cached answer stays valid.")
        loader.add_option("cache_memory_bytes", int, 64 << 20, "Bytes of cached answers kept in memory.")
        loader.add_option("cache_max_bytes", int, 1 << 30, "Bytes of cached answers kept on disk (LRU eviction).")
        loader.add_option("cache_max_entry_bytes", int, 8 << 20, "Answers larger than this are not cached.")
        loader.add_option("cache_wait_s", str, "120",
                          "How long a request waits for an identical one already in flight.")

    def configure(self, updated) -> None:
        check("cache_wait_s")
        self.tiers.memory_max = ctx.options.cache_memory_bytes
        self.tiers.disk_max = ctx.options.cache_max_bytes
        if "store_path" in updated or self.tiers.store is None:
            self.tiers.close()
            if self.store.events is not None:
                self.tiers.open(self.store)

    async def running(self) -> None:
        await self.fanout.start()

    def done(self) -> None:
        self.tiers.close()
        self.fanout.stop()

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or ex.api is None or handled(flow) or not ctx.options.cache_enabled:
            return
        mode = self._mode(flow)
        if mode == "bypass":
            ex.cache_status = "BYPASS"
            return
        key = f"{cache_key(flow, ex)}:{'sse' if ex.stream else 'json'}"
        ex.state["cache"] = {"key": key, "store": mode != "no-store"}
        broadcast = None
        if mode == "normal":
            entry = self.tiers.get_memory(key) or await asyncio.to_thread(self.tiers.get_disk, key)
            if entry is None and key in self.inflight:
                flowing = self.broadcasts.get(key)
                if flowing is not None and self.fanout.server is not None:
                    if await self._follow(flow, ex, key, flowing):
                        return
                else:
                    entry = await self._wait(self.inflight[key])
            if entry is not None:
                return self._serve(flow, ex, key, entry)
            if key not in self.inflight:
                self.inflight[key] = asyncio.get_running_loop().create_future()
                ex.state["cache"]["leader"] = True
                if ex.stream:
                    broadcast = self.broadcasts[key] = ex.state["cache"]["broadcast"] = Broadcast()
        ex.cache_status = "MISS" if mode == "normal" else "BYPASS"
        if ex.stream:
            ex.state["cache"]["recorder"] = recorder = Recorder(ctx.options.cache_max_entry_bytes, broadcast)
            ex.add_tap(recorder, RECORD)

    @staticmethod
    def _mode(flow: http.HTTPFlow) -> str:
        """normal, no-cache (fetch fresh, store it), no-store (neither), bypass (neither)."""
        asked = flow.request.headers.pop(HEADER, "").strip().lower()
        if asked == "bypass":
            return "bypass"
        directives = flow.request.headers.get("cache-control", "").lower()
        if "no-store" in directives:
            return "no-store"
        if "no-cache" in directives or asked == "refresh":
            return "no-cache"
        return "normal"

    async def _follow(self, flow: http.HTTPFlow, ex: Exchange, key: str, broadcast: Broadcast) -> bool:
        """Join a stream already flowing for the same key: the request goes to the
        loopback relay instead of upstream. False: go upstream (the leader failed
        before its first byte, or took too long to start)."""
        try:
            await asyncio.wait_for(broadcast.started.wait(), number("cache_wait_s"))
        except asyncio.TimeoutError:
            return False
        if broadcast.failed and not broadcast.chunks:
            return False
        token = self.fanout.publish(broadcast)
        flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", self.fanout.port
        flow.request.path = f"/tokenaddons-fanout/{token}"
        ex.answered_by, ex.cache_status = "cache", "HIT"
        ex.state["cache"] = {"key": key, "store": False, "follows": broadcast, "token": token}
        return True

    def response(self, flow: http.HTTPFlow) -> None:
        """A follower's stream ended: record what it saved, at the leader's billed usage."""
        ex = Exchange.of(flow)
        state = ex.state.get("cache") if ex is not None else None
        if not state or "follows" not in state:
            return
        self.fanout.retire(state["token"])
        entry: Entry | None = state["follows"].entry
        if entry is not None and flow.error is None:
            ex.served_model = entry.model
            saved = entry.usage.get("input_tokens", 0) + entry.usage.get("output_tokens", 0)
            ex.decide("cache", "hit", tokens_saved=saved, usd_saved=entry.cost_usd or 0.0, age_s=0, followed=True)

    def error(self, flow: http.HTTPFlow) -> None:
        self.response(flow)

    async def _wait(self, future: asyncio.Future) -> Entry | None:
        try:
            return await asyncio.wait_for(asyncio.shield(future), number("cache_wait_s"))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return None

    def _serve(self, flow: http.HTTPFlow, ex: Exchange, key: str, entry: Entry) -> None:
        age = max(0, int(self.clock() - entry.created))
        flow.response = http.Response.make(200, entry.body, {
            "content-type": entry.content_type, HEADER: "HIT", "age": str(age)})
        ex.answered_by = "cache"
        ex.cache_status = "HIT"
        ex.served_model = entry.model
        ex.usage = Usage()
        saved = entry.usage.get("input_tokens", 0) + entry.usage.get("output_tokens", 0)
        ex.decide("cache", "hit", tokens_saved=saved, usd_saved=entry.cost_usd or 0.0, age_s=age)
        self.tiers.touch(key)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is not None and ex.cache_status and flow.response is not None:
            flow.response.headers[HEADER] = ex.cache_status
            broadcast = (ex.state.get("cache") or {}).get("broadcast")
            if broadcast is not None:
                broadcast.content_type = flow.response.headers.get("content-type", broadcast.content_type)


class CacheFill:
    """After the meter: stores complete answers with what they were billed, and
    wakes the identical requests that waited for them."""

    def __init__(self, cache: Cache):
        self.cache = cache

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def _finish(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        state = ex.state.get("cache") if ex is not None else None
        if state is None:
            return
        entry = None
        if not ex.answered_by:  # an answer made here (a refusal, a hit) is never stored
            try:
                entry = self._entry(flow, ex, state)
                if entry is not None and state["store"]:
                    self.cache.tiers.put(state["key"], entry)
            except Exception:
                log.exception("tokenaddons cache: could not store an answer")
        # a leader refused after the lookup (rate limit, budget, upstream down) must
        # still wake its twins, or they would wait cache_wait_s for nothing
        if state.get("leader"):
            future = self.cache.inflight.pop(state["key"], None)
            if future is not None and not future.done():
                future.set_result(entry)  # None: waiters go upstream themselves
            broadcast = state.get("broadcast")
            if broadcast is not None:
                self.cache.broadcasts.pop(state["key"], None)
                broadcast.finish(entry is not None, entry)

    def _entry(self, flow: http.HTTPFlow, ex: Exchange, state: dict) -> Entry | None:
        resp = flow.response
        # only complete 2xx answers of the model that was asked for
        if resp is None or flow.error is not None or not 200 <= resp.status_code < 300 or not ex.complete:
            return None
        if ex.model != ex.requested_model:
            return None
        if ex.stream:
            recorder: Recorder | None = state.get("recorder")
            body = recorder.body() if recorder else None
        else:  # as upstream sent it: scrub's placeholders, never the values restored for the client
            body = ex.upstream_body if ex.upstream_body is not None else resp.content
        if not body or len(body) > ctx.options.cache_max_entry_bytes:
            return None
        now = self.cache.clock()
        usage = ex.usage.as_row() if ex.usage else {}
        return Entry(body, resp.headers.get("content-type", "application/json"), now,
                     now + ctx.options.cache_ttl, ex.served_model or ex.model, usage, ex.cost_usd)
