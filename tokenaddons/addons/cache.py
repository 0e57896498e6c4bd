"""Exact-match response cache: two tiers, streams replayed, concurrent twins coalesced.

`Cache` sits after scrub in the request phase (the key is what would really be
sent) and answers hits; when the exchange settles (after the meter) it stores
complete answers with the usage and cost they were billed, which a hit then
records as saved. A stream and a non-stream request for the same thing share a key but
not an entry: each form is stored as the client received it, and a request for
the other form is a miss (see docs/cache.md).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import contextmanager

from mitmproxy import ctx, http

from tokenaddons.addons.store import Store
from tokenaddons.engines.cache_keys import VARY, body_digest, cache_key, raw_body_digest
from tokenaddons.engines.fanout import Broadcast, FanoutServer
from tokenaddons.engines.memo import SEEN_BODIES, Memo
from tokenaddons.engines.usage import Usage
from tokenaddons.exchange import RECORD, BoundedCopy, Exchange, handled
from tokenaddons.headers import Names
from tokenaddons.options import number
from tokenaddons.providers.sse import Event
from tokenaddons.store.cache_tier import MIGRATIONS, Entry, Tiers
from tokenaddons.team.cache import SharedCache
from tokenaddons.team.hub import Hub
from tokenaddons.team.link import Unavailable

log = logging.getLogger(__name__)

HEADER = "x-tokenaddons-cache"
HEADER_BYTES = HEADER.encode()
READ_MODE = Names(HEADER, "cache-control")
READ_VARY = Names(*VARY)


class Recorder(BoundedCopy):
    """Keeps a copy of a stream as the client asked for it, placeholders not yet
    restored (a RECORD-stage tap), and hands each chunk on to identical requests
    following it (each restores its own)."""

    def __init__(self, limit: int, broadcast: Broadcast | None = None):
        super().__init__(limit)
        self.broadcast = broadcast
        self.failed = False  # the pump dropped this tap: what it kept is not the whole stream

    @contextmanager
    def _marking_failure(self):
        try:
            yield
        except BaseException:
            self.failed = True
            raise

    def feed(self, events: list[Event]) -> list[Event]:
        with self._marking_failure():
            if self.broadcast is not None:
                self.broadcast.push(b"".join(e.raw for e in events))
            return super().feed(events)

    def feed_bytes(self, chunk: bytes) -> bytes:
        with self._marking_failure():
            return super().feed_bytes(chunk)

    def end(self) -> list[Event]:
        with self._marking_failure():
            return super().end()

    def body(self) -> bytes | None:
        return None if self.failed else super().body()


class Cache:
    """Looks requests up and answers hits; coalesces concurrent identical misses.

    In team mode (`team` given and its `redis_url` set) the team's Redis sits
    between the memory tier and SQLite, and a miss claims the key there, so an
    identical request on another proxy waits for this one's answer instead of
    paying for it again (team/cache.py).
    """

    def __init__(self, store: Store, team: Hub | None = None, clock: Callable[[], float] = time.time):
        self.store = store
        self.team = team
        if team is not None:
            team.every_second(self._renew_claims)
        store.add_schema("cache_schema", MIGRATIONS)
        self.clock = clock
        self.tiers = Tiers(clock)
        self.body_hashes: Memo[bytes] = Memo(size=SEEN_BODIES)  # the client's bytes' digest -> the body's key part
        self.inflight: dict[str, asyncio.Future] = {}
        self.broadcasts: dict[str, Broadcast] = {}  # streams in flight, by key
        self.fanout = FanoutServer()
        self.enabled = True
        self.ttl = 3600
        self.max_entry = 8 << 20
        self.wait_s = 120.0
        self.shared_max_entry = 1 << 20

    def load(self, loader) -> None:
        loader.add_option("cache_enabled", bool, True, "Answer exact repeats of LLM requests from the cache.")
        loader.add_option("cache_ttl", int, 3600, "Seconds a cached answer stays valid.")
        loader.add_option("cache_memory_bytes", int, 64 << 20, "Bytes of cached answers kept in memory.")
        loader.add_option("cache_max_bytes", int, 1 << 30, "Bytes of cached answers kept on disk (LRU eviction).")
        loader.add_option("cache_max_entry_bytes", int, 8 << 20, "Answers larger than this are not cached.")
        loader.add_option("cache_wait_s", str, "120",
                          "How long a request waits for an identical one already in flight.")
        loader.add_option("cache_redis_max_entry_bytes", int, 1 << 20,
                          "Team mode: answers larger than this stay in this proxy's own tiers, not shared "
                          "through Redis.")

    def configure(self, updated) -> None:
        self.wait_s = number("cache_wait_s")
        self.enabled = ctx.options.cache_enabled
        self.ttl = ctx.options.cache_ttl
        self.max_entry = ctx.options.cache_max_entry_bytes
        self.shared_max_entry = ctx.options.cache_redis_max_entry_bytes
        self.tiers.memory_max = ctx.options.cache_memory_bytes
        self.tiers.disk_max = ctx.options.cache_max_bytes
        if "store_path" in updated or self.tiers.events is None:
            self.tiers.close()
            if self.store.events is not None:
                self.tiers.open(self.store.events)

    async def running(self) -> None:
        await self.fanout.start()

    def done(self) -> None:
        self.tiers.close()
        self.fanout.stop()

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow) or not self.enabled:
            return
        mode = self._mode(flow)
        if mode == "bypass":
            ex.cache_status = "BYPASS"
            return
        key = f"{self.key(flow, ex)}:{'sse' if ex.stream else 'json'}"
        ex.state["cache"] = {"key": key, "store": mode != "no-store"}
        ex.on_settle("cache", self.settle)
        broadcast = None
        shared = self._shared() if mode != "no-store" else None
        if shared is not None:
            ex.state["cache"]["shared"] = shared
        if mode == "normal":
            entry = self.tiers.get_memory(key)
            if entry is None and shared is None and self.tiers.may_be_on_disk(key):
                entry = await asyncio.to_thread(self.tiers.get_disk, key)
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
                if shared is not None:  # twins here wait on this request while it asks the team
                    entry = await self._from_team(shared, ex, key)
                    if entry is not None:
                        self._wake(ex.state["cache"], entry)
                        return self._serve(flow, ex, key, entry, team=ex.state["cache"].get("team_hit", False))
                if ex.stream:
                    broadcast = self.broadcasts[key] = ex.state["cache"]["broadcast"] = Broadcast()
        ex.cache_status = "MISS" if mode == "normal" else "BYPASS"
        if ex.stream:
            ex.state["cache"]["recorder"] = recorder = Recorder(self.max_entry, broadcast)
            ex.add_tap(recorder, RECORD)

    def _shared(self) -> SharedCache | None:
        team = self.team
        if team is None or team.link is None:
            return None
        return team.part("cache", lambda link: SharedCache(link, self.clock))

    async def _from_team(self, shared: SharedCache, ex: Exchange, key: str) -> Entry | None:
        """Redis, then this proxy's disk, then another proxy's fetch of the same key;
        None: this request goes upstream (it holds the key's claim, or Redis cannot
        be used, or the other proxy's fetch ended with nothing to share)."""
        try:
            entry, claimed = await shared.lookup(key)
        except Unavailable:
            return await self._from_disk(key)
        if entry is not None:
            self.tiers.remember(key, entry)
            ex.state["cache"]["team_hit"] = True
            return entry
        entry = await self._from_disk(key)
        if entry is not None:  # kept only here so far: the team gets it too (and the claim is released)
            self._share(shared, key, entry)
            return entry
        if claimed:
            ex.state["cache"]["claimed"] = True
            return None
        try:
            entry = await shared.wait(key, self.wait_s)
        except Unavailable:
            return None
        if entry is not None:
            self.tiers.remember(key, entry)
            ex.state["cache"]["team_hit"] = True
        return entry

    async def _renew_claims(self, link) -> None:
        shared = self._shared()
        if shared is not None:
            await shared.renew()

    async def _from_disk(self, key: str) -> Entry | None:
        if not self.tiers.may_be_on_disk(key):
            return None
        return await asyncio.to_thread(self.tiers.get_disk, key)

    def _share(self, shared: SharedCache, key: str, entry: Entry | None) -> None:
        """Store an entry for the team (one too large stays here) and release this proxy's claim."""
        shared.fill(key, entry if entry is not None and len(entry.body) <= self.shared_max_entry else None)

    def _wake(self, state: dict, entry: Entry | None) -> None:
        """This request's twins waiting here get its entry (None: they go upstream themselves)."""
        state.pop("leader", None)
        future = self.inflight.pop(state["key"], None)
        if future is not None and not future.done():
            future.set_result(entry)

    def key(self, flow: http.HTTPFlow, ex: Exchange) -> str:
        req = flow.request
        body_hash = None
        if ex.body_version == 0 and ex.source is not None:
            # still the client's own bytes: hashed, not serialized again (the digest guard and
            # scrub took, taken only if they did not, unless a session id must be blanked first);
            # remembered by that digest, so the same bytes again need not be parsed to find the id
            digest = ex.source_digest()
            body_hash = self.body_hashes.peek(digest)
            if body_hash is None:
                body_hash = raw_body_digest(ex.source, ex.body, ex.source_digest)
                if body_hash is not None:
                    self.body_hashes.remember(digest, body_hash)
        if body_hash is None:
            body_hash = body_digest(ex.body)
        query = req.query.items(multi=True) if "?" in req.path else ()
        seen = READ_VARY.read(req.headers)
        return cache_key(ex.provider, req.path.split("?")[0], query, ex.auth_hash,
                         [(name, seen[name][0] if name in seen else None) for name in VARY], body_hash)

    @staticmethod
    def _mode(flow: http.HTTPFlow) -> str:
        """normal, no-cache (fetch fresh, store it), no-store (neither), bypass (neither)."""
        seen = READ_MODE.read(flow.request.headers)
        asked = seen[HEADER][0].strip().lower() if HEADER in seen else ""
        if HEADER in seen:  # ours: never sent upstream
            del flow.request.headers[HEADER]
        if asked == "bypass":
            return "bypass"
        directives = seen["cache-control"][0].lower() if "cache-control" in seen else ""
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
            await asyncio.wait_for(broadcast.started.wait(), self.wait_s)
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
            return await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            return None

    def _serve(self, flow: http.HTTPFlow, ex: Exchange, key: str, entry: Entry, team: bool = False) -> None:
        age = max(0, int(self.clock() - entry.created))
        now = time.time()
        # built directly: Response.make converts and checks every header and sets the body twice
        flow.response = http.Response(b"HTTP/1.1", 200, b"OK", http.Headers((
            (b"content-type", entry.content_type.encode()), (HEADER_BYTES, b"HIT"), (b"age", b"%d" % age),
            (b"content-length", b"%d" % len(entry.body)))), entry.body, None, now, now)
        ex.answered_by = "cache"
        ex.cache_status = "HIT"
        ex.served_model = entry.model
        ex.usage = Usage()
        saved = entry.usage.get("input_tokens", 0) + entry.usage.get("output_tokens", 0)
        detail = {"team": True} if team else {}
        ex.decide("cache", "hit", tokens_saved=saved, usd_saved=entry.cost_usd or 0.0, age_s=age, **detail)
        ex.state["cache"]["served"] = True  # its use is recorded as the exchange settles, once the answer has left

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is not None and ex.cache_status and flow.response is not None:
            flow.response.headers[HEADER] = ex.cache_status
            broadcast = (ex.state.get("cache") or {}).get("broadcast")
            if broadcast is not None:
                broadcast.content_type = flow.response.headers.get("content-type", broadcast.content_type)

    def settle(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """After the meter: a complete answer is stored with what it was billed,
        and identical requests waiting for it are woken."""
        state = ex.state.get("cache")
        if state is None or "follows" in state:
            return
        entry = None
        if state.get("served"):
            self.tiers.touch(state["key"])
        if not ex.answered_by:  # an answer made here (a refusal, a hit) is never stored
            try:
                entry = self._entry(flow, ex, state)
                if entry is not None and state["store"]:
                    self.tiers.put(state["key"], entry)
            except Exception:
                log.exception("tokenaddons cache: could not store an answer")
        shared = state.get("shared")
        if shared is not None and (state.get("claimed") or entry is not None):
            self._share(shared, state["key"], entry)
        # a leader refused after the lookup (rate limit, budget, upstream down) must
        # still wake its twins, or they would wait cache_wait_s for nothing
        if state.get("leader"):
            self._wake(state, entry)
            broadcast = state.get("broadcast")
            if broadcast is not None:
                self.broadcasts.pop(state["key"], None)
                broadcast.finish(entry is not None, entry)

    def _entry(self, flow: http.HTTPFlow, ex: Exchange, state: dict) -> Entry | None:
        resp = flow.response
        # only complete 2xx answers of the model that was asked for
        if resp is None or flow.error is not None or not 200 <= resp.status_code < 300 or not ex.complete:
            return None
        if ex.model != ex.requested_model or ex.upstream_api is not ex.client_api:
            return None  # another model's answer (route fell back), or one translated from another API
        if ex.stream and resp.stream:  # streamed: as the recorder saw it pass
            recorder: Recorder | None = state.get("recorder")
            body = recorder.body() if recorder else None
        else:  # whole (a stream played back whole too): as upstream sent it, scrub's placeholders
            # kept, never the values restored for the client
            body = ex.upstream_body if ex.upstream_body is not None else resp.content
        if not body or len(body) > self.max_entry:
            return None
        now = self.clock()
        usage = ex.usage.as_row() if ex.usage else {}
        return Entry(body, resp.headers.get("content-type", "application/json"), now,
                     now + self.ttl, ex.served_model or ex.model, usage, ex.cost_usd)
