"""tokenaddons.lean: mitmproxy's events offered through its dispatch (every
call, its order, its arguments, each failure's log line and what ends or
escapes an event), and its messages checked by its type check (what passes,
what fails and how), are those of mitmproxy's own on the same input: each case
runs both."""
from __future__ import annotations

import asyncio
import logging
import traceback
import typing

import pytest
from mitmproxy import addonmanager, exceptions, http, optmanager
from mitmproxy.hooks import ConfigureHook
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHook
from mitmproxy.test import taddons, tflow

from tokenaddons import lean
from tokenaddons.dispatch import Pipeline
from tokenaddons.lean import dispatch, headers, options, typecheck
from tokenaddons.lean.mirror import Mirror

ALL = ["event dispatch", "message type check", "header lookups", "option reads"]
SHARED = ALL[1:]  # every manager's: classes of mitmproxy, not one manager's methods


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

    def configure(self, updated):
        self.calls.append((self.name, "configure", ",".join(sorted(updated))))


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
    configure = 6


class ModuleNamed(Named):
    request = asyncio  # a module under a hook's name: skipped, not an error


class Halting(Named):
    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))
        raise exceptions.AddonHalt()

    def configure(self, updated):
        raise exceptions.AddonHalt()


class AsyncConfigure(Named):
    async def configure(self, updated):  # refused from synchronous code, logged
        pass


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

    def configure(self, updated):
        self.calls.append((self.name, "configure", ",".join(sorted(updated))))
        self.addons[0].addons = [Sync(f"{self.name}.grandchild", self.calls)]  # a child's children, read after


class Grows(Named):
    """No children until its own hook gives it some (mitmproxy reads them after the hook)."""

    def request(self, flow):
        self.calls.append((self.name, "request", flow.id))
        self.addons = [Sync(f"{self.name}.given", self.calls)]

    def configure(self, updated):
        self.calls.append((self.name, "configure", ",".join(sorted(updated))))


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
    "children": (Sync, Parent, BrokenChild, Raising, Sync, Grows, Sync),
    "a halt ends the event": (Sync, Halting, Sync),
    "an async hook offered synchronously": (Sync, AsyncConfigure, Sync),
}


async def dispatched(kinds: tuple, leaned: bool, caplog) -> tuple[list, list]:
    """What a chain of `kinds` did with a request and a response event, and what was logged."""
    caplog.clear()
    calls: list = []
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.add(*chain(calls, *kinds))
        if leaned:
            assert lean.install(manager, "test") == ALL
        f = tflow.tflow(resp=True)
        for event in (HttpRequestHook(f), HttpResponseHook(f)):
            await manager.handle_lifecycle(event)
        manager.trigger(ConfigureHook({"one", "two"}))
        if leaned:
            lean.uninstall(manager, "test")
        assert lean.installed(manager) == []
    calls = [(name, hook, "the flow" if arg == f.id else arg) for name, hook, arg in calls]
    logged = [(r.name, r.levelname, r.getMessage(), first_frame(r)) for r in caplog.records
              if r.name == "mitmproxy.addonmanager"]
    return calls, logged


def first_frame(record: logging.LogRecord) -> str | None:
    """Where a logged traceback starts: the hook that failed, or the dispatch (whichever's) that found it wrong."""
    name = traceback.extract_tb(record.exc_info[2])[0].name if record.exc_info else None
    return "dispatch" if name in ("_iter_hooks", "_hook", "invoke_addon_sync", "_call_sync", "safecall") else name


@pytest.mark.parametrize("case", CASES)
async def test_the_same_calls_and_logs_as_mitmproxys_dispatch(case, caplog):
    mitmproxys = await dispatched(CASES[case], False, caplog)
    leaned = await dispatched(CASES[case], True, caplog)
    assert leaned == mitmproxys
    assert mitmproxys[0]  # something was called


async def test_each_failure_is_logged_from_its_hook_and_the_chain_goes_on(caplog):
    calls, logged = await dispatched(CASES["failures are kept to their addon"], True, caplog)
    assert [c[:2] for c in calls if c[1] not in ("update", "configure")] == [
        ("sync0", "request"), ("raising1", "request"), ("async3", "request"), ("sync6", "request"),
        ("async3", "response")]
    assert [c for c in calls if c[1] == "update"][-2:] == [("sync0", "update", "the flow"), ("sync6", "update", "the flow")]
    assert [c for c in calls if c[1] == "configure"] == [("sync0", "configure", "one,two"), ("sync6", "configure", "one,two")]
    assert [(m, frame) for _, _, m, frame in logged] == [
        ("Addon error: raising1 is broken", "request"), ("Addon error: 'raisinglater2'", "request"),
        ("Addon error: Addon handler request (notcallable4) not callable", "dispatch"),
        ("Addon error: Addon handler configure (notcallable4) not callable", "dispatch")]


