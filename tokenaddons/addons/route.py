"""Route: one port for every provider, aliases and routes, fallback the client
never notices, OpenAI <-> Anthropic translation, provider keys the client never holds.

After the cache (the key is the client's request) and before compression (which
works on the body actually sent), each request of a known API gets a chain of
targets from the settings file (`[providers]`, `[aliases]`, `[[routes]]`):
the model asked for at its own provider unless an alias or route says
otherwise, then any fallbacks. A target that speaks the other API gets the
request translated (a target that cannot take it, or whose key the client may
not use, is skipped with a decision row); the Exchange's `upstream_api` and
`chain` say what is sent, so budgets, rate limits and the meter price and parse
what is really sent.

A single target the client's own credential may reach is sent the flow itself
(mitmproxy connects to it). A chain with fallbacks, or a key held by the proxy,
goes through a loopback relay inside the proxy (engines/relay.py): it tries the
targets with the proxy's own HTTP client, in order, and streams back the first
good answer, so every stream tap still sees it and the client sees one normal
answer. An answer from another API is translated back into the client's, JSON
and stream alike.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from tokenaddons.addons.store import Store
from tokenaddons.engines import jsonio, keys, pricing
from tokenaddons.engines.breaker import Breakers
from tokenaddons.engines.credentials import presented
from tokenaddons.engines.fallback import FALLBACK_STATUS, Candidate, Prepared, first_answer
from tokenaddons.engines.loopback import Incoming, Reply
from tokenaddons.engines.relay import TOKEN_HEADER, Relay
from tokenaddons.engines.routing import (
    Chain,
    Target,
    api_path,
    chain_for,
    join,
    provider_hint,
    public_host,
    target_path,
    upstream_headers,
)
from tokenaddons.engines.settings_file import Published, Values
from tokenaddons.errors import refuse
from tokenaddons.exchange import METADATA_KEY, TRANSLATE, Exchange, handled
from tokenaddons.options import number
from tokenaddons.providers import translate
from tokenaddons.providers.base import Api
from tokenaddons.providers.sse import Event

log = logging.getLogger(__name__)

SERVED_HEADER = "x-tokenaddons-route"  # in the answer: the provider/model that served it


@dataclass
class Planned:
    """One target that can take the request, and how it is sent there."""

    target: Target
    api: Api | None  # the API it is spoken to (None: an endpoint we do not parse)
    body: Any = None  # the request for it (translated, or its model set); None: what the client sent
    key: str | None = None  # the proxy's key for it (never logged, never in a row)
    dropped: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.target.label


class RouteTap:
    """The TRANSLATE-stage tap: the served API's events into the client's, as they
    pass (the meter has read them as upstream sent them, at OBSERVE)."""

    def __init__(self, translator: translate.StreamTranslator | None, hide: Api | None = None):
        self.translator = translator
        self.hide = hide  # a usage event the client did not ask for (a fallback of the client's own API)

    def feed(self, events: list[Event]) -> list[Event]:
        if self.hide is not None:
            events = [e for e in events if not self.hide.hide_usage_event(e)]
        return self.translator.feed(events) if self.translator else events

    def end(self) -> list[Event]:
        return self.translator.end() if self.translator else []


class Attempts:
    """One relayed exchange's report: each target skipped or failed becomes a
    decision row; a provider's refusal with Retry-After feeds its pause."""

    def __init__(self, ex: Exchange, planned: list[Planned]):
        self.ex = ex
        self.by_label = {p.label: p for p in planned}
        self.tried = 0

    def skipped(self, candidate: Candidate, reason: str) -> None:
        self.ex.decide("route", "skipped", about=_about(self.by_label[candidate.label]), target=candidate.label,
                       reason=reason)

    def failed(self, candidate: Candidate, status: int | None, error: str | None, retry_after: float | None,
               seconds: float) -> None:
        self.tried += 1
        detail = {"target": candidate.label, "ms": round(seconds * 1000, 1)}
        detail.update({"status": status} if status else {"error": error})
        if retry_after is not None:
            detail["retry_after_s"] = retry_after
        self.ex.decide("route", "failed", about=_about(self.by_label[candidate.label]), **detail)
        if status:
            self.ex.upstream_refusals.append((self.by_label[candidate.label].target.provider.name, status,
                                              retry_after))
        log.warning("tokenaddons route: %s %s; trying the next target", candidate.label,
                    f"answered {status}" if status else error)


