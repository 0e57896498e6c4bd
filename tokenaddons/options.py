"""Decimal options. mitmproxy's `--set` parses only str, int and bool options, so
amounts like dollars or seconds are declared as strings and read through here."""
from __future__ import annotations

from mitmproxy import ctx, exceptions


def number(name: str) -> float:
    """The option's value as a non-negative float, or a clear OptionsError."""
    raw = getattr(ctx.options, name)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise exceptions.OptionsError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise exceptions.OptionsError(f"{name} must not be negative, not {raw!r}")
    return value


def check(*names: str) -> None:
    """Validate decimal options when they change (call from an addon's configure)."""
    for name in names:
        number(name)