async def test_a_late_child_is_called_in_the_same_event_and_a_failing_one_ends_its_parents_part(caplog):
    calls, _ = await dispatched(CASES["children"], True, caplog)
    assert [c[0] for c in calls if c[1] == "request"] == [
        "sync0", "parent1", "parent1.a", "parent1.b", "parent1.late", "brokenchild2.a", "brokenchild2.b",
        "raising3", "sync4", "grows5", "grows5.given", "sync6"]
    assert [c[0] for c in calls if c[1] == "configure"] == [
        "sync0", "parent1", "parent1.a", "parent1.grandchild", "parent1.b", "parent1.late", "brokenchild2.a",
        "brokenchild2.c", "sync4", "grows5", "grows5.given", "sync6"]


async def test_an_options_error_escapes_the_event_as_with_mitmproxys():
    for leaned in (False, True):
        with taddons.context() as tctx:
            manager = tctx.master.addons
            manager.add(*chain([], Sync, BadOption, Sync))
            if leaned:
                lean.install(manager, "test")
            with pytest.raises(exceptions.OptionsError):
                await manager.trigger_event(HttpRequestHook(tflow.tflow()))
            lean.uninstall(manager, "test")


def test_the_installed_mitmproxy_is_the_one_mirrored():
    """Else the bundle runs on mitmproxy's own (a new mitmproxy: compare, then take its digests)."""
    for part in lean.PARTS:
        assert part.MIRROR.source_digest() == part.MIRROR.digest, part.MIRROR.what
        assert part.MIRROR.refusal == ""


def test_another_mitmproxy_keeps_its_own(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "MIRROR", Mirror("event dispatch", dispatch.MIRROR.functions, "0" * 64))
    with taddons.context() as tctx, caplog.at_level(logging.INFO):
        manager = tctx.master.addons
        assert lean.install(manager, "test") == SHARED
        assert lean.installed(manager) == SHARED
        assert manager.trigger_event.__func__ is addonmanager.AddonManager.trigger_event
        lean.uninstall(manager, "test")
    assert "mitmproxy's event dispatch is not the one tokenaddons.lean mirrors" in caplog.text


def test_the_last_owner_to_leave_restores_mitmproxys():
    with taddons.context() as tctx, taddons.context() as other:
        manager = tctx.master.addons
        lean.install(manager, "one")
        lean.install(manager, "two")
        lean.install(other.master.addons, "three")
        lean.uninstall(manager, "one")
        assert lean.installed(manager) == ALL
        lean.uninstall(manager, "two")
        assert lean.installed(manager) == SHARED  # every manager's messages, headers, options: another still wants them
        assert manager.trigger_event.__func__ is addonmanager.AddonManager.trigger_event
        assert manager.trigger.__func__ is addonmanager.AddonManager.trigger
        lean.uninstall(other.master.addons, "three")
        assert lean.installed(manager) == lean.installed(other.master.addons) == []
        assert http.MessageData.__post_init__ is typecheck.ORIGINAL
        assert http.Headers.get_all is headers.ORIGINAL["get_all"]
        assert "get" not in http.Headers.__dict__ and "__contains__" not in http.Headers.__dict__
        assert optmanager._Option.current is options.ORIGINAL_CURRENT
        assert optmanager.OptManager.__getattr__ is options.ORIGINAL_GETATTR


async def test_the_pipeline_installs_it_by_its_option_and_takes_it_out_when_done():
    pipeline = Pipeline([])
    with taddons.context(pipeline) as tctx:
        manager = tctx.master.addons
        assert lean.installed(manager) == []  # until configured, as mitmproxy does once loaded
        tctx.configure(pipeline, lean_mitmproxy=True)
        assert lean.installed(manager) == ALL
        tctx.configure(pipeline, lean_mitmproxy=False)
        assert lean.installed(manager) == []
        tctx.configure(pipeline, lean_mitmproxy=True)
        await pipeline.done()
        assert lean.installed(manager) == []


# ------------------------------------------------------------- the message type check

GOOD = {"host": "example.com", "port": 443, "method": b"POST", "scheme": b"https", "authority": b"",
        "path": b"/v1/messages", "http_version": b"HTTP/1.1", "headers": http.Headers(a="1"), "content": b"{}",
        "trailers": None, "timestamp_start": 1.5, "timestamp_end": None}
CHANGES = [{}, {"content": None}, {"content": "text"}, {"trailers": http.Headers()}, {"trailers": {}},
           {"timestamp_start": 2}, {"timestamp_start": True}, {"timestamp_start": "now"}, {"timestamp_end": 3},
           {"timestamp_end": b"x"}, {"port": True}, {"port": 1.5}, {"host": b"bytes"}, {"headers": [(b"a", b"1")]},
           {"method": "POST", "port": "443"}]


def checked(make) -> str:
    try:
        make()
    except TypeError as e:
        return f"TypeError: {e}"
    return "ok"


MESSAGE = ("http_version", "headers", "content", "trailers", "timestamp_start", "timestamp_end")


