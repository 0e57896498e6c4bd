"""The bundle as one addon in mitmproxy's chain.

mitmproxy offers every event to every addon of its chain, and that costs about
5 µs per addon and event even for an addon without the hook (a context
manager, a coroutine and two generators each time). A request brings about
ten events (connections, headers, bodies, logs), so eighteen addons in the
chain cost close to a millisecond per request doing nothing. Seen as one
addon, the bundle pays that once per event and calls only the parts that have
the hook, in the bundle's order, each failure kept to its part as mitmproxy's
own `safecall` does: the next part still runs.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import mitmproxy.addonmanager  # noqa: F401  (these modules define the hooks: all_hooks lists them once imported)
import mitmproxy.log  # noqa: F401
import mitmproxy.proxy.layers  # noqa: F401
import mitmproxy.proxy.server_hooks  # noqa: F401
from mitmproxy import exceptions, hooks

log = logging.getLogger(__name__)

# mitmproxy calls these from synchronous code (invoke_addon_sync): never a coroutine.
SYNC_ONLY = frozenset({"load", "configure"})


class Pipeline:
    name = "tokenaddons"

    def __init__(self, parts: list):
        self.parts = list(parts)  # not `addons`: mitmproxy would offer every event to each part itself
        for event in hooks.all_hooks:
            found = [(part, fn) for part in self.parts if callable(fn := getattr(part, event, None))]
            if found:
                setattr(self, event, _dispatcher(event, found))

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
