"""Intake, stream pump, meter and outlet around single flows (taddons/tflow style)."""
from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from pipeline import make_flow, rows, run_flow, sse_response
from tokenaddons.exchange import Exchange
from tokenaddons.intake import Intake, Outlet
from tokenaddons.meter import Meter
from tokenaddons.providers.sse import frame
from tokenaddons.store import Store


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


def test_unknown_and_non_json_bodies_pass_through_byte_for_byte(pipe):
    addons, store = pipe
    for path, body in [("/v1/messages", b"\xff\xfe not json"), ("/v1/models", b'{"a" :  1}'),
                       ("/v1/messages", b'[1, 2')]:
        f = make_flow(path, body, response=http.Response.make(200, b"ok"))
        run_flow(addons, f)
        assert f.request.raw_content == body
        assert Exchange.of(f).api is None
    assert [r["api"] for r in rows(store)] == ["other"] * 3


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


@pytest.mark.parametrize("chunks", [1, 3, len(b"".join(ANTHROPIC_STREAM))])
def test_anthropic_stream_usage_is_start_plus_final_delta(pipe, chunks):
    addons, store = pipe
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
                  response=sse_response(ANTHROPIC_STREAM))
    run_flow(addons, f, stream_chunks=chunks)
    assert f.metadata["client_saw"] == b"".join(ANTHROPIC_STREAM)
    [row] = rows(store)
    assert row["input_tokens"] == 12 + 2000 + 300
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (2000, 300)
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (100, 200)
    assert row["output_tokens"] == 42 and row["complete"] == 1 and row["stream"] == 1
    assert row["model"] == "claude-sonnet-4-5-20250929" and row["requested_model"] == "claude-sonnet-4-5"


def compressed(encoding: str, data: bytes) -> bytes:
    import zlib

    import brotli
    import zstandard

    return {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress,
            "zstd": zstandard.ZstdCompressor().compress}[encoding](data)


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


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_compressed_json_answer_is_metered(pipe, encoding):
    addons, store = pipe
    answer = {"model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "hi"}],
              "usage": {"input_tokens": 11, "output_tokens": 7}}
    response = http.Response.make(200, b"", {"content-type": "application/json", "content-encoding": encoding})
    response.raw_content = compressed(encoding, json.dumps(answer).encode())
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "messages": []}, response=response)
    run_flow(addons, f)
    [row] = rows(store)
    assert (row["input_tokens"], row["output_tokens"], row["estimated"]) == (11, 7, 0)
    assert row["model"] == "claude-sonnet-4-5-20250929"


def test_a_stream_in_an_unknown_encoding_passes_through_unread(pipe):
    addons, store = pipe
    response = sse_response(ANTHROPIC_STREAM)
    response.headers["content-encoding"] = "x-custom"
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []}, response=response)
    run_flow(addons, f, stream_chunks=3)
    assert f.response.stream is True  # passed on as it came, not through the taps
    [row] = rows(store)
    assert row["status"] == 200  # metered, without the usage it could not read


def test_openai_stream_usage_is_requested_and_hidden_from_a_client_that_did_not_ask(pipe):
    addons, store = pipe
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini-2024-07-18",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 1500, "completion_tokens": 2,
                                               "prompt_tokens_details": {"cached_tokens": 1280}}}
    events = [frame(chunk), frame(usage), frame("[DONE]")]
    f = make_flow("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True, "messages": []},
                  response=sse_response(events))
    run_flow(addons, f, stream_chunks=4)
    assert json.loads(f.request.content)["stream_options"] == {"include_usage": True}
    assert f.metadata["client_saw"] == frame(chunk) + frame("[DONE]")
    [row] = rows(store)
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (1500, 1280, 2)
    assert not row["estimated"]


def test_a_client_that_asked_for_usage_keeps_it(pipe):
    addons, store = pipe
    usage = {"id": "c1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    events = [frame(usage), frame("[DONE]")]
    f = make_flow("/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                           "stream_options": {"include_usage": True}, "messages": []},
                  response=sse_response(events))
    raw = f.request.raw_content
    run_flow(addons, f, stream_chunks=2)
    assert f.request.raw_content == raw
    assert f.metadata["client_saw"] == b"".join(events)


def test_stream_without_usage_is_estimated_and_marked(pipe):
    addons, store = pipe
    from mitmproxy import ctx

    ctx.options.meter_stream_usage = False
    chunk = {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "hello there world"}}]}
    f = make_flow("/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                           "messages": [{"role": "user", "content": "say hello to the world"}]},
                  response=sse_response([frame(chunk), frame("[DONE]")]))
    run_flow(addons, f, stream_chunks=1)
    [row] = rows(store)
    assert row["estimated"] == 1 and row["input_tokens"] > 0 and row["output_tokens"] == 3


def test_interrupted_stream_is_metered_as_far_as_it_got(pipe):
    addons, store = pipe
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []},
                  response=sse_response(ANTHROPIC_STREAM[:2]))
    run_flow(addons, f, stream_chunks=2)
    rows_before = rows(store)
    assert rows_before[0]["complete"] == 0  # no message_stop: incomplete
    f2 = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "stream": True, "messages": []})
    f2.response = None
    intake, meter = addons[1], addons[2]
    intake.request(f2)
    meter.request(f2)
    f2.response = sse_response([])
    f2.response.content = None
    intake.responseheaders(f2)
    f2.response.stream(ANTHROPIC_STREAM[0])
    f2.error = tflow.terr("server disconnected")
    meter.error(f2)
    row = rows(store)[1]
    assert row["complete"] == 0 and row["error_type"] == "interrupted" and row["input_tokens"] == 2312


def test_upstream_error_is_metered_with_its_type(pipe):
    addons, store = pipe
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "messages": []},
                  response=http.Response.make(529, json.dumps(err).encode()))
    run_flow(addons, f)
    [row] = rows(store)
    assert (row["status"], row["error_type"], row["input_tokens"]) == (529, "overloaded_error", 0)


def test_a_broken_tap_does_not_break_the_stream(pipe):
    addons, store = pipe

    class Broken:
        def feed(self, chunk):
            raise RuntimeError("boom")

        def end(self):
            return b""

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
