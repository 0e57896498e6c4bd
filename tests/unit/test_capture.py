"""Capture (capture_path) through the whole bundle: a saved exchange is what
went upstream and came back, never a value scrub removed, never a credential."""
from __future__ import annotations

import asyncio
import json

import pytest
from mitmproxy import exceptions, http, io
from mitmproxy.test import taddons

from tokenaddons import bundle
from tokenaddons.addons.capture import Capture
from tokenaddons.exchange import WITHHELD_KEY, Exchange
from tokenaddons.providers.sse import frame
from tokenaddons.test.flows import make_flow, sse_response
from tokenaddons.test.pipeline import arun_flow

EMAIL = "jane.roe@example.org"
AWS = "AKIAIOSFODNN7EXAMPLE"
KEY = "sk-ant-secret-key-1"


def body(text: str, stream: bool = False) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": stream,
            "messages": [{"role": "user", "content": text}]}


def json_answer() -> http.Response:
    answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
              "content": [{"type": "text", "text": "Sent to <EMAIL_1>."}], "stop_reason": "end_turn",
              "usage": {"input_tokens": 120, "output_tokens": 30}}
    return http.Response.make(200, json.dumps(answer).encode(), {"content-type": "application/json"})


def stream_answer() -> http.Response:
    return sse_response([
        frame({"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 9}}},
              "message_start"),
        frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "To <EMAIL_1>"}},
              "content_block_delta"),
        frame({"type": "message_delta", "usage": {"output_tokens": 4}}, "message_delta"),
        frame({"type": "message_stop"}, "message_stop")])


@pytest.fixture
def captured(tmp_path):
    """Sends flows through the bundle with capture on; returns (send, read)."""
    addons = bundle.addons()
    path = tmp_path / "session.flow"
    with taddons.context(*addons) as tctx:
        tctx.options.store_path = str(tmp_path / "events.db")
        tctx.options.upstream_check = False
        tctx.options.intercept_all_hosts = True  # the flows go to a local stand-in, not a provider host
        tctx.options.scrub_actions = "AWS_ACCESS_KEY=block"
        tctx.options.capture_path = str(path)
        sent: list[http.HTTPFlow] = []

        def send(text: str, answer: http.Response | None, stream: bool = False) -> http.HTTPFlow:
            flow = make_flow("/v1/messages", body(text, stream),
                             {"content-type": "application/json", "x-api-key": KEY}, answer)
            sent.append(asyncio.run(arun_flow(addons, flow, stream_chunks=3 if stream else None)))
            return flow

        def read() -> list[http.HTTPFlow]:
            next(a for a in addons if isinstance(a, Capture)).done()  # the capture drains its writer
            with open(path, "rb") as f:
                return list(io.FlowReader(f).stream())

        yield send, read
    addons[1].done()


def test_a_capture_holds_what_went_upstream_and_came_back(captured):
    send, read = captured
    live = send(f"Mail {EMAIL} the report.", json_answer())
    assert EMAIL in live.response.text  # the client got the value back
    hit = send(f"Mail {EMAIL} the report.", None)  # a cache hit: answered here, never sent
    assert hit.response.headers["x-tokenaddons-cache"] == "HIT" and EMAIL in hit.response.text
    streamed = send(f"Write to {EMAIL}", stream_answer(), stream=True)
    assert EMAIL.encode() in streamed.metadata["client_saw"]
    blocked = send(f"my key is {AWS} and {EMAIL}", None)
    assert blocked.response.status_code == 400
    flows = read()
    assert [f.id for f in flows] == [live.id, hit.id, streamed.id, blocked.id]
    for flow in flows:
        saved = json.dumps(flow.get_state(), default=repr)
        assert EMAIL not in saved and AWS not in saved and KEY not in saved
        assert flow.request.headers["x-api-key"].startswith("redacted-")
    first, again, stream, refused = flows
    assert "<EMAIL_1>" in first.request.text and "<EMAIL_1>" in first.response.text
    assert "<EMAIL_1>" in again.request.text  # as it would have gone
    assert "<EMAIL_1>" in again.response.text and again.metadata["tokenaddons"]["cache"] == "HIT"
    assert b"To <EMAIL_1>" in stream.response.content and b"message_stop" in stream.response.content
    assert stream.metadata["tokenaddons"]["usage"]["output_tokens"] == 4
    assert refused.request.content == b"" and refused.metadata[WITHHELD_KEY].startswith("request body")
    # one caller, one digest: a replay still tells callers apart
    assert len({f.request.headers["x-api-key"] for f in flows}) == 1


def test_an_unwritable_capture_path_is_a_clear_error(tmp_path):
    addon = Capture()
    (tmp_path / "file").write_text("")
    with taddons.context(addon) as tctx:
        with pytest.raises(exceptions.OptionsError, match="capture_path"):
            tctx.configure(addon, capture_path=str(tmp_path / "file" / "x.flow"))


def test_plus_appends(tmp_path):
    path = tmp_path / "a.flow"
    for spec in (str(path), "+" + str(path)):
        addon = Capture()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, capture_path=spec)
            flow = make_flow("/v1/models", b"", {})
            flow.response = http.Response.make(200, b"{}")
            Exchange(client_api=None).attach(flow)
            addon.response(flow)
            addon.done()
    with open(path, "rb") as f:
        assert len(list(io.FlowReader(f).stream())) == 2


def test_every_credential_is_redacted_and_callers_stay_apart():
    from tokenaddons.addons.capture import Sent, as_sent

    flow = make_flow("/v1beta/models/gemini-2.5-flash:generateContent?key=g1&key=g2", b"{}",
                     {"x-goog-api-key": "hk", "authorization": "Bearer tok-1"})
    flow.request.headers.add("authorization", "Bearer tok-2")
    copy = as_sent(flow.get_state(), Sent(False, None, None))
    saved = json.dumps(copy.get_state(), default=repr)
    assert not any(secret in saved for secret in ("g1", "g2", "hk", "tok-1", "tok-2"))
    bearers = copy.request.headers.get_all("authorization")
    assert len(bearers) == 2 and bearers[0] != bearers[1] and all(b.startswith("Bearer redacted-") for b in bearers)
    keys = copy.request.query.get_all("key")
    assert len(set(keys)) == 2
