"""mitmproxy's option reads, without their cost.

mitmproxy reads its options while it proxies a request (body size limits, the
Host header, header validation, and its addons: anticache, anticomp,
onboarding, the dumper's detail...), some twenty reads a request, and each
`options.name` deep-copies the value it returns (`_Option.current`): about
3 µs each, so that no caller can change an option through a list it was
given.

These return the same values: a value of a type `copy.deepcopy` gives back
as it is (a string, number, bool, bytes or None) without the call, anything
else (a list, a dict) deep-copied as before.
"""
from __future__ import annotations

import copy
from typing import Any

from mitmproxy import optmanager

from tokenaddons.lean.mirror import Mirror

MIRROR = Mirror("option reads", (optmanager._Option.current, optmanager._Option.default.fget,
                                 optmanager.OptManager.__getattr__),
                "5a81a51905742269c18122bbcfff18482810d57e9d6d5e6b3b7424327428dc88")
ORIGINAL_CURRENT = optmanager._Option.current
ORIGINAL_GETATTR = optmanager.OptManager.__getattr__
_Option = optmanager._Option
unset = optmanager.unset
# what deepcopy returns as it is (checked against this Python's copy module)
AS_IS = frozenset(t for t in (str, int, float, bool, bytes, type(None))
                  if copy._deepcopy_dispatch.get(t) is copy._deepcopy_atomic)  # type: ignore[attr-defined]


def current(self: optmanager._Option) -> Any:
    """_Option.current, as mitmproxy's returns it."""
    v = self._default if self.value is unset else self.value
    return v if type(v) in AS_IS else copy.deepcopy(v)


def getattr_(self: optmanager.OptManager, attr: str) -> Any:
    """OptManager.__getattr__ (`options.name`), as mitmproxy's returns it."""
    options = self._options
    if attr in options:
        option = options[attr]
        if type(option) is not _Option:
            return option.current()
        v = option._default if option.value is unset else option.value
        return v if type(v) in AS_IS else copy.deepcopy(v)
    raise AttributeError("No such option: %s" % attr)


def apply(manager: Any = None) -> None:
    _Option.current = current
    optmanager.OptManager.__getattr__ = getattr_


def remove(manager: Any = None) -> None:
    _Option.current = ORIGINAL_CURRENT
    optmanager.OptManager.__getattr__ = ORIGINAL_GETATTR


def applied(manager: Any = None) -> bool:
    return _Option.__dict__.get("current") is current
