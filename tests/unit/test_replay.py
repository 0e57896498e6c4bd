"""The replay driver's pairing rules and the what-if arithmetic, without a replay."""
from __future__ import annotations

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.replay import TAG, Replay, replayable
from tokenaddons.exchange import WITHHELD_KEY, Exchange
from tokenaddons.test.flows import make_flow
from tokenaddons.whatif import report, would_bill

BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def test_what_can_be_replayed():
    flow = tflow.tflow(resp=True)
    assert replayable(flow) is None
    assert replayable(tflow.tflow()) == "no answer was captured"
    assert replayable(tflow.tflow(resp=True, ws=True)) == "a WebSocket"
    withheld = tflow.tflow(resp=True)
    withheld.metadata[WITHHELD_KEY] = "request body: refused by scrub"
    assert replayable(withheld) == "its request body was not captured"
    assert replayable(tflow.ttcpflow()) == "not HTTP"


@pytest.fixture
def driver():
    addon, intake = Replay(), Intake()
    with taddons.context(addon, intake):
        captured = make_flow("/v1/messages", BODY)
        captured.request.headers[TAG] = "0"
        addon.captured["0"] = captured
        yield addon, intake


def played(intake, path="/v1/messages"):
    flow = make_flow(path, BODY)
    flow.request.headers[TAG] = "0"
    intake.request(flow)
    return flow


def test_a_request_the_pipeline_answered_keeps_its_own_answer(driver):
    addon, intake = driver
    flow = played(intake)
    flow.response = http.Response.make(200, b"{}")  # a cache hit, say
    Exchange.of(flow).answered_by = "cache"
    addon.request(flow)
    assert TAG not in flow.request.headers  # server playback finds nothing to overwrite it with
    assert flow.response.content == b"{}"


def test_a_request_translated_to_another_api_is_answered_here_never_let_out(driver):
    from tokenaddons.providers import BY_NAME

    addon, intake = driver
    flow = played(intake)
    ex = Exchange.of(flow)
    ex.upstream_api = BY_NAME["openai.chat"]  # route translated it: no captured answer of that API
    flow.request.host, flow.request.path = "api.openai.com", "/v1/chat/completions"
    addon.request(flow)
    assert TAG not in flow.request.headers
    assert flow.response.status_code == 502 and b"whose answer was not captured" in flow.response.content
    assert ex.answered_by == "replay"


def test_the_same_api_elsewhere_is_answered_from_the_capture(driver):
    addon, intake = driver
    flow = played(intake)
    captured = addon.captured["0"].request
    flow.request.scheme, flow.request.host, flow.request.port = "https", "gateway.example", 8443  # another base URL
    addon.request(flow)
    assert flow.response is None and flow.request.headers[TAG] == "0"
    assert (flow.request.scheme, flow.request.host, flow.request.port) == (captured.scheme, captured.host,
                                                                           captured.port)


def test_a_request_going_upstream_keeps_its_tag_for_server_playback(driver):
    addon, intake = driver
    flow = played(intake)
    addon.request(flow)
    assert flow.request.headers[TAG] == "0" and flow.response is None


def side(cost=1.0, answered_by=None, decisions=(), **usage):
    return {"answered_by": answered_by, "model": "m", "cost_usd": cost,
            "usage": {"input_tokens": 1000, "cache_read_tokens": 0, "cache_write_tokens": 0, "output_tokens": 10,
                      **usage},
            "decisions": [{"tokens_saved": 0, "usd_saved": 0.0, "detail": {}, **d} for d in decisions]}


def test_would_bill_takes_off_what_compress_and_route_saved_and_nothing_for_answers_made_here():
    compressed = side(1.0, decisions=[{"addon": "compress", "action": "json", "tokens_saved": 300, "usd_saved": 0.3},
                                      {"addon": "compress", "action": "hints", "usd_saved": -0.05},
                                      {"addon": "scrub", "action": "pseudonymize"}])
    usage, cost = would_bill(compressed)
    # hints are billed as the provider's cache reads, which the captured answer holds as they were
    assert usage["input_tokens"] == 700 and cost == pytest.approx(0.7)
    rerouted = side(1.0, decisions=[{"addon": "replay", "action": "repriced", "usd_saved": 0.6}])
    assert would_bill(rerouted)[1] == pytest.approx(0.4)
    assert would_bill(side(1.0, answered_by="cache"))[1] == 0
    assert would_bill(side(1.0, answered_by="budget"))[1] == 0


def test_the_report_adds_up_both_sides():
    class Flow:
        def __init__(self, i):
            self.id = f"f{i}"
            self.request = type("R", (), {"path": "/v1/messages"})()

    flows = [Flow(i) for i in range(3)]
    captured = {"f0": side(1.0), "f1": side(2.0), "f2": side(4.0)}
    replayed = {"f0": side(1.0),
                "f1": side(0.0, answered_by="cache", decisions=[{"addon": "cache", "action": "hit", "usd_saved": 1.0}]),
                "f2": side(0.0, answered_by="budget", decisions=[
                    {"addon": "budget", "action": "refused", "detail": {"scope": "global", "window": "daily"}}])}
    data = report(flows, captured, replayed, skipped={})
    was, now = data["captured"], data["replayed"]
    assert (was["cost_usd"], was["upstream"]) == (7.0, 3)
    assert (now["cost_usd"], now["upstream"]) == (1.0, 1)
    assert now["saved"]["cache"] == {"requests": 1, "tokens": 0, "usd": 1.0}
    assert now["refused"] == {"budget": {"requests": 1, "why": {"global daily": 1}, "billed_usd": 4.0}}
    assert [e["would_bill_usd"] for e in data["by_exchange"]] == [1.0, 0.0, 0.0]
