"""mitmproxy's type check of every HTTP message it makes, without its cost.

Each request and response mitmproxy builds checks its dozen fields' types
(`MessageData.__post_init__`, while Python runs without -O) through
`typecheck.check_option_type`, which formats its error message before it
knows whether there is an error and resolves each field's type annotation
again every time: about 60 µs a request and 47 µs a response, some 5 % of
what bare mitmdump spends on a request.

`post_init` here makes the same check from what each message class's
annotations say, resolved once per class: the same types accepted (an `int`
where a `float` is expected, `None` where the annotation allows it), the
first wrong field in the same order raising the same TypeError. A field whose
annotation is anything but a class or a union of classes is checked by
mitmproxy's own function.
"""
from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any

from mitmproxy import http
from mitmproxy.utils import typecheck

from tokenaddons.lean.mirror import Mirror

ORIGINAL = http.MessageData.__dict__.get("__post_init__")  # absent under python -O: nothing to check
MIRROR = Mirror("message type check", (ORIGINAL, typecheck.check_option_type) if ORIGINAL else (),
                "1c1e5e4297f5bb5a780f81a42f774e4f3f262e77358708f0486543f01bcdf920")
# class -> (field name, the classes accepted or None, the annotation) of each field, in order
_plans: dict[type, tuple[tuple[str, tuple[type, ...] | None, Any], ...]] = {}


def _accepted(annotation: Any) -> tuple[type, ...] | None:
    """The classes `check_option_type` accepts for `annotation`, None if it is not that simple."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found: list[type] = []
        for arg in typing.get_args(annotation):
            one = _accepted(arg)
            if one is None:
                return None
            found += one
        return tuple(found)
    if annotation is typing.Any or not isinstance(annotation, type) or typing.get_origin(annotation) is not None:
        return None
    if annotation in (typing.TextIO, typing.BinaryIO):
        return None
    return (annotation, int) if annotation is float else (annotation,)


def _plan(cls: type) -> tuple:
    plan = _plans.get(cls)
    if plan is None:
        plan = _plans[cls] = tuple((f.name, _accepted(f.type), f.type) for f in fields(cls))
    return plan


def post_init(self: http.MessageData) -> None:
    """MessageData.__post_init__, as mitmproxy's checks it."""
    for name, accepted, annotation in _plans.get(type(self)) or _plan(type(self)):
        value = getattr(self, name)
        if accepted is None:
            typecheck.check_option_type(name, value, annotation)
        elif not isinstance(value, accepted):
            raise TypeError(f"Expected {annotation} for {name}, but got {type(value)}.")


def apply(manager: Any = None) -> None:
    if ORIGINAL is not None:
        http.MessageData.__post_init__ = post_init  # type: ignore[attr-defined]


def remove(manager: Any = None) -> None:
    if ORIGINAL is not None:
        http.MessageData.__post_init__ = ORIGINAL  # type: ignore[attr-defined]


def applied(manager: Any = None) -> bool:
    return http.MessageData.__dict__.get("__post_init__") is post_init
