"""Budget arithmetic with no I/O: calendar windows, the scopes a request counts
against, model patterns, and a request's output cap."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

WINDOWS = ("hourly", "daily", "monthly")


def window_bounds(window: str, now: float, tz: ZoneInfo) -> tuple[float, float]:
    """Start and end (unix seconds) of the calendar window holding `now`."""
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
    """The request's own limit on output tokens, in any of the four wire formats."""
    if not isinstance(body, dict):
        return None
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    cfg = body.get("generationConfig") or body.get("generation_config") or {}
    value = cfg.get("maxOutputTokens") if isinstance(cfg, dict) else None
    return value if isinstance(value, int) else None


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