class Route:
    def __init__(self, settings: Published | None = None, store: Store | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings if settings is not None else Published()
        self.store = store
        self.breakers = Breakers(clock=clock)
        self.relay = Relay()
        self.client: httpx.AsyncClient | None = None
        self.keys: dict[str, str] = {}  # provider -> key held by the proxy
        self.key_errors: dict[str, str] = {}  # provider -> why its key could not be read
        self._keys_for = -1  # the settings generation the keys were read for
        self._warned_for: set[str] = set()
        # options, parsed in configure
        self.token = ""
        self.all_providers = False
        self.timeouts = httpx.Timeout(600.0, connect=5.0)

    def load(self, loader) -> None:
        loader.add_option("proxy_token", str, "",
                          "The token clients present (as their API key) when the proxy holds a provider's key "
                          "(settings file: key = \"keyring\" or \"env:VAR\"); any other credential is refused with "
                          "a 401. Empty: every client may use the held keys.")
        loader.add_option("route_all_providers", bool, False,
                          "Send each request to its provider's base URL (settings file [providers], else the public "
                          "endpoint), chosen by the API its path names: one port for every provider.")
        loader.add_option("route_breaker_failures", int, 5,
                          "Consecutive failures (429, 529, 500-504, unreachable) that open a target's circuit breaker.")
        loader.add_option("route_breaker_s", str, "30",
                          "Seconds an open breaker sends traffic straight to the fallbacks before one probe.")
        loader.add_option("route_connect_timeout_s", str, "5", "Seconds a relayed attempt waits to connect.")
        loader.add_option("route_read_timeout_s", str, "600",
                          "Seconds a relayed attempt waits for the next byte (a whole answer, when not streamed).")

    def configure(self, updated) -> None:
        o = ctx.options
        self.token = o.proxy_token
        self.all_providers = o.route_all_providers
        if o.route_breaker_failures < 1:
            raise exceptions.OptionsError("route_breaker_failures must be at least 1")
        self.breakers.failures = o.route_breaker_failures
        self.breakers.open_s = number("route_breaker_s")
        self.timeouts = httpx.Timeout(number("route_read_timeout_s"), connect=number("route_connect_timeout_s"))
        if updated & {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "route_connect_timeout_s",
                      "route_read_timeout_s"} and self.client is not None:
            self._close_client()
        if self._keys_for != self.settings.generation:
            errors = self._read_keys(self.settings.values)
            if errors:  # at start, or a new file: a key that cannot be read stops it here, clearly
                raise exceptions.OptionsError("; ".join(f"[providers.{p}] key: {e}" for p, e in errors.items()))
        if self.keys and not self.token and self._warned_for != set(self.keys):
            self._warned_for = set(self.keys)
            log.warning("tokenaddons route: the proxy holds keys for %s and proxy_token is empty: every client "
                        "that reaches this port spends them", ", ".join(sorted(self.keys)))

    def _read_keys(self, values: Values) -> dict[str, str]:
        """Read every held key; returns why each one that failed did."""
        found, errors = {}, {}
        for name, p in values.providers.items():
            if p.key:
                try:
                    found[name] = keys.read(name, p.key)
                except keys.KeyUnavailable as e:
                    errors[name] = str(e)
        self.keys, self.key_errors = found, errors
        self._keys_for = self.settings.generation
        return errors

    async def _sync(self) -> None:
        """After an edit of the settings file: the keys it names, read off the event loop."""
        if self._keys_for == self.settings.generation:
            return
        self._keys_for = self.settings.generation
        errors = await asyncio.to_thread(self._read_keys, self.settings.values)
        for name, why in errors.items():
            log.error("tokenaddons route: the key of %s cannot be read: %s", name, why)

    async def running(self) -> None:
        # httpx logs every request's URL at info level; the proxy logs what matters itself
        logging.getLogger("httpx").setLevel(logging.WARNING)
        await self.relay.start()

    async def done(self) -> None:
        self.relay.stop()
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def _close_client(self) -> None:
        client, self.client = self.client, None
        asyncio.get_running_loop().create_task(client.aclose())

    def _http(self) -> httpx.AsyncClient:
        if self.client is None:
            o = ctx.options
            verify: Any = True
            if o.ssl_insecure:
                verify = False
            elif o.ssl_verify_upstream_trusted_ca:
                verify = o.ssl_verify_upstream_trusted_ca
            # no default headers and no environment proxies: upstream sees the client's headers
            self.client = httpx.AsyncClient(timeout=self.timeouts, verify=verify, trust_env=False,
                                            follow_redirects=False,
                                            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
            self.client.headers.clear()
        return self.client

    # ------------------------------------------------------------------ request

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or handled(flow) or METADATA_KEY in flow.metadata:
            return  # (a saved flow read back: it was routed when it was recorded)
        await self._sync()
        values = self.settings.values
        if not ex.known:
            return self._other(flow, ex, values)
        client = ex.client_api
        own = client.provider
        if not self._addressed_to(flow, values, own):
            return
        body = ex.body if isinstance(ex.body, dict) else {}
        chain = chain_for(values, own, ex.model, has_tools=bool(body.get("tools")), input_tokens=ex.input_tokens)
        held_own = values.provider(own).key is not None
        if chain.trivial and not held_own and not self.all_providers and own not in values.providers:
            return  # nothing to route: the mode's own upstream, as without this addon
        token_ok = self._token_presented(flow)
        if self.token and held_own and not token_ok:
            return self._unauthorized(flow, ex, own)
        planned, reasons = self._plan(ex, chain, own, token_ok)
        if not planned:
            return self._nothing_fits(flow, ex, reasons)
        self._apply(flow, ex, chain, planned)

    def _addressed_to(self, flow: http.HTTPFlow, values: Values, family: str) -> bool:
        """In reverse mode every request is ours to route; as an explicit or
        transparent proxy only those addressed to a provider of the API's family."""
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return True
        hosts = {public_host(family)} | {urlsplit(p.base_url).hostname for p in values.providers.values()
                                         if p.api == family}
        return flow.request.host.lower() in hosts

    def _token_presented(self, flow: http.HTTPFlow) -> bool:
        if not self.token:
            return False
        token = self.token.encode()
        return any(hmac.compare_digest(c.encode(), token) for c in presented(flow.request.headers, flow.request.query))

    def _unauthorized(self, flow: http.HTTPFlow, ex: Exchange | None, provider: str) -> None:
        refuse(flow, "route", "authentication",
               f"this proxy holds the key for {provider}: present the proxy's token (proxy_token) as your API key",
               status=401)
        if ex is not None:
            ex.decide("route", "refused", reason="credential is not proxy_token")
        log.warning("tokenaddons route: refused %s: the credential presented is not proxy_token", flow.request.path)

    def _plan(self, ex: Exchange, chain: Chain, own: str, token_ok: bool) -> tuple[list[Planned], list[tuple]]:
        """The targets that can take this request, each with its body; the others
        skipped (a decision row each) with (kind, reason)."""
        client = ex.client_api
        planned: list[Planned] = []
        reasons: list[tuple[str, str, str]] = []
        for target in chain.targets:
            name = target.provider.name
            api = translate.upstream_api(client, target.provider.api)
            key = None
            if api is None:
                kind, why = "translate", f"{name} speaks the {target.provider.api} API, not {client.name}"
            elif target.provider.key:
                key = self.keys.get(name)
                if self.token and not token_ok:
                    kind, why = "auth", "the client did not present proxy_token"
                elif key is None:
                    kind, why = "key", f"its key cannot be read: {self.key_errors.get(name, 'not read yet')}"
                else:
                    kind = why = ""
            elif name != own:  # a client's credential is only ever sent to its own provider
                kind, why = "auth", f"the proxy holds no key for {name}"
            elif token_ok:
                kind, why = "auth", f"the proxy holds no key for {name}, and proxy_token is not one"
            else:
                kind = why = ""
            if not why:
                try:
                    body, dropped = self._body_for(ex, api, target.model)
                    planned.append(Planned(target, api, body, key, dropped))
                    continue
                except translate.Untranslatable as e:
                    kind, why = "translate", f"cannot be translated: {e}"
            reasons.append((kind, target.label, why))
            ex.decide("route", "skipped", about=(name, target.model or ""), target=target.label, reason=why)
        return planned, reasons

    @staticmethod
    def _body_for(ex: Exchange, api: Api, model: str | None) -> tuple[Any, list[str]]:
        """The request as `api` is sent it, for `model` (a new object; the client's is kept)."""
        out = translate.request(ex.client_api, api, ex.body)
        body = out.body
        if model and api.model(body, ex.path) != model and api.name != "gemini.generate":
            body = dict(body) if body is ex.body else body
            api.set_model(body, model)
        return body, out.dropped

    def _nothing_fits(self, flow: http.HTTPFlow, ex: Exchange, reasons: list[tuple[str, str, str]]) -> None:
        kind = reasons[0][0] if reasons else "translate"
        status, generic = {"auth": (401, "authentication"), "key": (503, "upstream")}.get(
            kind, (400, "invalid_request"))
        refuse(flow, "route", generic, "no target can take this request: " + "; ".join(
            f"{label}: {why}" for _, label, why in reasons), status=status)

    def _apply(self, flow: http.HTTPFlow, ex: Exchange, chain: Chain, planned: list[Planned]) -> None:
        first = planned[0]
        state: dict = {"chain": chain, "planned": planned, "client_body": ex.body,
                       "include_usage": _include_usage(ex.body)}
        ex.state["route"] = state
        ex.chain = [(p.target.provider.name, p.target.model or "") for p in planned]
        ex.upstream_provider = first.target.provider.name
        ex.upstream_api = first.api
        if first.target.model:
            ex.model = first.target.model
        if first.body is not ex.body:
            ex.body = first.body
            ex.mark_changed()
        if chain.alias:
            ex.decide("route", "alias", asked=chain.alias, to=chain.targets[0].label)
        if chain.small:
            body = state["client_body"] if isinstance(state["client_body"], dict) else {}
            instead = chain_for(self.settings.values, ex.client_api.provider, ex.requested_model,
                                has_tools=bool(body.get("tools")), input_tokens=lambda: 0, small_rules=False)
            state["instead_of"] = instead.targets[0]
            ex.decide("route", "rule", match=chain.rule.match, to=first.label, instead_of=instead.targets[0].label)
            ex.on_settle("route", self._settle)
        if len(planned) > 1 or first.key:  # a held key never enters the flow: the relay adds it
            ex.keeps_body = True  # each attempt is built from it (_prepare)
            state["token"] = self.relay.add(lambda incoming: self._attempts(ex, planned, incoming))
            req = flow.request
            req.scheme, req.host, req.port = "http", "127.0.0.1", self.relay.port
            req.headers[TOKEN_HEADER] = state["token"]
        else:
            self._direct(flow, ex, first)
            state["direct"] = first

    def _direct(self, flow: http.HTTPFlow, ex: Exchange | None, p: Planned) -> None:
        """Send the flow itself to a target (mitmproxy connects to it)."""
        req = flow.request
        base = urlsplit(p.target.provider.base_url)
        client_api = ex.client_api if ex is not None else None
        translated = p.api is not client_api
        if p.api is None:
            path = join(p.target.provider.base_url, api_path(req.path))
        else:
            path = target_path(req.path, client_api.name, p.api.name, p.target.provider.base_url, p.target.model)
        headers = upstream_headers(req.headers.items(multi=True), p.target.provider.api, p.key, translated,
                                   hop_by_hop=False)  # (p.key: None, or "" for a provider that wants none)
        req.headers = http.Headers([(k.encode(), v.encode()) for k, v in headers])
        req.scheme = base.scheme
        req.host = base.hostname
        req.port = base.port or (443 if base.scheme == "https" else 80)
        req.path = path
        req.host_header = base.netloc

    def _other(self, flow: http.HTTPFlow, ex: Exchange, values: Values) -> None:
        """An endpoint we do not parse (model lists, batches, files, WebSockets):
        sent to the provider its SDK's headers name, when that provider is routed."""
        req = flow.request
        name = provider_hint(req.path, req.headers, req.query)
        provider = values.provider(name) if name else None
        if provider is None or not (self.all_providers or name in values.providers):
            return
        if not isinstance(flow.client_conn.proxy_mode, ReverseMode) and not self._addressed_to(flow, values, name):
            return
        planned = Planned(Target(provider, None), None)
        if provider.key:
            if self.token and not self._token_presented(flow):
                return self._unauthorized(flow, ex, name)
            if "upgrade" in req.headers:
                return refuse(flow, "route", "invalid_request", f"a WebSocket to {name}, whose key the proxy holds, "
                              "cannot go through the relay; use HTTP requests", status=501)
            planned.key = self.keys.get(name)
            if planned.key is None:
                return refuse(flow, "route", "upstream", f"the key of {name} cannot be read: "
                              f"{self.key_errors.get(name, 'not read yet')}", status=503)
            ex.keeps_body = True  # the attempt is built from it (_prepare)
            ex.state["route"] = {"token": self.relay.add(lambda incoming: self._attempts(ex, [planned], incoming))}
            req.scheme, req.host, req.port = "http", "127.0.0.1", self.relay.port
            req.headers[TOKEN_HEADER] = ex.state["route"]["token"]
            return
        self._direct(flow, None, planned)

    # ------------------------------------------------------------------ the relayed attempts

    async def _attempts(self, ex: Exchange, planned: list[Planned], incoming: Incoming) -> Reply:
        """Run by the relay when the flow reaches it (after every request hook):
        the targets in order, the first good answer streamed back."""
        report = Attempts(ex, planned)
        primary = planned[0]
        candidates = [Candidate(p.label, (lambda p=p: self._prepare(ex, p, primary, incoming))) for p in planned]
        candidate, reply = await first_answer(self._http(), candidates, self.breakers, report)
        if reply is None:
            return self._unavailable(ex, planned, tried=report.tried)
        served = report.by_label[candidate.label]
        index = planned.index(served)
        ex.upstream_provider = served.target.provider.name
        if served.api is not None:
            ex.upstream_api = served.api
        if served.target.model:
            ex.model = served.target.model
        translated = ex.client_api is not None and served.api is not ex.client_api
        if reply.status not in FALLBACK_STATUS and (len(planned) > 1 or translated or "chain" in ex.state["route"]
                                                    and not ex.state["route"]["chain"].trivial):
            detail: dict = {"target": served.label, "status": reply.status}
            if translated:
                detail["translated"] = f"{ex.client_api.name} -> {served.api.name}"
                if served.dropped:
                    detail["dropped"] = served.dropped
            ex.decide("route", "served" if index == 0 else "fallback", about=_about(served), **detail)
            if index:
                log.info("tokenaddons route: %s served %s after %d failed", served.label, ex.path, index)
        reply.headers.append((SERVED_HEADER, served.label))
        return reply

    def _prepare(self, ex: Exchange, p: Planned, primary: Planned, incoming: Incoming) -> Prepared:
        """What one target is sent: the body the proxy passed on (compressed,
        serialized) when it is the primary's; else its own, prepared in the request phase."""
        base = urlsplit(p.target.provider.base_url)
        client_api = ex.client_api
        translated = client_api is not None and p.api is not client_api
        if p.api is None:  # an endpoint we do not parse: as the client sent it
            path = join(p.target.provider.base_url, api_path(incoming.target))
        else:
            path = target_path(incoming.target, client_api.name, p.api.name, p.target.provider.base_url,
                               p.target.model, drop_query=("key",) if p.key else ())
        drop = [TOKEN_HEADER]
        if p.api is None or (p is primary and not translated):
            body = incoming.body  # as the proxy passed it on (compressed, serialized), its encoding kept
        else:
            if p is primary:
                source = ex.body
            elif p.api is primary.api:  # the final body, with this target's model
                source = dict(ex.body)
                if p.target.model and p.api.name != "gemini.generate":
                    p.api.set_model(source, p.target.model)
            else:  # prepared from the client's (scrubbed) request in the request phase
                source = p.body
                if p.api is client_api and ex.stream and p.api.prepare_stream_usage(source):
                    ex.state["route"]["hide_usage"] = p.api  # asked for the meter: not for the client
            body = jsonio.dumps(source)
            drop.append("content-encoding")
        headers = upstream_headers(incoming.headers, p.target.provider.api, p.key, translated, drop=drop)
        return Prepared(incoming.method, f"{base.scheme}://{base.netloc}{path}", headers, body)

    def _unavailable(self, ex: Exchange, planned: list[Planned], tried: int) -> Reply:
        """No target answered: none reachable, or every breaker open."""
        waits = [self.breakers.retry_in(p.label) for p in planned]
        api = ex.client_api
        if not tried and all(w > 0 for w in waits):
            status, kind = 503, "overloaded"
            message = f"every target's circuit breaker is open; retry in {min(waits):.0f} s"
            extra = [("retry-after", str(max(1, int(min(waits) + 0.999))))]
        else:
            status, kind, extra = 502, "upstream", []
            message = "no target could be reached: " + ", ".join(p.label for p in planned)
        message = f"tokenaddons route: {message}"
        if api is not None:
            ex.upstream_api = api
            ex.upstream_provider = api.provider
            body = api.error_body(status, kind, message)
        else:
            body = json.dumps({"error": {"type": kind, "message": message, "code": status}}).encode()
        ex.error_type = kind
        return Reply(status, [("content-type", "application/json"), ("x-tokenaddons-route", kind)] + extra, body)

    # ------------------------------------------------------------------ the answer

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        state = ex.state.get("route") if ex is not None else None
        if not state or ex.client_api is None or flow.response is None or not callable(flow.response.stream):
            return
        hide = state.get("hide_usage")
        if ex.upstream_api is not ex.client_api:
            ex.add_tap(RouteTap(translate.stream(ex.upstream_api, ex.client_api, state["include_usage"])), TRANSLATE)
        elif hide is not None:
            ex.add_tap(RouteTap(None, hide), TRANSLATE)

    def response(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        state = ex.state.get("route") if ex is not None else None
        if not state:
            return
        self.relay.cancel(state.get("token"))
        resp = flow.response
        if resp is None or ex.answered_by:
            return
        if "direct" in state:
            self._direct_outcome(ex, state, status=resp.status_code)
        if ex.client_api is None or ex.upstream_api is ex.client_api or callable(resp.stream):
            return
        self._translate_whole(flow, ex, resp)

    def error(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        state = ex.state.get("route") if ex is not None else None
        if state:
            self.relay.cancel(state.get("token"))
            if "direct" in state and flow.response is None:
                self._direct_outcome(ex, state, error=str(flow.error))

    @staticmethod
    def _direct_outcome(ex: Exchange, state: dict, status: int | None = None, error: str | None = None) -> None:
        """The one attempt of a flow sent straight to its target, when route changed
        where it went (a plain one-port redirect says nothing)."""
        p: Planned = state["direct"]
        chain: Chain = state["chain"]
        if chain.trivial and p.api is ex.client_api:
            return
        detail: dict = {"target": p.label}
        if p.api is not ex.client_api:
            detail["translated"] = f"{ex.client_api.name} -> {p.api.name}"
            if p.dropped:
                detail["dropped"] = p.dropped
        if error is not None or status in FALLBACK_STATUS:
            ex.decide("route", "failed", about=_about(p), **detail,
                      **({"status": status} if error is None else {"error": error}))
        else:
            ex.decide("route", "served", about=_about(p), **detail, status=status)

    @staticmethod
    def _translate_whole(flow: http.HTTPFlow, ex: Exchange, resp: http.Response) -> None:
        """A whole answer (JSON or error) from another API, in the client's shape."""
        try:
            data = jsonio.loads(resp.get_content(strict=False) or b"null")
        except ValueError:
            data = None
        if resp.status_code >= 400 or not isinstance(data, dict):
            served = f"{ex.provider}/{ex.model}"
            out = translate.error(ex.client_api, resp.status_code if resp.status_code >= 400 else 502, data, served)
            if resp.status_code < 400:
                resp.status_code = 502
        else:
            out = jsonio.dumps(translate.response(ex.upstream_api, ex.client_api, data))
        resp.headers.pop("content-encoding", None)
        resp.headers["content-type"] = "application/json"
        resp.content = out

    def _settle(self, flow: http.HTTPFlow, ex: Exchange) -> None:
        """A small request sent to a cheaper model: what it saved, priced from the
        tokens it was billed at the model it would have gone to."""
        state = ex.state.get("route") or {}
        would: Target | None = state.get("instead_of")
        events = self.store.events if self.store is not None else None
        if would is None or events is None or ex.usage is None or ex.cost_usd is None or not ex.complete:
            return
        if not any(d.action == "served" for d in ex.decisions if d.addon == "route"):
            return  # a fallback served it, or nothing did
        full = pricing.price(would.provider.name, would.model or "", ex.usage)
        if full is None:
            return
        events.put_decision({
            "exchange_id": flow.id, "ts": flow.request.timestamp_start or time.time(), "addon": "route",
            "action": "saved", "detail": json.dumps({"instead_of": would.label, "served": f"{ex.provider}/{ex.model}"}),
            "tokens_saved": 0, "usd_saved": full - ex.cost_usd, "project": ex.project, "provider": ex.provider,
            "model": ex.served_model or ex.model})


def _about(p: Planned) -> tuple[str, str]:
    """The provider and model a decision row about one target is counted under."""
    return p.target.provider.name, p.target.model or ""


def _include_usage(body: Any) -> bool:
    opts = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(opts, dict) and bool(opts.get("include_usage"))

