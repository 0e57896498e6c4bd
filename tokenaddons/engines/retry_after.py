"""How long a provider asked to be left alone, from its answer's headers."""
from __future__ import annotations

from email.utils import parsedate_to_datetime


def retry_after(headers, now: float) -> float | None:
    """Seconds the provider asked to wait: `retry-after-ms` (OpenAI), or
    `retry-after` in seconds or as an HTTP date; None when it did not say."""
    try:
        if ms := headers.get("retry-after-ms"):
            return float(ms) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            return parsedate_to_datetime(value).timestamp() - now
    except (ValueError, TypeError, OverflowError):
        return None
