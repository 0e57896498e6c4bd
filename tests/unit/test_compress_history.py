"""Compress on the next turn of a conversation: the messages a request shares
with the one it continues are taken from what compress found in that request
(tool outputs, calls, keys, the client's breakpoints), only the new ones
walked. What is sent and decided is what a proxy that matched nothing sends:
the same conversations through a proxy whose history is forgotten before each
request."""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from tests.unit.test_compress_results import (
    ANSWER,
    HEADERS,
    MESSAGES,
    OUTPUTS,
    anthropic,
    client_marked,
    marked_inside_a_result,
    nested,
)
from tokenaddons.addons import compress as compress_module
from tokenaddons.addons.compress import Compress
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.engines.history import History, TurnRecords
from tokenaddons.exchange import Exchange
from tokenaddons.test.flows import make_flow
from tokenaddons.test.pipeline import arun_flow


class Rewrite:
    """An addon before compress that changes the body (as scrub or route may)."""

    def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        ex.body["metadata"] = {"user_id": "rewritten"}
        ex.mark_changed()


class Proxy:
    """Store, intake, compress and what settles an exchange, on mitmproxy's addon
    manager. `forget`: the history of requests is forgotten before each one (no
    request continues another: every message walked)."""

    def __init__(self, path: Path, forget: bool = False, before: list | None = None, **options):
        self.store, self.intake = Store(), Intake()
        self.compress = Compress(self.store)
        self.addons = [self.store, self.intake, *(before or []), self.compress, Meter(self.store), Settle(), Outlet()]
        self.path, self.forget, self.options = path, forget, options
        self.starts: list[int] = []  # the message each walk started at

    def __enter__(self) -> Proxy:
        self.ctx = taddons.context(*self.addons)
        self.tctx = self.ctx.__enter__()
        self.tctx.configure(self.store, store_path=str(self.path))
        if self.options:
            self.tctx.configure(self.compress, **self.options)
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.__exit__(*exc)
        self.store.done()

    async def send(self, body: dict) -> list:
        """[sha256 of the body sent, compress's decisions] of one request."""
        if self.forget:
            self.intake.history = History()
        answer = http.Response.make(200, json.dumps(ANSWER).encode(), {"content-type": "application/json"})
        flow = await arun_flow(self.addons, make_flow(MESSAGES, copy.deepcopy(body), dict(HEADERS), answer))
        decisions = [[d.action, d.tokens_saved, repr(d.usd_saved), json.dumps(d.detail, sort_keys=True)]
                     for d in Exchange.of(flow).decisions if d.addon == "compress"]
        return [hashlib.sha256(flow.request.content).hexdigest(), decisions]


@pytest.fixture
def walks(monkeypatch) -> list[int]:
    """The message each walk of a request's messages starts at."""
    starts: list[int] = []
    walk = compress_module._anthropic_outputs

    def spy(body: dict, start: int = 0):
        starts.append(start)
        return walk(body, start)

    monkeypatch.setattr(compress_module, "_anthropic_outputs", spy)
    return starts


async def sent_both_ways(tmp_path: Path, bodies: list[dict], **options) -> tuple[list, list]:
    with Proxy(tmp_path / "continued.db", **options) as proxy:
        continued = [await proxy.send(body) for body in bodies]
    with Proxy(tmp_path / "walked.db", forget=True, **options) as proxy:
        walked = [await proxy.send(body) for body in bodies]
    return continued, walked


def turn_by_turn(build) -> list[dict]:
    return [build(n) for n in range(len(OUTPUTS) + 1)]


@pytest.mark.parametrize("build", [anthropic, client_marked, marked_inside_a_result, nested,
                                   lambda n: anthropic(n, cache_control={"type": "ephemeral"})])
@pytest.mark.parametrize("options", [{}, {"compress_lossy": True, "compress_max_tokens": 300},
                                     {"cache_hints_ttl": "1h"}])
async def test_a_conversation_sent_turn_by_turn_is_sent_and_decided_as_if_every_message_were_walked(
        tmp_path, walks, build, options):
    continued, walked = await sent_both_ways(tmp_path, turn_by_turn(build), **options)
    assert continued == walked
    assert any(d for _, d in continued)  # something was compressed or hinted
    # every request but the first walked only what it added (or from the message its client
    # rewrote: a moved breakpoint); without the history, every message
    assert walks[0] == 0 and 0 not in walks[1:len(continued)]
    if build is anthropic:
        assert walks[:len(continued)] == [0] + [2 * n - 1 for n in range(1, len(continued))]
    assert walks[len(continued):] == [0] * len(walked)


async def test_history_rewritten_in_the_middle_is_walked_from_where_it_changed(tmp_path, walks):
    edited = anthropic(6)
    edited["messages"][4]["content"][0]["content"] = OUTPUTS[7]  # an earlier tool output replaced
    longer = copy.deepcopy(edited)
    longer["messages"] += anthropic(7)["messages"][-2:]
    bodies = [anthropic(5), anthropic(6), edited, longer]
    continued, walked = await sent_both_ways(tmp_path, bodies)
    assert continued == walked
    assert walks[:4] == [0, 11, 4, 13]


async def test_a_new_call_with_the_id_of_an_earlier_output_walks_every_message(tmp_path, walks):
    """What an output's call reads (a file, or not) is part of its key: a new call
    of the same id changes it and every key after it."""
    reused = anthropic(4)
    reused["messages"] += [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_0", "name": "read_file", "input": {"path": "x.py"}}]}]
    continued, walked = await sent_both_ways(tmp_path, [anthropic(4), reused])
    assert continued == walked
    assert walks[:3] == [0, 9, 0]  # the shortcut's walk of what was added, then the whole walk


async def test_a_body_changed_before_compress_is_walked_whole_and_not_recorded(tmp_path, walks):
    with Proxy(tmp_path / "events.db", before=[Rewrite()]) as proxy:
        for n in range(4):
            await proxy.send(anthropic(n))
        assert len(proxy.compress.seen) == 0
    assert walks == [0] * 4


async def test_the_record_is_bounded_and_forgotten_when_the_options_change(tmp_path):
    with Proxy(tmp_path / "events.db") as proxy:
        proxy.compress.seen = TurnRecords(size=3)
        for n in range(5):
            await proxy.send(anthropic(n))
        assert len(proxy.compress.seen) == 3
        proxy.tctx.configure(proxy.compress, cache_hints_ttl="1h")  # hints only: what was found holds
        assert len(proxy.compress.seen) == 3
        proxy.tctx.configure(proxy.compress, compress_lossy=True)  # other results, other keys
        assert len(proxy.compress.seen) == 0
        await proxy.send(anthropic(5))
        assert len(proxy.compress.seen) == 1
