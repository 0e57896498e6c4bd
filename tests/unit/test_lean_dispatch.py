"""mitmproxy's events offered through lean_dispatch: every call, its order, its
arguments, each failure's log line and what ends or escapes an event are
those of mitmproxy's own dispatch, on the same chains (each case runs both)."""
from __future__ import annotations

import asyncio
import logging
import traceback

import pytest
from mitmproxy import addonmanager, exceptions
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from tokenaddons import lean_dispatch
from tokenaddons.dispatch import Pipeline


class Named:
    def __init__(self, name: str, calls: list):
        self.name = name
        self.calls = calls

    def __repr__(self) -> str:
        return self.name


class Sync(Named):
    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))

    def update(self, flows):
        self.calls.append((self.name, "update", flows[0].id))


class Async(Named):
    async def request(self, flow):
        await asyncio.sleep(0)
        self.calls.append((self.name, "request", flow.id))

    def response(self, flow):
        self.calls.append((self.name, "response", flow.id))


class Raising(Named):
    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))
        raise ValueError(f"{self.name} is broken")


class RaisingLater(Named):
    async def request(self, flow):
        await asyncio.sleep(0)
        raise KeyError(self.name)


class NotCallable(Named):
    request = 5


class ModuleNamed(Named):
    request = asyncio  # a module under a hook's name: skipped, not an error


class Halting(Named):
    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))
        raise exceptions.AddonHalt()


class BadOption(Named):
    def request(self, flow):
        raise exceptions.OptionsError("not here")


class Parent(Named):
    """Children, one of them added by the parent's own hook (mitmproxy reads them after it)."""

    def __init__(self, name: str, calls: list):
        super().__init__(name, calls)
        self.addons = [Sync(f"{name}.a", calls), Sync(f"{name}.b", calls)]

    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))
        if len(self.addons) == 2:
            self.addons.append(Sync(f"{self.name}.late", self.calls))


class BrokenChild(Named):
    """A child's failure ends its parent's part of the event (mitmproxy's safecall wraps the whole walk)."""

    def __init__(self, name: str, calls: list):
        super().__init__(name, calls)
        self.addons = [Sync(f"{name}.a", calls), Raising(f"{name}.b", calls), Sync(f"{name}.c", calls)]


def chain(calls: list, *kinds: type) -> list:
    return [kind(f"{kind.__name__.lower()}{i}", calls) for i, kind in enumerate(kinds)]


CASES = {
    "calls in order": (Sync, Async, Sync, Async),
    "failures are kept to their addon": (Sync, Raising, RaisingLater, Async, NotCallable, ModuleNamed, Sync),
    "children": (Sync, Parent, BrokenChild, Raising, Sync),
    "a halt ends the event": (Sync, Halting, Sync),
}


async def dispatched(kinds: tuple, lean: bool, caplog) -> tuple[list, list]:
    """What a chain of `kinds` did with a request and a response event, and what was logged."""
    caplog.clear()
    calls: list = []
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.add(*chain(calls, *kinds))
        if lean:
            assert lean_dispatch.install(manager, "test")
        f = tflow.tflow(resp=True)
        for event in (HttpRequestHook(f), HttpResponseHook(f)):
            await manager.handle_lifecycle(event)
        if lean:
            lean_dispatch.uninstall(manager, "test")
        assert not lean_dispatch.installed(manager)
    calls = [(name, hook, "the flow" if arg == f.id else arg) for name, hook, arg in calls]
    logged = [(r.name, r.levelname, r.getMessage(), first_frame(r)) for r in caplog.records
              if r.name == "mitmproxy.addonmanager"]
    return calls, logged


def first_frame(record: logging.LogRecord) -> str | None:
    """Where a logged traceback starts: the hook that failed, or the dispatch (whichever's) that found it wrong."""
    name = traceback.extract_tb(record.exc_info[2])[0].name if record.exc_info else None
    return "dispatch" if name in ("_iter_hooks", "trigger_event") else name


