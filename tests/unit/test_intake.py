"""Intake and the stream pump: API detection, pass-through, compressed bodies and streams."""
from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.store import Store
from tokenaddons.exchange import Exchange
from tokenaddons.providers.anthropic import MESSAGES
from tokenaddons.providers.sse import frame
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.pipeline import rows, run_flow


@pytest.fixture
def pipe(tmp_path):
    store = Store()
    addons = [store, Intake(), Meter(store), Outlet()]
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        yield addons, store
    store.done()


ANTHROPIC_STREAM = [
    frame({"type": "message_start", "message": {"id": "msg_1", "model": "claude-sonnet-4-5-20250929",
           "usage": {"input_tokens": 12, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 300,
                     "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
                     "output_tokens": 1}}}, "message_start"),
    frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
          "content_block_delta"),
    frame({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
          "message_delta"),
    frame({"type": "message_stop"}, "message_stop"),
]


def compressed(encoding: str, data: bytes) -> bytes:
    import zlib

    import brotli
    import zstandard

    return {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
            "zstd": zstandard.ZstdCompressor().compress}[encoding](data)


def test_project_header_is_removed_and_recorded(pipe):
    addons, store = pipe
    f = make_flow("/v1/messages", {"model": "claude-haiku-4-5", "messages": []},
                  {"content-type": "application/json", "X-Tokenaddons-Project": "alpha"},
                  http.Response.make(200, b'{"model":"claude-haiku-4-5","usage":{"input_tokens":5,"output_tokens":7}}'))
    run_flow(addons, f)
    assert "x-tokenaddons-project" not in f.request.headers
    [row] = rows(store)
    assert (row["project"], row["api"], row["input_tokens"], row["output_tokens"]) == ("alpha", "anthropic.messages", 5, 7)
    assert row["cost_usd"] > 0 and row["complete"] == 1


def test_unknown_and_unreadable_bodies_pass_through_byte_for_byte(pipe):
    """Without scrub in the pipeline nothing refuses them: untouched, metered
    under the API their path names (an unknown path as other)."""
    addons, store = pipe
    for path, body in [("/v1/messages", b"\xff\xfe not json"), ("/v1/models", b'{"a" :  1}'),
                       ("/v1/messages", b'[1, 2')]:
        f = make_flow(path, body, response=http.Response.make(200, b"ok"))
        run_flow(addons, f)
        assert f.request.raw_content == body
        assert not Exchange.of(f).known
    assert [r["api"] for r in rows(store)] == ["anthropic.messages", "other", "anthropic.messages"]


@pytest.mark.parametrize("body,why", [
    (b'{"model": "m", "messages": []}', None),
    (b"", None),
    (b'{"model": "caf\xe9"}', "is not UTF-8"),
    (b'{"model": "m"} {"messages": []}', "has bytes after its JSON"),
    (b'{"model": "m"}\x00\x00', "has bytes after its JSON"),
    (b'{"model": ', "is not JSON"),
    (b'[{"model": "m"}]', "is not a JSON object"),
    (b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}", "is nested deeper than 254 levels"),
    (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "is nested too deep to parse"),
])
def test_why_a_body_cannot_be_read(pipe, body, why):
    f = make_flow("/v1/messages", body)
    run_flow(pipe[0], f)
    ex = Exchange.of(f)
    assert ex.unreadable is None if why is None else ex.unreadable.startswith(why)
    assert ex.client_api is (None if body == b"" else MESSAGES)  # kept: the error shape and the row's API


