"""The cache's identity of a request: a canonical hash of everything that can
change the answer, and nothing that cannot."""
from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable

from tokenaddons.engines import jsonio

# Request headers that change the answer; everything else (user agent, retries...) does not.
VARY = ("anthropic-version", "anthropic-beta", "openai-beta", "openai-organization", "openai-project")
# Query parameters that do not: Gemini's ?key= (the caller identity covers it) and ?alt=.
IGNORED_QUERY = ("key", "alt")


# Fields that never change the answer: Anthropic's per-session user id, the stream flag.
def canonical_body(body) -> bytes:
    if isinstance(body, dict):
        body = dict(body)
        body.pop("stream", None)
        meta = body.get("metadata")
        if isinstance(meta, dict) and "user_id" in meta:
            body["metadata"] = {k: v for k, v in meta.items() if k != "user_id"} or None
            if body["metadata"] is None:
                del body["metadata"]
    return jsonio.dumps(body, sort_keys=True)


def body_digest(body) -> bytes:
    """The body's identity, canonically serialized (sorted keys, volatile fields left out)."""
    return hashlib.sha256(canonical_body(body)).digest()


def raw_body_digest(raw: bytes, body, whole: Callable[[], bytes] | None = None) -> bytes | None:
    """The body's identity from the client's own bytes, which is much cheaper than
    serializing a long agent history again: a hash of the bytes, with Anthropic's
    per-session `metadata.user_id` value blanked where it appears. None when that
    value is not found as written (an escaped form): `body_digest` decides then.
    Bytes are exact: the same request with its keys in another order is a miss.
    `whole()`, if given, is SHA-256 of `raw` already computed."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    user = meta.get("user_id") if isinstance(meta, dict) else None
    if user is not None:
        for needle in (json.dumps(user, ensure_ascii=False).encode(), json.dumps(user).encode()):
            if needle in raw:
                raw = raw.replace(needle, b'""')
                break
        else:
            return None
        whole = None
    # sha256: the CPU's own instructions make it the fastest of hashlib's here
    return b"raw:" + (whole() if whole is not None else hashlib.sha256(raw).digest())


def cache_key(provider: str, path: str, query: Iterable[tuple[str, str]], caller: str | None,
              headers: Iterable[tuple[str, str | None]], body_hash: bytes) -> str:
    """Provider, path, caller identity, answer-changing headers and the normalized
    body (its `body_digest`)."""
    return hashlib.sha256(_head(provider, path, tuple(query), caller, tuple(headers)) + body_hash).hexdigest()


@functools.lru_cache(maxsize=4096)
def _head(provider: str, path: str, query: tuple[tuple[str, str], ...], caller: str | None,
          headers: tuple[tuple[str, str | None], ...]) -> bytes:
    """What the key hashes before the body: the same few values on every request
    of a client, written once (the same bytes as ever: stored keys stay found)."""
    return json.dumps([provider, path, sorted((k, v) for k, v in query if k not in IGNORED_QUERY), caller,
                       [list(h) for h in headers]]).encode()
