"""A down upstream answered in the provider's shape."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
from mitmproxy.connection import Server
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.upstream import Upstream
from tokenaddons.test.clock import Clock
from tokenaddons.test.flows import make_flow

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