def test_a_body_over_the_limit_is_not_read(pipe, tmp_path):
    addons, store = pipe
    with taddons.context(*addons) as tctx:
        tctx.configure(store, store_path=str(tmp_path / "events.db"))
        tctx.options.intake_max_body = 100
        f = make_flow("/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]})
        run_flow(addons, f)
    assert Exchange.of(f).unreadable.startswith("is 2")  # "is 2xx bytes, over intake_max_body (100)"
    assert not Exchange.of(f).known


def test_compressed_request_is_read_and_left_untouched(pipe):
    addons, store = pipe
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    f = make_flow("/v1/chat/completions", gzip.compress(body),
                  {"content-type": "application/json", "content-encoding": "gzip"},
                  http.Response.make(200, json.dumps({"model": "gpt-4o-mini", "usage": {
                      "prompt_tokens": 9, "completion_tokens": 3}}).encode()))
    raw = f.request.raw_content
    run_flow(addons, f)
    assert f.request.raw_content == raw  # nothing changed it: never re-serialized
    assert rows(store)[0]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_compressed_stream_is_decoded_for_the_taps_and_the_client(pipe, encoding):
    addons, store = pipe
    plain = b"".join(ANTHROPIC_STREAM)
    response = http.Response.make(200, b"", {"content-type": "text/event-stream", "content-encoding": encoding,
                                             "content-length": "0"})
    response.raw_content = compressed(encoding, plain)
    response.headers["content-length"] = str(len(response.raw_content))
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
                  {"content-type": "application/json", "accept-encoding": "gzip, br"}, response=response)
    run_flow(addons, f, stream_chunks=9)
    assert f.request.headers["accept-encoding"] == "identity"  # streams are asked for uncompressed
    assert f.metadata["client_saw"] == plain  # sent on decoded, as the headers now say
    assert "content-encoding" not in f.response.headers and "content-length" not in f.response.headers
    assert f.response.headers["transfer-encoding"] == "chunked"
    [row] = rows(store)
    assert row["output_tokens"] == 42 and row["cache_read_tokens"] == 2000 and row["complete"] == 1


def test_a_stream_in_an_unknown_encoding_passes_through_unread(pipe):
    addons, store = pipe
    response = sse_response(ANTHROPIC_STREAM)
    response.headers["content-encoding"] = "x-custom"
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []}, response=response)
    run_flow(addons, f, stream_chunks=3)
    assert f.response.stream is True  # passed on as it came, not through the taps
    [row] = rows(store)
    assert row["status"] == 200  # metered, without the usage it could not read


def test_a_broken_tap_does_not_break_the_stream(pipe):
    addons, store = pipe

    class Broken:
        def feed(self, events):
            raise RuntimeError("boom")

        def end(self):
            return []

    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
                  response=sse_response(ANTHROPIC_STREAM))
    recorded = f.response
    f.response = None
    for a in addons:
        getattr(a, "request", lambda _: None)(f)
    Exchange.of(f).add_tap(Broken(), 15)
    body = recorded.content
    recorded.content = None  # headers only so far, as when a stream starts
    f.response = recorded
    addons[1].responseheaders(f)
    out = bytes(f.response.stream(body)) + f.response.stream(b"")
    assert out == body


def test_depth_is_counted_in_containers_at_the_limit_and_past_it():
    from tokenaddons.addons.intake import MAX_DEPTH, WRITE_CHECK_MAX, too_deep

    def nested(depth: int, kind: str):
        value: object = "leaf"
        for i in range(depth):
            value = {"k": value, "n": i} if (kind == "dict" or (kind == "mixed" and i % 2)) else [1, value]
        return value

    for kind in ("dict", "list", "mixed"):
        for size in (0, WRITE_CHECK_MAX + 1):  # checked by writing it, and by walking it
            assert not too_deep(nested(MAX_DEPTH, kind), size=size)
            assert too_deep(nested(MAX_DEPTH + 1, kind), size=size)
        # what orjson does not write (an integer past 64 bits, a lone surrogate) is walked
        for leaf in (1 << 70, "\ud800"):
            assert not too_deep([nested(MAX_DEPTH - 1, kind), leaf])
            assert too_deep([nested(MAX_DEPTH, kind), leaf])
    assert not too_deep("text") and not too_deep(3) and not too_deep({}) and not too_deep([[], {}])


