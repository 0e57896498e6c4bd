"""The meter: usage from answers and streams, estimates, errors and cut streams."""
from __future__ import annotations

import gzip
import json

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.store import Store
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


# ------------------------------------------------------------- odd values from clients and upstreams

def answer(data, status=200):
    return http.Response.make(status, json.dumps(data).encode(), {"content-type": "application/json"})


def test_a_model_that_is_not_a_string_is_metered_as_its_json_text(pipe):
    addons, store = pipe
    asked = make_flow("/v1/messages", {"model": ["x"], "max_tokens": 5, "messages": []},
                      response=answer({"model": {"name": "odd"}, "usage": {"input_tokens": 3, "output_tokens": 4}}))
    run_flow(addons, asked)
    errored = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
                        response=answer({"type": "error", "error": {"type": {"deep": [1]}, "message": "?"}}, 400))
    run_flow(addons, errored)
    first, second = rows(store)
    assert (first["requested_model"], first["model"], first["output_tokens"]) == ('["x"]', '{"name": "odd"}', 4)
    assert first["cost_usd"] is None  # no price for such a name
    assert second["error_type"] == '{"deep": [1]}' and second["status"] == 400


def test_usage_that_is_not_a_count_fails_the_metering_but_keeps_the_row(pipe):
    addons, store = pipe
    f = make_flow("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
                  response=answer({"model": "claude-sonnet-4-5", "usage": {"input_tokens": 3, "output_tokens": "lots"}}))
    run_flow(addons, f)
    [row] = rows(store)
    assert row["status"] == 200 and row["cost_usd"] is None and row["output_tokens"] == 0
    store.events.flush()
    import sqlite3

    detail = sqlite3.connect(store.events.path).execute(
        "SELECT detail FROM decisions WHERE addon = 'meter' AND action = 'failed'").fetchone()[0]
    assert "output_tokens" in json.loads(detail)["error"]


def test_a_usage_row_names_every_field():
    from dataclasses import fields

    from tokenaddons.engines.usage import Usage

    assert list(Usage().as_row()) == [f.name for f in fields(Usage)]


def test_the_price_table_loads_as_the_proxy_starts_not_on_the_first_request():
    """genai-prices' model table is some 5,000 objects: loaded before start-up
    is frozen out of the garbage collector's reach, not by the first request."""
    import subprocess
    import sys

    code = ("import sys; from mitmproxy.test import taddons; from tokenaddons.addons.meter import Meter; "
            "from tokenaddons.addons.store import Store; s = Store(); m = Meter(s); "
            "before = 'genai_prices.data' in sys.modules\n"
            "with taddons.context(s, m) as tctx: tctx.configure(m)\n"
            "print(before, 'genai_prices.data' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True"]
