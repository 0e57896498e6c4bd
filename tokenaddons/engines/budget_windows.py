"""Budget arithmetic with no I/O: calendar windows, the scopes a request counts
against, model patterns, and a request's output cap."""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from functools import lru_cache
from zoneinfo import ZoneInfo

WINDOWS = ("hourly", "daily", "monthly")


def window_bounds(window: str, now: float, tz: ZoneInfo) -> tuple[float, float]:
    """Start and end (unix seconds) of the calendar window holding `now`.

    Every request asks for its windows (reserve, settle, alerts): they are
    worked out once per second of `now`. Within one second the answer cannot
    change (time zone transitions fall on whole seconds), unless `now` rounds
    up to the next second at microseconds, as `datetime` reads it."""
    second = math.floor(now)
    if now - second >= 0.9999995:
        return _window_bounds(window, now, tz)
    return _window_bounds_of_second(window, second, tz)


@lru_cache(maxsize=64)
def _window_bounds_of_second(window: str, second: int, tz: ZoneInfo) -> tuple[float, float]:
    return _window_bounds(window, second, tz)


def _window_bounds(window: str, now: float, tz: ZoneInfo) -> tuple[float, float]:
    t = datetime.fromtimestamp(now, tz)
    if window == "hourly":
        start = t.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif window == "daily":
        start = t.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    else:
        start = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def output_cap(body) -> int | None:
    """The request's own limit on output tokens, in any of the four wire
    formats: a positive integer; 0 when it sets one that is not (negative,
    zero, a fraction, a string: no limit the budget can trust); None when it
    sets none."""
    if not isinstance(body, dict):
        return None
    cfg = body.get("generationConfig") or body.get("generation_config")
    found = [body[key] for key in ("max_tokens", "max_completion_tokens", "max_output_tokens")
             if body.get(key) is not None]
    if isinstance(cfg, dict) and cfg.get("maxOutputTokens") is not None:
        found.append(cfg["maxOutputTokens"])
    if not found:
        return None
    value = found[0]
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def worst_output(cap: int | None, input_tokens: int, max_output: int | None, context_window: int | None,
                 default: int) -> int:
    """Output tokens a reservation counts: the request's cap, never more than
    the model can write; a cap that is not a positive integer counts as the
    most the model can write (its max_output_tokens, else what its context
    window leaves after the prompt), or `default` where that is not known, as
    does a request with no cap."""
    most = max_output or (max(0, context_window - input_tokens) if context_window else None)
    if cap:
        return min(cap, most) if most else cap
    if cap == 0 and most:
        return most
    return min(default, most) if most else default


# a served model is often the requested alias plus a snapshot date
DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


def model_matches(model: str | None, pattern: str) -> bool:
    """A model pattern matches the name or the name without its snapshot date, so
    `claude-sonnet-4-5` counts what was asked for by that name and what is billed
    as claude-sonnet-4-5-20250929, before and after a restart alike."""
    if not model:
        return False
    return fnmatchcase(model, pattern) or fnmatchcase(DATE_SUFFIX.sub("", model), pattern)


def scopes_of(project: str | None, provider: str | None, model: str | None, patterns) -> list[str]:
    """Every budget scope one request counts against."""
    out = ["global"]
    if project is not None:
        out.append(f"project:{project}")
    if provider:
        out.append(f"provider:{provider}")
    out.extend(f"model:{p}" for p in patterns if model_matches(model, p))
    return out
