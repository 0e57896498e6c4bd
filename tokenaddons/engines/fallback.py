"""Fallback before the first byte: try a chain of targets with the proxy's own
HTTP client and hand back the first good answer, still streaming.

A target that answers 429, 529 or 500-504, or cannot be reached, is a failure:
the next one is tried, as long as nothing has been passed on yet. Circuit
breakers keep a target that keeps failing out of the way. What happened to
each target is reported to the caller (the route addon turns it into decision
rows and provider pauses). No mitmproxy here."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import httpx

from tokenaddons.engines.breaker import Breakers
from tokenaddons.engines.loopback import Reply
from tokenaddons.engines.retry_after import retry_after

log = logging.getLogger(__name__)

FALLBACK_STATUS = frozenset({429, 500, 501, 502, 503, 504, 529})
# What is not passed back from upstream: the loopback server frames the body itself.
DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}
MAX_ERROR_BODY = 1 << 20


class Skip(Exception):
    """This target cannot take the request (said why); the next one may."""


@dataclass
class Prepared:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Candidate:
    label: str  # "provider/model": the breaker's key and what decision rows name
    prepare: Callable[[], Prepared]  # may raise Skip


class Report(Protocol):
    def skipped(self, candidate: Candidate, reason: str) -> None: ...

    def failed(self, candidate: Candidate, status: int | None, error: str | None, retry_after: float | None,
               seconds: float) -> None: ...


def _headers(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in resp.headers.multi_items() if k.lower() not in DROP_RESPONSE]


async def first_answer(client: httpx.AsyncClient, candidates: Iterable[Candidate], breakers: Breakers,
                       report: Report) -> tuple[Candidate, Reply] | tuple[None, None]:
    """The first target that answers well, with its answer still streaming; or,
    if every one failed, the last failure's answer as it came; (None, None) if
    no target answered at all (all skipped or unreachable)."""
    last: tuple[Candidate, Reply] | tuple[None, None] = (None, None)
    for candidate in candidates:
        if not breakers.allow(candidate.label):
            report.skipped(candidate, f"circuit open (retry in {breakers.retry_in(candidate.label):.0f} s)")
            continue
        try:
            prepared = candidate.prepare()
        except Skip as e:
            report.skipped(candidate, str(e))
            continue
        started = time.monotonic()
        try:
            request = client.build_request(prepared.method, prepared.url, headers=prepared.headers,
                                           content=prepared.body)
            resp = await client.send(request, stream=True)
        except httpx.HTTPError as e:
            breakers.failure(candidate.label)
            report.failed(candidate, None, f"unreachable: {e.__class__.__name__}: {e}".rstrip(": "), None,
                          time.monotonic() - started)
            continue  # an earlier target's answer, if any, says more than "unreachable"
        if resp.status_code in FALLBACK_STATUS:
            body = b""
            try:  # as sent (still encoded): its headers go back with it
                async for chunk in resp.aiter_raw():
                    body += chunk
                    if len(body) > MAX_ERROR_BODY:
                        break
            except httpx.HTTPError:
                pass
            finally:
                await resp.aclose()
            breakers.failure(candidate.label)
            wait = retry_after(resp.headers, time.time())
            report.failed(candidate, resp.status_code, None, wait, time.monotonic() - started)
            last = (candidate, Reply(resp.status_code, _headers(resp), body=body[:MAX_ERROR_BODY]))
            continue
        breakers.success(candidate.label)
        return candidate, Reply(resp.status_code, _headers(resp), chunks=resp.aiter_raw(), close=resp.aclose)
    return last
