"""A down upstream through a real mitmdump: the SDK's error, then recovery."""
from __future__ import annotations

import socket
import time

import anthropic
import openai
import pytest
from mitmproxy.test import taddons

from tokenaddons.addons.intake import Intake
from tokenaddons.addons.upstream import Upstream
from tokenaddons.test.clock import Clock

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
