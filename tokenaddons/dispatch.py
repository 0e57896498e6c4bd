"""The bundle as one addon in mitmproxy's chain.

mitmproxy offers every event to every addon of its chain, and that costs about
5 µs per addon and event even for an addon without the hook (a context
manager, a coroutine and two generators each time). A request brings about
ten events (connections, headers, bodies, logs), so eighteen addons in the
chain cost close to a millisecond per request doing nothing. Seen as one
addon, the bundle pays that once per event and calls only the parts that have
the hook, in the bundle's order, each failure kept to its part as mitmproxy's
own `safecall` does: the next part still runs.

Parts that only account for an exchange once it has been answered (the meter,
the settling, the capture, the heap's release: `after_send = True`) run after
the answer has left for the client: mitmproxy writes it to the client's socket
as soon as the response hooks return, and they run on the event loop's next
turn, before any event that arrives after it. The client does not wait for
them. An addon after the bundle that reads the summary in its own response
hook, or a flow file being written (`-w`: mitmproxy's save addon writes each
flow in its response hook), needs them done first: `account_after_send` off
(the latter turns it off by itself).

mitmproxy's own dispatch over the rest of its chain costs the same per addon:
the pipeline installs tokenaddons.lean (`lean_mitmproxy`, on by default),
which does that dispatch, and the type check of every message mitmproxy
makes, without their cost.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import mitmproxy.addonmanager  # noqa: F401  (these modules define the hooks: all_hooks lists them once imported)
import mitmproxy.log  # noqa: F401
import mitmproxy.proxy.layers  # noqa: F401
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import ctx, exceptions, hooks

from tokenaddons import lean

log = logging.getLogger(__name__)

# mitmproxy calls these from synchronous code (invoke_addon_sync): never a coroutine.
SYNC_ONLY = frozenset({"load", "configure"})
# the events whose `after_send` parts run once the answer has left
ANSWERED = frozenset({"response", "error"})


class Pipeline:
    name = "tokenaddons"

    def __init__(self, parts: list):
        self.parts = list(parts)  # not `addons`: mitmproxy would offer every event to each part itself
        self.deferring = True  # account_after_send (its default until configured), and no flow file written
        for event in hooks.all_hooks:
            found = [(part, fn) for part in self.parts if callable(fn := getattr(part, event, None))]
            later = [(part, fn) for part, fn in found if event in ANSWERED and getattr(part, "after_send", False)]
            if later:
                self._answered(event, [f for f in found if f not in later], later)
            elif found:
                setattr(self, event, _dispatcher(event, found))
        # the parts' own, called by the pipeline's (which adds its option)
        self._parts_load = self.__dict__.pop("load", None)
        self._parts_configure = self.__dict__.pop("configure", None)
        self._parts_done = self.__dict__.pop("done", None)

    def load(self, loader) -> None:
        loader.add_option("account_after_send", bool, True,
                          "Meter, settle and capture each exchange once its answer has left for the client "
                          "(it does not wait for them). Off: before, for an addon after the bundle that reads "
                          "flow.metadata['tokenaddons'] in its response hook; writing a flow file (-w) turns it "
                          "off by itself.")
        loader.add_option("lean_mitmproxy", bool, True,
                          "mitmproxy's event dispatch and message type checks without their overhead (the same "
                          "calls, order, values, checks and errors; about 1.6 ms less CPU per request). Off: "
                          "mitmproxy's own.")
        if self._parts_load is not None:
            self._parts_load(loader)

    def configure(self, updated) -> None:
        if self._parts_configure is not None:
            self._parts_configure(updated)
        # mitmproxy's save addon writes each flow in its response hook: the summary must be in it by then
        self.deferring = ctx.options.account_after_send and not getattr(ctx.options, "save_stream_file", None)
        if "lean_mitmproxy" in updated:
            if ctx.options.lean_mitmproxy:
                lean.install(ctx.master.addons, self)
            else:
                lean.uninstall(ctx.master.addons, self)

    async def done(self) -> None:
        lean.uninstall(ctx.master.addons, self)
        if self._parts_done is not None:
            res = self._parts_done()
            if res is not None and inspect.isawaitable(res):
                await res

    def _answered(self, event: str, now: list[tuple[Any, Callable]], later: list[tuple[Any, Callable]]) -> None:
        """`event`'s dispatch: the parts that shape the answer, then the `after_send` parts, deferred."""
        if any(inspect.iscoroutinefunction(fn) for _, fn in later):
            raise TypeError(f"{event}: after_send parts must be synchronous")
        first = _dispatcher(event, now) if now else None
        account = _dispatcher(event, later)

        def after(*args: Any) -> None:
            if self.deferring:
                try:
                    asyncio.get_running_loop().call_soon(account, *args)
                    return
                except RuntimeError:  # called outside an event loop (a synchronous trigger): now
                    pass
            account(*args)

        if first is not None and inspect.iscoroutinefunction(first):
            async def call_async(*args: Any) -> None:
                await first(*args)
                after(*args)
            setattr(self, event, call_async)
        else:
            def call(*args: Any) -> None:
                if first is not None:
                    first(*args)
                after(*args)
            setattr(self, event, call)

    def part(self, cls: type) -> Any:
        """The part of a class (tests and tools that need one addon of the bundle)."""
        return next(p for p in self.parts if isinstance(p, cls))


def _dispatcher(event: str, found: list[tuple[Any, Callable]]) -> Callable:
    if event in SYNC_ONLY or not any(inspect.iscoroutinefunction(fn) for _, fn in found):
        def call(*args: Any) -> None:
            for part, fn in found:
                try:
                    fn(*args)
                except (exceptions.AddonHalt, exceptions.OptionsError):
                    raise
                except Exception:
                    _failed(part, event)
        return call

    async def call_async(*args: Any) -> None:
        for part, fn in found:
            try:
                res = fn(*args)
                if res is not None and inspect.isawaitable(res):
                    await res
            except (exceptions.AddonHalt, exceptions.OptionsError):
                raise
            except Exception:
                _failed(part, event)
    return call_async


def _failed(part: Any, event: str) -> None:
    log.error("Addon error: tokenaddons %s.%s failed", type(part).__name__, event, exc_info=True)
