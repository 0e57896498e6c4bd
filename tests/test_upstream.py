"""A down upstream is answered in the provider's own error shape: units with an
injected clock and a counted probe, then a real mitmdump with the SDKs against
a port nobody listens on, which later comes back."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import anthropic
import openai
import pytest
from mitmproxy.connection import Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from pipeline import Clock, make_flow
from tokenaddons.intake import Intake
from tokenaddons.upstream import Upstream

INTAKE = Intake()
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def upstream():
    clock = Clock(1000.0)
    addon = Upstream(clock=clock)
    probes: list[tuple] = []
    real = addon._probe

    async def counted(addr):
        probes.append(addr)
        return await real(addr)

    addon._probe = counted
    with taddons.context(addon, INTAKE) as tctx:
        yield addon, clock, probes, tctx


def flow_to(port: int, path="/v1/messages", body=BODY):
    f = make_flow(path, body, {"content-type": "application/json"})
    f.request.host, f.request.port, f.request.scheme = "127.0.0.1", port, "http"
    INTAKE.request(f)
    return f


def connect_event(port: int, error: str | None = None) -> ServerConnectionHookData:
    server = Server(address=("127.0.0.1", port))
    server.error = error
    return ServerConnectionHookData(server=server, client=tflow.tclient_conn())


def test_unreachable_upstream_gets_the_providers_shape(upstream):
    addon, clock, probes, tctx = upstream
    port = closed_port()
    f = flow_to(port)
    asyncio.run(addon.request(f))
    assert f.response.status_code == 502
    body = json.loads(f.response.content)
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert f"cannot reach the upstream 127.0.0.1:{port}" in body["error"]["message"]
    assert f.response.headers["retry-after"] == "1"
    chat = flow_to(port, "/v1/chat/completions", {"model": "gpt-4o", "messages": []})
    asyncio.run(addon.request(chat))  # within upstream_retry_s: answered without a new check
    assert json.loads(chat.response.content)["error"]["type"] == "server_error"
    assert len(probes) == 1
    clock.now += 1.5
    asyncio.run(addon.request(flow_to(port)))
    assert len(probes) == 2  # the retry window passed: checked again


def test_a_reachable_upstream_is_checked_once_then_trusted(upstream):
    addon, clock, probes, tctx = upstream
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        for _ in range(3):
            f = flow_to(port)
            asyncio.run(addon.request(f))
            assert f.response is None
    assert len(probes) == 1
    addon.server_connect_error(connect_event(port, "Connection refused"))  # a real connection failed
    f = flow_to(port)
    asyncio.run(addon.request(f))  # answered at once, with mitmproxy's reason
    assert f.response.status_code == 502 and "Connection refused" in f.response.text
    assert len(probes) == 1
    addon.server_connected(connect_event(port))  # and came back
    f = flow_to(port)
    asyncio.run(addon.request(f))
    assert f.response is None and len(probes) == 1


def test_unknown_endpoints_and_the_off_switch_are_left_alone(upstream):
    addon, clock, probes, tctx = upstream
    port = closed_port()
    other = flow_to(port, "/healthz", {})
    asyncio.run(addon.request(other))
    tctx.options.upstream_check = False
    off = flow_to(port)
    asyncio.run(addon.request(off))
    assert other.response is None and off.response is None and probes == []


@pytest.mark.integration
def test_e2e_down_upstream_raises_the_sdks_error_then_recovers(make_proxy):
    from tokenaddons.sim import Simulator

    port = closed_port()
    proxy = make_proxy(f"http://127.0.0.1:{port}", {"upstream_retry_s": "0.2"})
    # a short timeout: a request stalled behind its refused twin would fail here
    c = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0, timeout=10)
    with pytest.raises(anthropic.InternalServerError) as err:
        c.messages.create(**BODY)
    assert err.value.status_code == 502 and "cannot reach the upstream" in err.value.message
    o = openai.OpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "cannot reach the upstream" in err.value.message
    rows = proxy.rows(2)
    assert [(r["status"], r["error_type"]) for r in rows] == [(502, "upstream")] * 2
    with Simulator(port=port) as sim:  # the upstream comes back
        time.sleep(0.3)
        answer = c.messages.create(**BODY)
        assert answer.content and len(sim.requests) == 1
