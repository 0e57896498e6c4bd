"""The Exchange's way in: `Intake` (first after the store) recognizes the API,
parses the JSON body once, reads the project tag and starts the stream pump.

A body on a known API path that cannot be read (not UTF-8, not JSON or JSON
with trailing bytes, nested deeper than MAX_DEPTH, over `intake_max_body`, or
streamed unread) is left untouched, and the exchange says why
(`Exchange.unreadable`): it keeps its API for metering and error shapes, and
scrub refuses it (it could hold anything) unless `scrub_fail_open`."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from mitmproxy import ctx, http

from tokenaddons import providers
from tokenaddons.engines import jsonio, tokens
from tokenaddons.engines.credentials import AUTH_HEADERS, QUERY_KEY
from tokenaddons.engines.history import History, write_turns
from tokenaddons.engines.memo import SEEN_BODIES, Memo
from tokenaddons.exchange import OBSERVE, Exchange, passed_through
from tokenaddons.headers import Names
from tokenaddons.providers.base import model_name
from tokenaddons.providers.sse import is_sse
from tokenaddons.stream import CopyTap, StreamPump, stream_decoder

log = logging.getLogger(__name__)

PROJECT_HEADER = "x-tokenaddons-project"
# Deeper JSON than any request schema needs; the addons' walkers recurse, and
# Python's stack (the standard library's parser and writer too) stops near 1000.
# orjson's writer refuses values nested deeper than this itself.
MAX_DEPTH = 254
# Bodies up to this size are checked by writing them with orjson (a few times
# faster than walking an agent's history in Python, and never slower than
# about parsing them again); larger ones, mostly long strings, by a walk whose
# cost does not grow with the strings.
WRITE_CHECK_MAX = 128 * 1024


def too_deep(value: Any, limit: int = MAX_DEPTH, size: int = 0) -> bool:
    """Is a parsed JSON value nested deeper than `limit`? `size`: its bytes, if
    known (see WRITE_CHECK_MAX)."""
    if limit == MAX_DEPTH and size <= WRITE_CHECK_MAX:
        try:
            orjson.dumps(value)
            return False
        except orjson.JSONEncodeError as e:
            if "ecursion" in str(e):
                return True
            # a value orjson does not write (an integer past 64 bits, a lone surrogate): walked
    return _walk_too_deep(value, limit)


def _walk_too_deep(value: Any, limit: int) -> bool:
    """too_deep, level by level, no recursion; only containers are kept and the
    type tests are exact (JSON gives dicts and lists, never subclasses)."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list = []
        add = below.append
        for v in level:
            for child in (v.values() if type(v) is dict else v):
                t = type(child)
                if t is dict or t is list:
                    add(child)
        level = below
        depth += 1
    return False


def _too_deep_with_turns(body: dict, api: providers.Api, size: int) -> tuple[bool, tuple[bytes, ...] | None]:
    """too_deep(body), and the turns as History writes them when that check
    wrote them: each turn written as nested as it is in the body (its two
    lists around it: orjson refuses it where it would refuse the body), then
    the rest of the body. The turns are then written once a request, not once
    here and once more to find the request they continue."""
    turns = api.turns(body) if size <= WRITE_CHECK_MAX else None
    if turns is None:
        return too_deep(body, size=size), None
    try:
        written = write_turns(turns)
    except orjson.JSONEncodeError as e:
        if "ecursion" in str(e):
            return True, None
        return too_deep(body, size=size), None  # a value orjson does not write: walked
    return too_deep({k: v for k, v in body.items() if k != api.turns_key}, size=size), written


READ = Names(PROJECT_HEADER, "user-agent", *AUTH_HEADERS)