@pytest.mark.parametrize("case", CASES)
async def test_the_same_calls_and_logs_as_mitmproxys_dispatch(case, caplog):
    mitmproxys = await dispatched(CASES[case], False, caplog)
    lean = await dispatched(CASES[case], True, caplog)
    assert lean == mitmproxys
    assert mitmproxys[0]  # something was called


async def test_each_failure_is_logged_from_its_hook_and_the_chain_goes_on(caplog):
    calls, logged = await dispatched(CASES["failures are kept to their addon"], True, caplog)
    assert [c[:2] for c in calls if c[1] != "update"] == [
        ("sync0", "request"), ("raising1", "request"), ("async3", "request"), ("sync6", "request"),
        ("async3", "response")]
    assert calls[-2:] == [("sync0", "update", "the flow"), ("sync6", "update", "the flow")]
    assert [(m, frame) for _, _, m, frame in logged] == [
        ("Addon error: raising1 is broken", "request"), ("Addon error: 'raisinglater2'", "request"),
        ("Addon error: Addon handler request (notcallable4) not callable", "dispatch")]


async def test_a_late_child_is_called_in_the_same_event_and_a_failing_one_ends_its_parents_part(caplog):
    calls, _ = await dispatched(CASES["children"], True, caplog)
    assert [c[0] for c in calls if c[1] == "request"] == [
        "sync0", "parent1", "parent1.a", "parent1.b", "parent1.late", "brokenchild2.a", "brokenchild2.b",
        "raising3", "sync4"]


async def test_an_options_error_escapes_the_event_as_with_mitmproxys():
    for lean in (False, True):
        with taddons.context() as tctx:
            manager = tctx.master.addons
            manager.add(*chain([], Sync, BadOption, Sync))
            if lean:
                lean_dispatch.install(manager, "test")
            with pytest.raises(exceptions.OptionsError):
                await manager.trigger_event(HttpRequestHook(tflow.tflow()))
            lean_dispatch.uninstall(manager, "test")


def test_the_installed_mitmproxy_is_the_one_mirrored():
    """Else the bundle runs on mitmproxy's own dispatch (a new mitmproxy: compare, then take its digest)."""
    assert lean_dispatch.source_digest() == lean_dispatch.MIRRORED_DIGEST
    assert lean_dispatch.refusal() == ""


def test_another_mitmproxy_keeps_its_own_dispatch(monkeypatch, caplog):
    monkeypatch.setattr(lean_dispatch, "MIRRORED_DIGEST", "0" * 64)
    lean_dispatch.refusal.cache_clear()
    try:
        with taddons.context() as tctx, caplog.at_level(logging.INFO):
            assert not lean_dispatch.install(tctx.master.addons, "test")
            assert not lean_dispatch.installed(tctx.master.addons)
        assert "mitmproxy keeps its own" in caplog.text
    finally:
        lean_dispatch.refusal.cache_clear()


def test_the_last_owner_to_leave_restores_mitmproxys():
    with taddons.context() as tctx:
        manager = tctx.master.addons
        lean_dispatch.install(manager, "one")
        lean_dispatch.install(manager, "two")
        lean_dispatch.uninstall(manager, "one")
        assert lean_dispatch.installed(manager)
        lean_dispatch.uninstall(manager, "two")
        assert not lean_dispatch.installed(manager)
        assert manager.trigger_event.__func__ is addonmanager.AddonManager.trigger_event


async def test_the_pipeline_installs_it_by_its_option_and_takes_it_out_when_done():
    pipeline = Pipeline([])
    with taddons.context(pipeline) as tctx:
        manager = tctx.master.addons
        assert not lean_dispatch.installed(manager)  # until configured, as mitmproxy does once loaded
        tctx.configure(pipeline, lean_dispatch=True)
        assert lean_dispatch.installed(manager)
        tctx.configure(pipeline, lean_dispatch=False)
        assert not lean_dispatch.installed(manager)
        tctx.configure(pipeline, lean_dispatch=True)
        assert lean_dispatch.installed(manager)
        await pipeline.done()
        assert not lean_dispatch.installed(manager)
