"""The exact-match cache around single flows: keys, TTL, tiers, twins."""
from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.cache import Cache
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.errors import refuse
from tokenaddons.exchange import Exchange
from tokenaddons.providers.sse import frame
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.pipeline import arun_flow, rows

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


ANSWER = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
          "usage": {"input_tokens": 100, "output_tokens": 20}}


HEADERS = {"content-type": "application/json", "x-api-key": "k1", "anthropic-version": "2023-06-01"}


def ok(answer=ANSWER, status=200):
    return http.Response.make(status, json.dumps(answer).encode(), {"content-type": "application/json"})


STREAM = [frame({"type": "message_start", "message": {**ANSWER, "content": [], "usage": {"input_tokens": 100,
                                                                                        "output_tokens": 1}}},
                "message_start"),
          frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
                "content_block_delta"),
          frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}},
                "message_delta"),
          frame({"type": "message_stop"}, "message_stop")]


@pytest.fixture
async def pipe(tmp_path):
    clock = Clock()
    store = Store()
    cache = Cache(store, clock=clock)
    addons = [store, Intake(), cache, Meter(store), Settle(), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        yield addons, store, cache, clock, tctx
    store.done()


async def send(addons, body=BODY, headers=HEADERS, response=None, chunks=None, error=None):
    f = make_flow("/v1/messages", body, dict(headers), response if response is not None else ok())
    return await arun_flow(addons, f, stream_chunks=chunks, error=error)


async def test_second_identical_request_is_a_hit_metered_at_zero_with_the_saving(pipe):
    addons, store, *_ = pipe
    first = await send(addons)
    second = await send(addons, response=ok({"unexpected": True}))
    assert first.response.headers["x-tokenaddons-cache"] == "MISS"
    assert second.response.headers["x-tokenaddons-cache"] == "HIT" and second.response.headers["age"] == "0"
    assert second.response.content == first.response.content
    r1, r2 = rows(store)
    assert (r2["answered_by"], r2["cache_status"], r2["input_tokens"], r2["cost_usd"]) == ("cache", "HIT", 0, 0)
    assert r2["model"] == r1["model"]
    conn = sqlite3.connect(store.events.path)
    tokens, usd = conn.execute("SELECT tokens_saved, usd_saved FROM decisions WHERE addon='cache'").fetchone()
    assert tokens == 120 and usd == pytest.approx(r1["cost_usd"]) and usd > 0


async def test_a_hit_on_bytes_seen_before_never_parses_them(pipe, monkeypatch):
    """The same bytes again (with the session id that must be blanked from
    the key) are looked up by their digest: the hit needs no parse at all."""
    addons, store, *_ = pipe
    body = {**BODY, "metadata": {"user_id": "session-1"}}
    first = await send(addons, body)
    from tokenaddons.engines import jsonio
    parsed = []
    real = jsonio.loads
    monkeypatch.setattr(jsonio, "loads", lambda data: parsed.append(data) or real(data))
    second = await send(addons, body)
    assert second.response.headers["x-tokenaddons-cache"] == "HIT"
    assert second.response.content == first.response.content
    assert parsed == []
    # the session id still does not change the key
    third = await send(addons, {**BODY, "metadata": {"user_id": "session-2"}})
    assert third.response.headers["x-tokenaddons-cache"] == "HIT"


async def test_key_ignores_user_id_and_stream_flag_but_not_any_parameter(pipe):
    addons, store, cache, clock, tctx = pipe

    def key(body, headers=HEADERS):
        f = make_flow("/v1/messages", body, dict(headers))
        Intake().request(f)
        return cache.key(f, Exchange.of(f))  # the body as the client sent it: by its bytes

    def changed(body, headers=HEADERS):
        f = make_flow("/v1/messages", body, dict(headers))
        Intake().request(f)
        Exchange.of(f).mark_changed()
        return cache.key(f, Exchange.of(f))  # as changed by an addon: serialized canonically

    base = key(BODY)
    assert key(BODY) == base  # the same bytes again
    assert key({**BODY, "metadata": {"user_id": "session-1"}}) == key({**BODY, "metadata": {"user_id": "s2"}})
    assert changed({**BODY, "metadata": {"user_id": "session-1"}}) == changed(BODY) == changed({**BODY, "stream": True})
    assert changed(dict(reversed(list(BODY.items())))) == changed(BODY)
    for change in ({"temperature": 0.5}, {"messages": [{"role": "user", "content": "hi!"}]}):
        assert changed({**BODY, **change}) != changed(BODY), change
    for change in ({"temperature": 0.5}, {"max_tokens": 51}, {"tool_choice": {"type": "auto"}},
                   {"metadata": {"user_id": "x", "other": 1}}, {"parallel_tool_calls": False}):
        assert key({**BODY, **change}) != base, change
    assert key(BODY, {**HEADERS, "x-api-key": "k2"}) != base
    assert key(BODY, {**HEADERS, "anthropic-beta": "context-1m"}) != base
    assert key(BODY, {**HEADERS, "user-agent": "another client"}) == base


async def test_ttl_expiry_with_injected_time(pipe):
    addons, store, cache, clock, tctx = pipe
    tctx.options.cache_ttl = 60
    await send(addons)
    clock.now += 59
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "HIT"
    clock.now += 2
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "MISS"


async def test_errors_and_cut_streams_are_never_stored(pipe):
    addons, *_ = pipe
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    await send(addons, response=ok(err, 529))
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "MISS"
    stream_body = {**BODY, "stream": True, "messages": [{"role": "user", "content": "cut"}]}
    await send(addons, stream_body, response=sse_response(STREAM[:2]), chunks=2, error="server hung up")
    again = await send(addons, stream_body, response=sse_response(STREAM), chunks=3)
    assert again.response.headers["x-tokenaddons-cache"] == "MISS"
    hit = await send(addons, stream_body, response=sse_response([]), chunks=1)
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT"
    assert hit.response.content == b"".join(STREAM)


async def test_stream_and_json_forms_are_separate_entries(pipe):
    addons, *_ = pipe
    await send(addons)
    s = await send(addons, {**BODY, "stream": True}, response=sse_response(STREAM), chunks=2)
    assert s.response.headers["x-tokenaddons-cache"] == "MISS"
    assert s.metadata["client_saw"] == b"".join(STREAM)


async def test_a_stream_answered_whole_is_stored_like_a_streamed_one(pipe):
    # a stream played back whole (server playback, `tokenaddons replay`) passes no stream tap
    addons, *_ = pipe
    body = {**BODY, "stream": True, "messages": [{"role": "user", "content": "played back"}]}
    first = await send(addons, body, response=sse_response(STREAM))
    assert first.response.headers["x-tokenaddons-cache"] == "MISS" and not first.response.stream
    hit = await send(addons, body, response=sse_response([]), chunks=1)
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT"
    assert hit.response.content == b"".join(STREAM)


async def test_client_cache_control_and_bypass_header(pipe):
    addons, *_ = pipe
    await send(addons)
    bypass = await send(addons, headers={**HEADERS, "X-Tokenaddons-Cache": "bypass"})
    assert bypass.response.headers["x-tokenaddons-cache"] == "BYPASS"
    assert "x-tokenaddons-cache" not in bypass.request.headers
    fresh = await send(addons, headers={**HEADERS, "cache-control": "no-cache"},
                       response=ok({**ANSWER, "content": [{"type": "text", "text": "fresh"}]}))
    assert fresh.response.headers["x-tokenaddons-cache"] == "BYPASS"
    hit = await send(addons)
    assert b"fresh" in hit.response.content  # no-cache fetched anew and stored
    body = {**BODY, "messages": [{"role": "user", "content": "private"}]}
    await send(addons, body, headers={**HEADERS, "cache-control": "no-store"})
    assert (await send(addons, body)).response.headers["x-tokenaddons-cache"] == "MISS"


async def test_a_rerouted_answer_is_not_stored_under_the_requested_model(pipe):
    addons, store, cache, clock, tctx = pipe

    class Reroute:
        def request(self, flow):
            Exchange.of(flow).model = "claude-haiku-4-5"

    reroute = Reroute()
    tctx.master.addons.add(reroute)
    await send(addons)
    tctx.master.addons.remove(reroute)
    assert (await send(addons)).response.headers["x-tokenaddons-cache"] == "MISS"


async def test_concurrent_twins_reach_upstream_once_and_a_failed_leader_releases_them(pipe):
    addons, *_ = pipe
    intake, cache = addons[1], addons[2]
    body = {**BODY, "messages": [{"role": "user", "content": "together"}]}
    flows = [make_flow("/v1/messages", body, dict(HEADERS)) for _ in range(5)]
    for f in flows:
        intake.request(f)
    waits = [asyncio.ensure_future(cache.request(f)) for f in flows]
    await asyncio.sleep(0.01)
    leaders = [f for f in flows if Exchange.of(f).state["cache"].get("leader")]
    assert len(leaders) == 1 and sum(w.done() for w in waits) == 1
    leader = leaders[0]
    leader.response = ok({"type": "error", "error": {"type": "api_error", "message": "x"}}, 500)
    for a in addons[3:]:
        getattr(a, "response", lambda _: None)(leader)
    await asyncio.gather(*waits)
    followers = [f for f in flows if f is not leader]
    assert all(f.response is None for f in followers)  # they go upstream themselves

    # and with a good leader, everyone gets its answer
    body2 = {**BODY, "messages": [{"role": "user", "content": "together again"}]}
    flows = [make_flow("/v1/messages", body2, dict(HEADERS)) for _ in range(5)]
    for f in flows:
        intake.request(f)
    waits = [asyncio.ensure_future(cache.request(f)) for f in flows]
    await asyncio.sleep(0.01)
    leader = next(f for f in flows if Exchange.of(f).state["cache"].get("leader"))
    leader.response = ok()
    for a in addons[3:]:
        getattr(a, "response", lambda _: None)(leader)
    await asyncio.gather(*waits)
    assert all(f.response.headers["x-tokenaddons-cache"] == "HIT" for f in flows if f is not leader)


async def test_a_leader_refused_after_the_lookup_does_not_hold_its_twin(pipe):
    """A later addon (rate limit, budget, upstream down) answering the leader
    itself must release the key: the twin goes on at once, not after cache_wait_s."""
    addons, store, cache, clock, tctx = pipe
    tctx.options.cache_wait_s = "30"
    intake = addons[1]
    leader = make_flow("/v1/messages", BODY, dict(HEADERS))
    intake.request(leader)
    await cache.request(leader)
    refuse(leader, "budget", "rate_limit", "over")
    for a in addons[3:]:
        getattr(a, "response", lambda _: None)(leader)
    twin = make_flow("/v1/messages", BODY, dict(HEADERS))
    intake.request(twin)
    await asyncio.wait_for(cache.request(twin), 1)
    assert twin.response is None and Exchange.of(twin).state["cache"].get("leader")
    assert not cache.tiers.get_memory(Exchange.of(twin).state["cache"]["key"])  # the refusal was not stored


async def test_memory_tier_is_bounded_in_bytes_and_disk_survives_a_restart(pipe, tmp_path):
    addons, store, cache, clock, tctx = pipe
    tctx.options.cache_memory_bytes = 2000
    for i in range(10):
        await send(addons, {**BODY, "messages": [{"role": "user", "content": f"q{i}"}]})
    assert cache.tiers.memory_bytes <= 2000 and len(cache.tiers.memory) < 10
    store.events.flush()
    cache.tiers.memory.clear()
    cache.tiers.memory_bytes = 0
    hit = await send(addons, {**BODY, "messages": [{"role": "user", "content": "q0"}]})
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT"  # read back from SQLite


async def test_disk_cap_evicts_least_recently_used(pipe):
    addons, store, cache, clock, tctx = pipe
    tctx.options.cache_max_bytes = 3000
    for i in range(8):
        clock.now += 1
        await send(addons, {**BODY, "messages": [{"role": "user", "content": f"e{i}"}]})
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    total, n = conn.execute("SELECT SUM(size), COUNT(*) FROM cache_entries").fetchone()
    assert total <= 3000 and 0 < n < 8


async def test_a_hit_records_its_use_for_the_least_recently_used_eviction(pipe):
    addons, store, cache, clock, tctx = pipe
    await send(addons, BODY)
    clock.now += 100
    hit = await send(addons, BODY)
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT"
    store.events.flush()
    conn = sqlite3.connect(store.events.path)
    ((created, last_used),) = conn.execute("SELECT created, last_used FROM cache_entries").fetchall()
    assert last_used == created + 100


# ------------------------------------------------------------- caller identity

import hashlib  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

from tokenaddons.addons.cache import Recorder  # noqa: E402
from tokenaddons.addons.intake import auth_identity  # noqa: E402
from tokenaddons.store.cache_tier import Entry, Tiers  # noqa: E402
from tokenaddons.store.writer import EventStore  # noqa: E402


def identity(headers, path="/v1/messages"):
    return auth_identity(make_flow(path, BODY, headers))


def test_every_credential_a_request_carries_names_its_caller():
    gateway = {"x-api-key": "gateway-key"}
    alice, bob = {**gateway, "authorization": "Bearer alice"}, {**gateway, "authorization": "Bearer bob"}
    assert len({identity(gateway), identity(alice), identity(bob)}) == 3
    gemini = "/v1beta/models/gemini-2.5-flash:generateContent"
    goog = {"x-goog-api-key": "project-key"}
    assert identity(goog, gemini + "?key=u1") != identity(goog, gemini + "?key=u2") != identity(goog, gemini)
    assert identity({**alice, "api-key": "azure"}) != identity(alice)
    assert identity({"content-type": "application/json"}) is None
    # one credential hashes as before: cache entries and pseudonyms made before stay that caller's
    assert identity(gateway) == hashlib.sha256(b"x-api-key:gateway-key").hexdigest()[:16]


async def test_two_bearer_tokens_behind_one_key_never_share_an_entry(pipe):
    addons, *_ = pipe
    alice = {**HEADERS, "authorization": "Bearer alice"}
    bob = {**HEADERS, "authorization": "Bearer bob"}
    assert (await send(addons, headers=alice)).response.headers["x-tokenaddons-cache"] == "MISS"
    assert (await send(addons, headers=bob)).response.headers["x-tokenaddons-cache"] == "MISS"
    assert (await send(addons, headers=alice)).response.headers["x-tokenaddons-cache"] == "HIT"


# ------------------------------------------------------------- tiers and taps

async def test_a_stream_whose_recording_tap_failed_is_never_stored(pipe, monkeypatch):
    addons, store, cache, *_ = pipe
    kept = Recorder.keep
    calls = []

    def failing(self, chunk):
        calls.append(chunk)
        if len(calls) == 2:
            raise MemoryError("no room for the copy")
        return kept(self, chunk)

    monkeypatch.setattr(Recorder, "keep", failing)
    body = {**BODY, "stream": True, "messages": [{"role": "user", "content": "tap"}]}
    first = await send(addons, body, response=sse_response(STREAM), chunks=4)
    assert first.metadata["client_saw"] == b"".join(STREAM)  # the client's stream is whole
    monkeypatch.setattr(Recorder, "keep", kept)
    again = await send(addons, body, response=sse_response(STREAM), chunks=4)
    assert again.response.headers["x-tokenaddons-cache"] == "MISS"
    third = await send(addons, body, response=sse_response(STREAM), chunks=4)
    assert third.response.headers["x-tokenaddons-cache"] == "HIT" and third.response.content == b"".join(STREAM)


def test_the_memory_tier_is_safe_while_a_worker_thread_reads_the_disk(tmp_path):
    events = EventStore(tmp_path / "e.db")
    events.start()
    tiers = Tiers(Clock())
    tiers.open(events)
    keys = [f"k{i}" for i in range(64)]
    for k in keys:
        tiers.put(k, Entry(b"x" * 100, "application/json", 0.0, 1e12, "m", {}, 0.0))
    events.flush()
    tiers.memory_max = 8 * 356  # room for 8 of them: every fill evicts
    errors = []

    def worker():
        try:
            for i in range(3000):
                tiers.get_disk(keys[i % 64])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        t = threading.Thread(target=worker)
        t.start()
        i = 0
        while t.is_alive():  # the event loop's side: hits and fills
            tiers.get_memory(keys[i % 64])
            tiers.remember(keys[(i * 7) % 64], Entry(b"y" * 100, "application/json", 0.0, 1e12, "m", {}, 0.0))
            i += 1
        t.join()
    finally:
        sys.setswitchinterval(old)
        tiers.close()
        events.close()
    assert not errors
    assert tiers.memory_bytes == sum(e.size for e in tiers.memory.values()) <= tiers.memory_max


def test_a_cache_write_in_a_failed_batch_is_counted_once(tmp_path):
    events = EventStore(tmp_path / "e.db", flush_interval=0.3)  # both land in one batch
    events.start()
    tiers = Tiers(Clock())
    tiers.open(events)
    try:
        tiers.put("k", Entry(b"x" * 100, "application/json", 0.0, 1e12, "m", {}, 0.0))
        events.put_request({"exchange_id": "bad", "ts": None})  # fails the batch: its items run again alone
        assert events.flush()
        assert events.dropped == 1
        stored = sqlite3.connect(events.path).execute("SELECT COALESCE(SUM(size), 0) FROM cache_entries").fetchone()[0]
        assert tiers.disk_bytes == stored == 356 and tiers.on_disk == {"k": 356}
    finally:
        tiers.close()
        events.close()