def auth_identity(flow: http.HTTPFlow, headers: dict[str, list[str]] | None = None) -> str | None:
    """A short hash naming every credential the request carries (none is
    kept): a gateway key with a per-user token behind it, or a Gemini header
    key with a different ?key=, are different callers. `headers`: READ's
    reading of the request's headers, if the caller has it."""
    req = flow.request
    headers = READ.read(req.headers) if headers is None else headers
    found = [(name, value) for name in AUTH_HEADERS for value in headers.get(name, ()) if value]
    if "?" in req.path:
        found += [(QUERY_KEY, value) for value in req.query.get_all(QUERY_KEY) if value]
    if not found:
        return None
    # one credential hashes as it always has, so caches and pseudonyms made before stay the caller's
    text = "{}:{}".format(*found[0]).encode() if len(found) == 1 else jsonio.dumps(found)
    return hashlib.sha256(text).hexdigest()[:16]


class Intake:
    def __init__(self) -> None:
        self.max_body = 64 * 1024 * 1024
        # (model, stream) of bodies read before, by their bytes' digest and path:
        # a request sent again (a retry, a cache hit) is not parsed to learn them
        self.facts: Memo[tuple[str | None, bool]] = Memo(size=SEEN_BODIES)
        # the turns of recent requests: which one a new request continues (Exchange.continued)
        self.history = History()
        self._warm = False

    def load(self, loader) -> None:
        loader.add_option("intake_max_body", int, self.max_body,
                          "Request bodies larger than this many bytes are not read: on a known API path they are "
                          "refused (they cannot be scanned) unless scrub_fail_open.")

    def configure(self, updated) -> None:
        self.max_body = ctx.options.intake_max_body
        if not self._warm:  # as the proxy starts, before it listens (rate limits, budgets, hints count tokens)
            self._warm = True
            try:
                tokens.warm()
            except (tokens.EncodingUnavailable, OSError) as e:
                log.warning("tokenaddons: %s; token counts will fail until it can", e)

    def running(self) -> None:
        # mitmproxy's default "eager" strategy connects upstream when a client
        # connects, before any request exists: an unreachable provider would then
        # drop clients unmetered, and no addon could answer or reroute in time.
        if ctx.options.connection_strategy == "eager":
            ctx.options.connection_strategy = "lazy"
            log.info("tokenaddons: connection_strategy set to lazy (connect upstream per request)")

    def request(self, flow: http.HTTPFlow) -> None:
        if Exchange.of(flow) is not None or passed_through(flow):
            return
        req = flow.request
        api = providers.detect(req.method, req.path)
        body = unreadable = source = digest = facts = turns_json = None
        if api is not None:
            source, digest, unreadable = self._read(req)
        if digest is not None:
            seen = digest + req.path.encode()  # the model and stream flag can come from the path too
            facts = self.facts.peek(seen)
            if facts is None:
                body, unreadable, turns_json = self._parse(source, api)
                if body is None:
                    source = digest = None
        if body is None and unreadable is None and facts is None:
            api = None  # no body: passes through byte for byte, metered as other
        ex = Exchange(client_api=api, path=req.path, body=body, unreadable=unreadable, source=source,
                      _source_digest=digest, history=self.history, turns_json=turns_json)
        headers = READ.read(req.headers)
        if PROJECT_HEADER in headers:  # ours: never sent upstream
            ex.project = headers[PROJECT_HEADER][0]
            del req.headers[PROJECT_HEADER]
        ex.client = headers.get("user-agent", [None])[0]
        ex.auth_hash = auth_identity(flow, headers)
        if facts is not None:  # these bytes parsed before: parsed again only if an addon reads them
            ex.parse_on_use()
            ex.requested_model, ex.stream = facts
            ex.model = ex.requested_model
        elif api is not None:
            ex.requested_model = ex.model = model_name(api.model(body, req.path))
            ex.stream = api.is_stream(body, req.path)
            if body is not None:
                self.facts.remember(seen, (ex.model, ex.stream))
        if api is not None and ex.stream:  # the taps read the events as they pass: ask for them uncompressed
            req.headers["accept-encoding"] = "identity"
        if unreadable is not None:
            log.info("tokenaddons: %s %s: the body %s", req.method, req.path, unreadable)
        ex.attach(flow)

    def _read(self, req: http.Request) -> tuple[bytes | None, bytes | None, str | None]:
        """The body's bytes (decoded) and their SHA-256, or why they cannot be read."""
        if req.stream:
            return None, None, "is streamed (stream_large_bodies), not read"
        raw = req.raw_content
        if not raw:
            return None, None, None
        if len(raw) > self.max_body:
            return None, None, f"is {len(raw)} bytes, over intake_max_body ({self.max_body})"
        try:
            content = req.get_content(strict=True)
        except ValueError:
            encoding = req.headers.get("content-encoding")
            return None, None, f"is compressed in an encoding that cannot be decoded ({encoding})"
        if len(content) > self.max_body:
            return None, None, f"is {len(content)} bytes decoded, over intake_max_body ({self.max_body})"
        # the cache key and the memos of bodies found clean (guard, scrub) take the same digest
        return content, hashlib.sha256(content).digest(), None

    @staticmethod
    def _parse(content: bytes, api: providers.Api) -> tuple[dict | None, str | None, tuple[bytes, ...] | None]:
        """The body as a JSON object, or why it cannot be read; and its turns
        as History writes them, when writing them checked their depth."""
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as e:
            return None, f"is not UTF-8 (byte {e.start})", None
        try:
            body = jsonio.loads(text)
        except RecursionError:
            return None, "is nested too deep to parse", None
        except ValueError as e:
            msg = getattr(e, "msg", str(e))
            what = "has bytes after its JSON" if msg == "Extra data" else f"is not JSON ({msg})"
            return None, f"{what} at character {e.pos}" if hasattr(e, "pos") else what, None
        if not isinstance(body, dict):
            return None, "is not a JSON object", None
        deep, turns_json = _too_deep_with_turns(body, api, len(content))
        if deep:
            return None, f"is nested deeper than {MAX_DEPTH} levels", None
        return body, None, turns_json

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or flow.response is None or flow.response.raw_content is not None:
            return  # an answer made here already has its whole body: nothing to stream
        sse = is_sse(flow.response.headers.get("content-type"))
        if not sse and not (ex.stream and flow.response.status_code == 200):
            return  # a whole answer: mitmproxy reads it, the addons see it in `response`
        headers = flow.response.headers
        try:
            decode = stream_decoder(headers.get("content-encoding"))
        except ValueError as e:
            log.warning("tokenaddons: %s stream: %s; passing it through unread", flow.request.path, e)
            flow.response.stream = True
            return
        if decode is not None:  # the client gets it decoded
            del headers["content-encoding"]
            if headers.pop("content-length", None) is not None and flow.response.http_version == "HTTP/1.1":
                headers["transfer-encoding"] = "chunked"
        # a copy of what upstream sent (bounded): the meter reads a stream that is
        # not SSE from it (Gemini without alt=sse: one JSON array, an element at a
        # time), and it becomes the flow's body, so a saved flow replays metered
        ex.add_tap(CopyTap(ex, self.max_body), OBSERVE)
        flow.response.stream = StreamPump(ex, decode, sse)

    def response(self, flow: http.HTTPFlow) -> None:
        # Keep what upstream sent, before any addon rewrites it for the client
        # (scrub restores real values): stored bodies must be the scrubbed ones.
        ex = Exchange.of(flow)
        if ex is not None and flow.response is not None and flow.response.stream:
            if flow.response.raw_content is None and ex.upstream_body is not None:
                flow.response.content = ex.upstream_body  # already sent: this is what a saved flow keeps
        elif ex is not None and flow.response is not None:
            # decoded: providers compress JSON answers (gzip, br, zstd) for SDKs that accept it
            try:
                ex.upstream_body = flow.response.get_content(strict=True)
            except ValueError:
                log.info("tokenaddons: %s: answer in an encoding we cannot read; kept as sent",
                         flow.request.path)
                ex.upstream_body = flow.response.raw_content


