"""Where a client's credential sits in a request, for every provider's SDK."""
from __future__ import annotations

import hashlib

AUTH_HEADERS = ("x-api-key", "authorization", "x-goog-api-key", "api-key")
QUERY_KEY = "key"  # Gemini's ?key=


def redacted(value: str) -> str:
    """What a saved copy keeps of a credential: a digest that still tells callers
    apart (so a replay keys caches and placeholders per caller), never the key.
    An auth scheme ("Bearer ") is kept."""
    scheme, sep, secret = value.partition(" ")
    if not sep:
        scheme, secret = "", value
    digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{scheme}{sep}redacted-{digest}"
