"""Where a client's credential sits in a request, for every provider's SDK."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

AUTH_HEADERS = ("x-api-key", "authorization", "x-goog-api-key", "api-key")
QUERY_KEY = "key"  # Gemini's ?key=


def _all(values: Mapping[str, str], name: str) -> list[str]:
    """Every value of a name (mitmproxy's headers and query may repeat one)."""
    get_all = getattr(values, "get_all", None)
    if get_all is not None:
        return list(get_all(name))
    return [values[name]] if name in values else []


def presented(headers: Mapping[str, str], query: Mapping[str, str]) -> list[str]:
    """Every credential the request carries (a bearer token without its "Bearer ")."""
    out = []
    for name in AUTH_HEADERS:
        for value in _all(headers, name):
            if value:
                out.append(value[7:].strip() if value[:7].lower() == "bearer " else value.strip())
    out += [v for v in _all(query, QUERY_KEY) if v]
    return out


def without_credentials(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in AUTH_HEADERS]


def header_for(family: str, key: str) -> tuple[str, str]:
    """How a provider of `family` is handed its key."""
    if family == "anthropic":
        return "x-api-key", key
    if family == "gemini":
        return "x-goog-api-key", key
    return "authorization", f"Bearer {key}"
