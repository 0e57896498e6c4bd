"""The cache's identity of a request: a canonical hash of everything that can
change the answer, and nothing that cannot."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

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
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(provider: str, path: str, query: Iterable[tuple[str, str]], caller: str | None,
              headers: Iterable[tuple[str, str | None]], body) -> str:
    """Provider, path, caller identity, answer-changing headers and the normalized body."""
    h = hashlib.sha256()
    h.update(json.dumps([provider, path, sorted((k, v) for k, v in query if k not in IGNORED_QUERY), caller,
                         list(headers)]).encode())
    h.update(canonical_body(body))
    return h.hexdigest()
