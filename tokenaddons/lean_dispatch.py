"""mitmproxy's event dispatch, without its cost per addon.

mitmproxy offers each event to every addon of its chain (34 in mitmdump), and
for each one it enters a context manager (`safecall`), creates and awaits a
coroutine (`invoke_addon`) and runs two generators (`_iter_hooks`,
`traverse`), whether or not the addon has the hook: about 4 µs per addon,
150 µs per event. A proxied request brings eight events on a kept-alive
connection (each flow hook and the `update` after it): about 1.2 ms of the
3.4 ms of CPU bare mitmdump spends on a request (benchmarks/bench_hotpath.py
prints both dispatches side by side).

`trigger_event` here does what mitmproxy's does: the same addons in the same
order with the same arguments, each failure logged by mitmproxy's logger with
mitmproxy's message and kept to its addon, `AddonHalt` ending the event,
`OptionsError` passed on. An addon without children costs it one attribute
lookup. An addon with children (mitmproxy's script loader, which holds the
scripts and this bundle among them) goes through mitmproxy's own path, whose
walk reads the children only after the parent's hook has run.

It replaces mitmproxy's only where mitmproxy's is the one it was written
from: the source of every function it stands for is checked against the
digest of mitmproxy 11.0.2's. Any other version keeps its own (logged once).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import sys
import types
import weakref

from mitmproxy import addonmanager, exceptions, hooks

log = logging.getLogger(__name__)

# What the replacement stands for, and the SHA-256 of their source in the
# mitmproxy it mirrors (11.0.2): a change in any of them is a change it does not know.
MIRRORED = (addonmanager.AddonManager.trigger_event, addonmanager.AddonManager.invoke_addon,
            addonmanager.AddonManager._iter_hooks, addonmanager.safecall, addonmanager.traverse,
            addonmanager.cut_traceback, hooks.Hook.args)
MIRRORED_DIGEST = "dc513ef84b90c49d76d01f796c781c7fcb0b3940a588dbfbc8bd75c1a3d34076"

# manager -> the owners (ids) that installed it: the last to leave takes it out
_owners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def source_digest() -> str | None:
    """The SHA-256 of the mirrored functions' source, None without their source."""
    h = hashlib.sha256()
    try:
        for fn in MIRRORED:
            h.update(inspect.getsource(fn).encode())
    except (OSError, TypeError):
        return None
    return h.hexdigest()


@functools.cache
def refusal() -> str:
    """Why the installed mitmproxy keeps its own dispatch ("" if it is the one mirrored)."""
    found = source_digest()
    if found == MIRRORED_DIGEST:
        return ""
    log.info("tokenaddons: mitmproxy's event dispatch is not the one lean_dispatch mirrors "
             "(source digest %s): mitmproxy keeps its own", found)
    return f"source digest {found}"


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """AddonManager.trigger_event, as mitmproxy's does it."""
    name = event.name
    args = None
    for addon in self.chain:
        if hasattr(addon, "addons"):  # children: mitmproxy's walk, which reads them after the parent's hook
            try:
                with addonmanager.safecall():
                    await self.invoke_addon(addon, event)
            except exceptions.AddonHalt:
                return
            continue
        func = getattr(addon, name, None)
        if not func:
            continue
        try:
            if not callable(func):
                if isinstance(func, types.ModuleType):  # a module imported under a hook's name (`log`)
                    continue
                raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")
            if args is None:
                args = event.args()
            res = func(*args)
            if res is not None and inspect.isawaitable(res):
                await res
        except exceptions.AddonHalt:
            return
        except exceptions.OptionsError:
            raise
        except Exception:  # as safecall logs it: the traceback from the hook on
            etype, value, tb = sys.exc_info()
            addonmanager.logger.error(f"Addon error: {value}",
                                      exc_info=(etype, value, addonmanager.cut_traceback(tb, "trigger_event")))


def install(manager: addonmanager.AddonManager, owner: object) -> bool:
    """Dispatch `manager`'s events here (if mitmproxy's is the one mirrored);
    True if it is."""
    if refusal():
        return False
    _owners.setdefault(manager, set()).add(id(owner))
    manager.trigger_event = types.MethodType(trigger_event, manager)  # type: ignore[method-assign]
    return True


def uninstall(manager: addonmanager.AddonManager, owner: object) -> None:
    """`owner` no longer wants it: mitmproxy's own again once no owner does."""
    owners = _owners.get(manager)
    if owners is None:
        return
    owners.discard(id(owner))
    if not owners:
        del _owners[manager]
        manager.__dict__.pop("trigger_event", None)


def installed(manager: addonmanager.AddonManager) -> bool:
    found = manager.__dict__.get("trigger_event")
    return isinstance(found, types.MethodType) and found.__func__ is trigger_event
