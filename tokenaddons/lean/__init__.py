"""mitmproxy's work on every request, without its overhead.

Bare mitmdump spends about 3.5 ms of CPU on a proxied request here, and a
large share of it on things that do not depend on the request:

- its event dispatch (lean/dispatch.py): each event offered to each of its 34
  addons through a context manager, a coroutine and two generators, about
  1.2 ms a request;
- the type check of each HTTP message it makes (lean/typecheck.py), which
  formats an error message for every field it checks, about 0.1 ms;
- some thirty header lookups (lean/headers.py), each through five calls and a
  KeyError when the header is absent, about 0.15 ms;
- some twenty option reads (lean/options.py), each deep-copying a string or a
  number, about 0.06 ms.

The bundle's own work costs more than the latency and throughput it may add
over bare mitmdump, and its Pipeline takes this much off mitmproxy's share by
installing the replacements here (`lean_mitmproxy`, on by default). Each does
exactly what the mitmproxy functions it stands for do (tests/unit/test_lean.py
runs both on the same input), and is installed only on the mitmproxy it was
written from (lean/mirror.py). benchmarks/bench_hotpath.py shows what they
take off bare mitmdump and what the bundle adds to that.
"""
from __future__ import annotations

import weakref

from mitmproxy import addonmanager

from tokenaddons.lean import dispatch, headers, options, typecheck

PARTS = (dispatch, typecheck, headers, options)
# what every manager of the process shares (classes, not a manager's methods)
SHARED = (typecheck, headers, options)

# manager -> the owners (ids) that want it lean: the last to leave takes the replacements out
_owners: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def install(manager: addonmanager.AddonManager, owner: object) -> list[str]:
    """Install each replacement this mitmproxy is the one for; their names."""
    _owners.setdefault(manager, set()).add(id(owner))
    done = []
    for part in PARTS:
        if not part.MIRROR.refusal:
            part.apply(manager)
            done.append(part.MIRROR.what)
    return done


def uninstall(manager: addonmanager.AddonManager, owner: object) -> None:
    """`owner` no longer wants it: mitmproxy's own again once no owner does
    (what every manager shares, once no manager's owner does)."""
    owners = _owners.get(manager)
    if owners is None:
        return
    owners.discard(id(owner))
    if not owners:
        del _owners[manager]
        dispatch.remove(manager)
        if not _owners:
            for part in SHARED:
                part.remove()


def installed(manager: addonmanager.AddonManager) -> list[str]:
    """The replacements in place for `manager`."""
    return [part.MIRROR.what for part in PARTS if part.applied(manager)]
