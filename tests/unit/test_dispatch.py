"""The bundle as one addon of mitmproxy's chain: parts called in order, only
those with the hook, each failure kept to its part, options and their errors
as with separate addons."""
from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions
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