def test_the_encodings_load_as_the_proxy_starts_not_on_the_first_request():
    """The first count of an encoding takes 0.4-0.7 s: on the first request it
    would hold the event loop, and every other client, that long."""
    from tokenaddons.engines import tokens

    tokens.get_encoding.cache_clear()
    intake = Intake()
    with taddons.context(intake) as tctx:
        tctx.configure(intake)  # as mitmdump's script loader does, before the proxy listens
        assert tokens.get_encoding.cache_info().currsize == len(tokens.ENCODINGS)


def test_bytes_read_before_are_parsed_only_when_an_addon_reads_them(pipe):
    """A request sent again (a retry, a cache hit) is not parsed to learn its
    model and stream flag; its body is parsed from its bytes on first use."""
    addons, _ = pipe
    intake = addons[1]
    body = {"model": "claude-haiku-4-5", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    flows = [make_flow("/v1/messages", body) for _ in range(2)]
    exchanges = []
    for f in flows:
        intake.request(f)
        exchanges.append(Exchange.of(f))
    first, again = exchanges
    assert first.body == body and first.known
    assert again._body is not None and not isinstance(again._body, dict)  # not parsed yet
    assert again.known and again.model == again.requested_model == "claude-haiku-4-5" and again.stream
    assert again.source_digest() == first.source_digest()
    assert again.body == body and again.body is again.body  # parsed once, on use
    assert again.text_refs()[0].text == "hi"
    # the same bytes on another path, or other bytes, are read afresh
    other = make_flow("/v1/messages/count_tokens", body)
    intake.request(other)
    assert isinstance(Exchange.of(other)._body, dict)
    changed = make_flow("/v1/messages", {**body, "stream": False})
    intake.request(changed)
    assert isinstance(Exchange.of(changed)._body, dict) and not Exchange.of(changed).stream
    # bytes that could not be read are never remembered as readable
    bad = [make_flow("/v1/messages", b'{"model": ') for _ in range(2)]
    for f in bad:
        intake.request(f)
        assert Exchange.of(f).unreadable.startswith("is not JSON") and not Exchange.of(f).known


@pytest.mark.parametrize("where", ["messages", "tools"])
def test_a_body_is_refused_past_the_depth_limit_whether_the_depth_is_in_a_turn_or_not(pipe, where):
    """The turns are written one by one (History keeps that JSON), each as nested as it sits in the body."""
    from tokenaddons.addons.intake import MAX_DEPTH

    def body(depth: int) -> bytes:  # the body itself, its list, then `depth` more levels
        deep: object = "leaf"
        for _ in range(depth):
            deep = [deep]
        other = "tools" if where == "messages" else "messages"
        return json.dumps({"model": "m", where: [deep], other: [{"role": "user", "content": "hi"}]}).encode()

    seen = []
    for depth in (MAX_DEPTH - 2, MAX_DEPTH - 1):
        f = make_flow("/v1/messages", body(depth))
        run_flow(pipe[0], f)
        seen.append(Exchange.of(f).unreadable)
    assert seen[0] is None
    assert seen[1] == f"is nested deeper than {MAX_DEPTH} levels"


def test_the_turns_intake_wrote_are_those_history_writes():
    from tokenaddons.addons.intake import Intake
    from tokenaddons.engines.history import write_turns

    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "text", "text": "b"}]}]
    body, unreadable, written = Intake._parse(json.dumps({"model": "m", "messages": turns}).encode(), MESSAGES)
    assert unreadable is None and written == write_turns(turns) == (
        b'[[{"role":"user","content":"a"}]]', b'[[{"role":"assistant","content":[{"type":"text","text":"b"}]}]]')
    # a value orjson does not write: no turns written here, the depth still checked (by the walk)
    body, unreadable, written = Intake._parse(b'{"model": "m", "messages": [{"content": "\\ud800"}]}', MESSAGES)
    assert unreadable is None and written is None and body["messages"][0]["content"] == "\ud800"
