"""The bundle as one addon of mitmproxy's chain: parts called in order, only
those with the hook, each failure kept to its part, options and their errors
as with separate addons; the accounting parts once the answer has left."""
from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, io
from mitmproxy.addons.save import Save
from mitmproxy.proxy.layers.http import HttpErrorHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from tokenaddons.dispatch import Pipeline
from tokenaddons.test.pipeline import arun_flow


class Recorder:
    calls: list[str] = []

    def __init__(self, name: str):
        self.label = name


class SyncPart(Recorder):
    def load(self, loader):
        loader.add_option(f"{self.label}_level", int, 1, "a test option")

    def configure(self, updated):
        from mitmproxy import ctx

        if getattr(ctx.options, f"{self.label}_level") < 0:
            raise exceptions.OptionsError(f"{self.label}_level must not be negative")

    def request(self, flow):
        self.calls.append(f"{self.label}.request")


class AsyncPart(Recorder):
    async def request(self, flow):
        await asyncio.sleep(0)
        self.calls.append(f"{self.label}.request")

    def response(self, flow):
        self.calls.append(f"{self.label}.response")


class Failing(Recorder):
    def request(self, flow):
        self.calls.append(f"{self.label}.request")
        raise RuntimeError("broken part")


class Silent(Recorder):
    pass


def test_parts_run_in_order_only_with_the_hook_and_a_failure_stays_in_its_part(caplog):
    Recorder.calls = []
    parts = [SyncPart("a"), Silent("quiet"), Failing("b"), AsyncPart("c"), SyncPart("d")]
    pipeline = Pipeline(parts)
    assert not hasattr(pipeline, "error") and not hasattr(pipeline, "client_connected")
    with taddons.context(pipeline) as tctx:
        assert len([a for a in tctx.master.addons.chain if isinstance(a, Pipeline)]) == 1
        with caplog.at_level(logging.ERROR):
            asyncio.run(arun_flow(parts, tflow.tflow(resp=True)))
    assert Recorder.calls == ["a.request", "b.request", "c.request", "d.request", "c.response"]
    assert "Failing.request failed" in caplog.text and "broken part" in caplog.text


def test_options_of_every_part_and_their_errors_as_with_separate_addons():
    parts = [SyncPart("x"), SyncPart("y")]
    with taddons.context(Pipeline(parts)) as tctx:
        assert tctx.options.x_level == 1 and tctx.options.y_level == 1
        tctx.options.y_level = 5
        with pytest.raises(exceptions.OptionsError, match="y_level must not be negative"):
            tctx.options.y_level = -1
        assert tctx.options.y_level == 5  # refused, as mitmproxy refuses it for a separate addon


def test_part_finds_one_addon_of_the_bundle():
    from tokenaddons import bundle
    from tokenaddons.addons.scrub import Scrub

    (pipeline,) = bundle.loaded(bundle.addons())
    assert isinstance(pipeline.part(Scrub), Scrub)


class Accounting(Recorder):
    after_send = True

    def response(self, flow):
        self.calls.append(f"{self.label}.response")
        flow.metadata[self.label] = "accounted"

    def error(self, flow):
        self.calls.append(f"{self.label}.error")


class FailingAccounting(Accounting):
    def response(self, flow):
        self.calls.append(f"{self.label}.response")
        raise RuntimeError("broken accounting")


def accounting_parts() -> list:
    return [Accounting("meter"), FailingAccounting("settle"), AsyncPart("scrub"), Accounting("heap")]


async def answered(tctx, hook) -> list[str]:
    """Dispatch a response or error hook as mitmproxy does; what had run when it
    returned (when mitmproxy writes the answer to the client), then one loop turn."""
    Recorder.calls = []
    await tctx.master.addons.handle_lifecycle(hook)
    at_send = list(Recorder.calls)
    await asyncio.sleep(0)
    return at_send


def test_accounting_parts_run_after_the_answer_has_left_in_order_each_failure_kept(caplog):
    parts = accounting_parts()
    with taddons.context(Pipeline(parts)) as tctx, caplog.at_level(logging.ERROR):
        flow = tflow.tflow(resp=True)
        assert asyncio.run(answered(tctx, HttpResponseHook(flow))) == ["scrub.response"]
        assert Recorder.calls == ["scrub.response", "meter.response", "settle.response", "heap.response"]
        assert flow.metadata["heap"] == "accounted"  # after the failing one
        assert "FailingAccounting.response failed" in caplog.text
        errored = tflow.tflow(err=True)
        assert asyncio.run(answered(tctx, HttpErrorHook(errored))) == []
        assert Recorder.calls == ["meter.error", "settle.error", "heap.error"]


def test_accounting_before_the_answer_leaves_when_asked_or_when_flows_are_saved(tmp_path):
    with taddons.context(Pipeline(accounting_parts())) as tctx:
        tctx.options.account_after_send = False
        assert asyncio.run(answered(tctx, HttpResponseHook(tflow.tflow(resp=True)))) == [
            "scrub.response", "meter.response", "settle.response", "heap.response"]

    saved = tmp_path / "flows"
    with taddons.context(Pipeline(accounting_parts()), Save()) as tctx:
        tctx.options.save_stream_file = str(saved)  # -w: the save addon writes each flow in its response hook
        flow = tflow.tflow(resp=True)
        assert "heap.response" in asyncio.run(answered(tctx, HttpResponseHook(flow)))
        tctx.options.save_stream_file = None  # closes the file
    with open(saved, "rb") as f:
        (kept,) = io.FlowReader(f).stream()
    assert kept.id == flow.id and kept.metadata["meter"] == kept.metadata["heap"] == "accounted"


def test_accounting_at_once_outside_an_event_loop():
    with taddons.context(Pipeline(accounting_parts())) as tctx:
        Recorder.calls = []
        tctx.master.addons.trigger(HttpResponseHook(tflow.tflow(resp=True)))  # mitmproxy's synchronous trigger
        assert Recorder.calls == ["scrub.response", "meter.response", "settle.response", "heap.response"]


def test_an_accounting_part_must_be_synchronous():
    class Late(Recorder):
        after_send = True

        async def response(self, flow):
            pass

    with pytest.raises(TypeError, match="after_send parts must be synchronous"):
        Pipeline([Late("late")])
