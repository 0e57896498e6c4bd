"""mitmproxy's header lookups, without their cost.

mitmproxy reads a request's and an answer's headers some thirty times as it
proxies them (the body's size, keep-alive, encodings, the Host), and the
bundle's parts a few more. Each `headers.get(name)` goes through
`Mapping.get`, `MultiDict.__getitem__`, `Headers.get_all`, `MultiDict.get_all`
and a `_kconv` call for every header present, and raises a KeyError when the
header is absent: about 5 µs, some 0.15 ms a request.

These do the same, for `Headers` itself (a subclass keeps mitmproxy's, as
does a name that is neither str nor bytes): the name encoded as mitmproxy
encodes it (UTF-8, surrogateescape) and lowered once, each header's name
lowered and compared in one comprehension, the values decoded as mitmproxy
decodes them and folded with ", ", an absent header the default (or
KeyError, or False) without raising one inside.
"""
from __future__ import annotations

from typing import Any

from mitmproxy import http
from mitmproxy.coretypes import multidict
from mitmproxy.utils import strutils

from tokenaddons.lean.mirror import Mirror

Headers = http.Headers
MIRROR = Mirror("header lookups", (
    http.Headers.get_all, http.Headers._reduce_values, http.Headers._kconv, http._native, http._always_bytes,
    strutils.always_bytes, multidict._MultiDict.__getitem__, multidict._MultiDict.get_all,
    http.Headers.get, http.Headers.__contains__), "9e74810d5cfcadc5a526c9c12bce023b22c1806732ac817f7926119045e7a0d9")
# mitmproxy's own, for what the fast path leaves to them
ORIGINAL = {name: Headers.__dict__.get(name) for name in ("get_all", "__getitem__", "get", "__contains__")}
_get_all = Headers.get_all
_getitem = multidict._MultiDict.__getitem__
_get = Headers.get  # (Mapping's)
_contains = Headers.__contains__


def get_all(self: http.Headers, name: str | bytes) -> list[str]:
    """Headers.get_all, as mitmproxy's does it."""
    kind = type(name)
    if type(self) is not Headers or (kind is not str and kind is not bytes):
        return _get_all(self, name)
    key = (name.encode("utf-8", "surrogateescape") if kind is str else name).lower()
    return [value.decode("utf-8", "surrogateescape") for k, value in self.fields if k.lower() == key]


def getitem(self: http.Headers, key: str | bytes) -> str:
    """Headers[key] (MultiDict.__getitem__), as mitmproxy's does it."""
    if type(self) is not Headers:
        return _getitem(self, key)
    values = get_all(self, key)
    if not values:
        raise KeyError(key)
    return ", ".join(values)


def get(self: http.Headers, key: str | bytes, default: Any = None) -> Any:
    """Headers.get (Mapping.get), as mitmproxy's does it."""
    if type(self) is not Headers:
        return _get(self, key, default)
    values = get_all(self, key)
    return ", ".join(values) if values else default


def contains(self: http.Headers, key: Any) -> bool:
    """`key in headers` (Mapping.__contains__), as mitmproxy's does it."""
    if type(self) is not Headers:
        return _contains(self, key)
    return bool(get_all(self, key))


REPLACEMENTS = {"get_all": get_all, "__getitem__": getitem, "get": get, "__contains__": contains}


def apply(manager: Any = None) -> None:
    for name, fn in REPLACEMENTS.items():
        setattr(Headers, name, fn)


def remove(manager: Any = None) -> None:
    for name, original in ORIGINAL.items():
        if original is not None:
            setattr(Headers, name, original)
        elif name in Headers.__dict__:  # inherited: mitmproxy's own is found again once ours is gone
            delattr(Headers, name)


def applied(manager: Any = None) -> bool:
    return Headers.__dict__.get("get_all") is get_all