@pytest.mark.parametrize("change", CHANGES, ids=[",".join(c) or "good" for c in CHANGES])
def test_messages_pass_and_fail_as_with_mitmproxys_check(change):
    values = {**GOOD, **change}
    response = {"status_code": values["port"], "reason": values["method"], **{k: values[k] for k in MESSAGE}}
    makers = (lambda: http.RequestData(**values), lambda: http.ResponseData(**response))
    mitmproxys = [checked(make) for make in makers]
    typecheck.apply()
    try:
        lean_ = [checked(make) for make in makers]
    finally:
        typecheck.remove()
    assert lean_ == mitmproxys
    assert (mitmproxys[0] == "ok") == (change in ({}, {"content": None}, {"trailers": http.Headers()},
                                                  {"timestamp_start": 2}, {"timestamp_start": True},
                                                  {"timestamp_end": 3}, {"port": True}))


# ------------------------------------------------------------- header lookups

FIELDS = [(), ((b"Host", b"example.com"),), ((b"Accept", b"text/html"), (b"accept", b"application/xml"),
                                             (b"X-Empty", b""), (b"Content-Length", b"12")),
          ((b"X-Caf\xc3\xa9", b"cr\xc3\xa8me"), (b"x-raw", b"\xff\xfe"), (b"SET-COOKIE", b"a=1"), (b"set-cookie", b"b=2"))]
NAMES = ["host", "Host", b"HOST", "accept", b"accept", "x-empty", "content-length", "missing", "", "x-caf\xe9",
         "X-CAF\xc3\xa9".encode().decode("utf-8", "surrogateescape"), b"x-caf\xc3\xa9", "x-raw", "set-cookie",
         "x_empty", None, 5, ["host"]]


class StrName(str):
    pass


def looked_up(h: http.Headers, name) -> list:
    """What each lookup of `name` gives (a value, or the exception it raises)."""
    out = []
    for lookup in (lambda: h.get(name), lambda: h.get(name, "default"), lambda: h[name], lambda: name in h,
                   lambda: h.get_all(name)):
        try:
            out.append(("ok", lookup()))
        except Exception as e:  # noqa: BLE001 (the same exception, whatever it is)
            out.append((type(e).__name__, str(e)))
    return out


class SubHeaders(http.Headers):
    @staticmethod
    def _reduce_values(values) -> str:
        return " | ".join(values)


@pytest.mark.parametrize("fields", FIELDS, ids=[str(len(f)) for f in FIELDS])
def test_header_lookups_give_what_mitmproxys_give(fields):
    made = [http.Headers(fields), SubHeaders(fields)]
    names = [*NAMES, StrName("host")]
    mitmproxys = [looked_up(h, name) for h in made for name in names]
    headers.apply()
    try:
        assert headers.applied()
        leaned = [looked_up(h, name) for h in made for name in names]
    finally:
        headers.remove()
    assert leaned == mitmproxys
    assert not headers.applied()


def test_header_lookups_follow_changes_to_the_headers():
    headers.apply()
    try:
        h = http.Headers(content_type="application/json")
        h["Content-Length"] = "5"
        h.add("accept", "a")
        h.add("Accept", "b")
        assert h.get("content-length") == "5" and h["accept"] == "a, b" and h.get_all("ACCEPT") == ["a", "b"]
        del h["accept"]
        assert "accept" not in h and h.get("accept", "none") == "none"
        with pytest.raises(KeyError):
            h["accept"]
        h.fields = ((b"Accept", b"c"),)  # the raw fields, set directly
        assert h.get("accept") == "c"
    finally:
        headers.remove()


# ------------------------------------------------------------- option reads

def option_reads(o: optmanager.OptManager) -> list:
    out = []
    for name in ("text", "number", "flag", "maybe", "names", "ratio", "absent"):
        try:
            out.append(("ok", getattr(o, name)))
        except AttributeError as e:
            out.append(("AttributeError", str(e)))
    out.append(("current", [o._options[n].current() for n in ("text", "names")]))
    return out


def test_option_reads_give_what_mitmproxys_give_and_never_the_stored_list():
    def made() -> optmanager.OptManager:
        o = optmanager.OptManager()
        o.add_option("text", str, "a", "")
        o.add_option("number", int, 3, "")
        o.add_option("flag", bool, False, "")
        o.add_option("maybe", typing.Optional[str], None, "")
        o.add_option("names", typing.Sequence[str], ["x"], "")
        o.add_option("ratio", float, 0.5, "")
        o.update(number=7, names=["y", "z"])
        return o

    mitmproxys = option_reads(made())
    options.apply()
    try:
        o = made()
        assert option_reads(o) == mitmproxys
        got = o.names
        got.append("changed by a caller")  # a copy: the option is not changed through it
        assert o.names == ["y", "z"] and o.names is not o.names
        o.text = "b"
        assert o.text == "b"
    finally:
        options.remove()
    assert not options.applied()
