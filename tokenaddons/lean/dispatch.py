"""mitmproxy's event dispatch, without its cost per addon.

mitmproxy offers each event to every addon of its chain (34 in mitmdump), and
for each one it enters a context manager (`safecall`), creates and awaits a
coroutine (`invoke_addon`) and runs two generators (`_iter_hooks`,
`traverse`), whether or not the addon has the hook: about 4 µs per addon,
150 µs per event. A proxied request brings eight events on a kept-alive
connection (each flow hook and the `update` after it): about 1.2 ms of the
3.4 ms of CPU bare mitmdump spends on a request (benchmarks/bench_hotpath.py
prints both dispatches side by side).

`trigger_event` and `trigger` (the synchronous dispatch: log records, option
changes) here do what mitmproxy's do: the same addons in the same order with
the same arguments, each failure logged by mitmproxy's logger with mitmproxy's
message and kept to its addon (with its children), `AddonHalt` ending the
event, `OptionsError` passed on. An addon without children costs one attribute
lookup. The children of one (mitmproxy's script loader holds the scripts, and
this bundle among them) are walked as mitmproxy's `traverse` walks them: read
once the parent's hook has run, a list that grows meanwhile walked to its end.

Installed by tokenaddons.lean (see there) on mitmproxy's addon manager, as
methods of that instance.
"""
from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks

from tokenaddons.lean.mirror import Mirror

MIRROR = Mirror("event dispatch", (
    addonmanager.AddonManager.trigger_event, addonmanager.AddonManager.invoke_addon,
    addonmanager.AddonManager.trigger, addonmanager.AddonManager.invoke_addon_sync,
    addonmanager.AddonManager._iter_hooks, addonmanager.safecall, addonmanager.traverse,
    addonmanager.cut_traceback, hooks.Hook.args), "a324402f2a541e562c4420333ff86647e0e51d8f8a88e9f1a3b05d09ee422f65")

async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """AddonManager.trigger_event, as mitmproxy's does it."""
    name = event.name
    args = None
    for top in self.chain:
        try:
            if not (hasattr(top, "addons") or getattr(top, name, None)):
                continue  # most addons: no children, no such hook
            for _, func in _offered(top, name):
                if args is None:
                    args = event.args()
                res = func(*args)
                if res is not None and inspect.isawaitable(res):
                    await res
        except Exception as e:
            if _ends_event(e):
                return


def trigger(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """AddonManager.trigger (synchronous: mitmproxy's log events, options), as mitmproxy's does it."""
    name = event.name
    args = None
    for top in self.chain:
        try:
            if not (hasattr(top, "addons") or getattr(top, name, None)):
                continue
            for addon, func in _offered(top, name):
                args = _call_sync(addon, func, name, event, args)
        except Exception as e:
            if _ends_event(e):
                return


def _offered(top: Any, name: str) -> Iterable[tuple[Any, Callable]]:
    """(addon, hook) of an addon of the chain and of its children, in order."""
    if hasattr(top, "addons"):
        return _walk((top,), name)
    func = getattr(top, name, None)
    if not func:
        return ()
    return _own_then_given(top, func, name)


def _own_then_given(top: Any, func: Any, name: str) -> Iterator[tuple[Any, Callable]]:
    """An addon without children's hook, then the children that hook gave it, if any."""
    func = func if callable(func) else _hook(top, name)
    if func is not None:
        yield top, func
    if hasattr(top, "addons"):
        yield from _walk(top.addons, name)


def _call_sync(addon: Any, func: Callable, name: str, event: hooks.Hook, args: list | None) -> list:
    """Call a hook from synchronous code (as `invoke_addon_sync`); the event's arguments, for the next one."""
    if inspect.iscoroutinefunction(func):
        raise exceptions.AddonManagerError(f"Async handler {name} ({addon}) cannot be called from sync context")
    if args is None:
        args = event.args()
    func(*args)
    return args


_END = object()


def _hook(addon: Any, name: str) -> Callable | None:
    """`addon`'s hook for the event `name`, as mitmproxy's `_iter_hooks` finds it."""
    func = getattr(addon, name, None)
    if not func:
        return None
    if callable(func):
        return func
    if isinstance(func, types.ModuleType):  # a module imported under a hook's name (`log`)
        return None
    raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")


def _walk(addons: Iterable, name: str) -> Iterator[tuple[Any, Callable]]:
    """(addon, hook) of `addons` and of their children, depth first, as
    mitmproxy's `_iter_hooks` over `traverse` yields them: an addon's children
    are read once its own hook has run, and a list that grows meanwhile is
    walked to its end."""
    stack = [iter(addons)]
    while stack:
        addon = next(stack[-1], _END)
        if addon is _END:
            stack.pop()
            continue
        func = _hook(addon, name)
        if func is not None:
            yield addon, func
        if hasattr(addon, "addons"):
            stack.append(iter(addon.addons))


def _ends_event(e: Exception) -> bool:
    """What mitmproxy's `safecall` makes of a hook's exception (called only
    when one was raised: no cost per addon): AddonHalt ends the event (True),
    OptionsError is raised on, anything else is logged (`_failed`) and the
    next addon is offered the event."""
    if isinstance(e, exceptions.AddonHalt):
        return True
    if isinstance(e, exceptions.OptionsError):
        raise
    _failed()
    return False


def _failed() -> None:
    """An addon's failure, logged as mitmproxy's `safecall` logs it: the traceback from the hook on."""
    etype, value, tb = sys.exc_info()
    for frame in ("_own_then_given", "_walk", "trigger_event", "trigger", "_call_sync"):
        tb = addonmanager.cut_traceback(tb, frame)
    addonmanager.logger.error(f"Addon error: {value}", exc_info=(etype, value, tb))


def apply(manager: addonmanager.AddonManager) -> None:
    manager.trigger_event = types.MethodType(trigger_event, manager)  # type: ignore[method-assign]
    manager.trigger = types.MethodType(trigger, manager)  # type: ignore[method-assign]


def remove(manager: addonmanager.AddonManager) -> None:
    manager.__dict__.pop("trigger_event", None)
    manager.__dict__.pop("trigger", None)


def applied(manager: addonmanager.AddonManager) -> bool:
    found = manager.__dict__.get("trigger_event")
    return isinstance(found, types.MethodType) and found.__func__ is trigger_event
