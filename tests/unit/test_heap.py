"""Once running, what start-up loaded is frozen out of garbage collection."""
from __future__ import annotations

import gc

from mitmproxy import hooks
from mitmproxy.test import taddons

from tokenaddons.addons.heap import Heap


def test_running_freezes_what_start_up_loaded_out_of_the_collectors_walks():
    loaded = [[i] for i in range(1000)]  # as tiktoken's tables and the phone numbering plans are: alive for good
    probe = loaded[500]
    assert any(o is probe for o in gc.get_objects())
    try:
        with taddons.context(Heap()) as tctx:
            tctx.master.addons.trigger(hooks.RunningHook())
            assert gc.get_freeze_count() >= len(loaded)
            assert not any(o is probe for o in gc.get_objects())  # no collection walks it any more
            later = [0]
            assert any(o is later for o in gc.get_objects())  # what requests create still is collected
    finally:
        gc.unfreeze()


def test_an_ended_exchange_lets_go_of_its_body_at_once():
    """mitmproxy's flows are freed only by the cyclic collector: the parsed body
    an exchange held must not wait for it (and be walked by every collection until then)."""
    import weakref

    from tokenaddons.exchange import Exchange
    from tokenaddons.test.flows import make_flow

    class Part:  # something inside the parsed body that can be watched
        pass

    flow = make_flow("/v1/messages", {"model": "m", "messages": []})
    part = Part()
    watched = weakref.ref(part)
    ex = Exchange(client_api=None, body={"messages": [{"role": "user", "content": [part]}]}, source=b"{}")
    ex.attach(flow)
    ex.state["meter"] = ex  # a cycle through the scratch, as a tap that holds its exchange makes
    ex.state["metered"] = True
    del part
    gc.disable()  # freed without the collector, or not at all
    try:
        Heap().response(flow)
        assert watched() is None and ex.body is None and ex.source is None
        assert ex.state == {"metered": True}  # its flags stay: a late error hook finds it metered
    finally:
        gc.enable()


async def test_a_sent_request_lets_go_of_its_parsed_body_and_a_later_reader_parses_it_again():
    """With many requests waiting on upstream, each parsed body would wait out its
    answer in memory; the request's bytes are what a later reader parses."""
    import asyncio
    import json

    from tokenaddons.addons.outlet import Outlet
    from tokenaddons.exchange import Exchange
    from tokenaddons.providers.anthropic import MESSAGES
    from tokenaddons.test.flows import make_flow

    sent = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    flow = make_flow("/v1/messages", json.dumps(sent).encode())
    ex = Exchange(client_api=MESSAGES, body=json.loads(flow.request.content), source=flow.request.content)
    ex.attach(flow)
    first = ex.body
    heap = Heap()
    heap.request(flow)
    assert ex.body is first  # still there until the loop's next turn: mitmproxy writes the request first
    await asyncio.sleep(0)
    assert ex._body is not first and ex.known
    assert ex.body == sent and ex.body is not first  # parsed again, from the client's bytes

    # changed by an addon and serialized (Outlet): parsed again from what was sent
    changed = make_flow("/v1/messages", json.dumps(sent).encode())
    ex = Exchange(client_api=MESSAGES, body=json.loads(changed.request.content), source=changed.request.content)
    ex.attach(changed)
    ex.body["messages"][0]["content"] = "[EMAIL_1]"
    ex.mark_changed()
    Outlet().request(changed)
    assert ex.shelve(changed.request.raw_content)
    assert ex.body["messages"][0]["content"] == "[EMAIL_1]" and ex.body_version == 1
    # a change not yet serialized is never let go of; nor a body already let go of, or released
    ex.body["model"] = "other"
    ex.mark_changed()
    assert not ex.shelve(b'{"model": "m"}') and ex.body["model"] == "other"
    heap.response(changed)
    assert not ex.shelve(None) and ex.body is None

    # an addon that builds on the parsed body after the request has gone (route's relay) keeps it
    kept = Exchange(client_api=MESSAGES, body=json.loads(flow.request.content), source=flow.request.content,
                    keeps_body=True)
    body = kept.body
    assert not kept.shelve(None) and kept.body is body
