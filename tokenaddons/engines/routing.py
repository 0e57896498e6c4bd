"""Where a request goes: aliases, routes and small-request rules turn the model
asked for into a chain of targets (provider and model), tried in order; and
the path and headers each target is sent. Pure: no mitmproxy, no I/O."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from tokenaddons.engines.credentials import header_for, without_credentials
from tokenaddons.engines.settings_file import PUBLIC_ENDPOINTS, ProviderSettings, RouteRule, Values


@dataclass(frozen=True)
class Target:
    provider: ProviderSettings
    model: str | None

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.model}"


@dataclass
class Chain:
    targets: list[Target]
    alias: str | None = None  # the alias that was asked for
    rule: RouteRule | None = None  # the route that made the chain
    small: bool = False  # a small-request rule sent it to the rule's `to`
    notes: list[str] = field(default_factory=list)

    @property
    def trivial(self) -> bool:
        """Nothing but the model asked for, at the client's own provider."""
        return self.alias is None and self.rule is None


def _target(values: Values, spec: str, own: str) -> Target | None:
    name, model = values.split_target(spec)
    provider = values.provider(name or own)
    return Target(provider, model) if provider is not None else None


def chain_for(values: Values, own: str, model: str | None, *, has_tools: bool,
              input_tokens: Callable[[], int], small_rules: bool = True) -> Chain:
    """The targets for a request of the client's own provider `own` asking for `model`.

    An alias replaces the model asked for; the first route whose `match` fits the
    name asked for (or the alias's model) and whose small-request conditions hold
    decides the chain: its `to` (else the model asked for), then its fallbacks.
    `small_rules=False`: the chain the request would get without small-request rules."""
    own_provider = values.provider(own)
    primary = Target(own_provider, model)
    chain = Chain([primary])
    if model is not None and model in values.aliases:
        aliased = _target(values, values.aliases[model], own)
        if aliased is not None:
            primary = aliased
            chain = Chain([primary], alias=model)
    names = [n for n in (model, primary.model) if n]
    for rule in values.routes:
        if not any(fnmatchcase(n, rule.match) for n in names) or (rule.conditional and not small_rules):
            continue
        if rule.no_tools and has_tools:
            continue
        if rule.max_input_tokens is not None and input_tokens() > rule.max_input_tokens:
            continue
        first = _target(values, rule.to, own) if rule.to else primary
        targets = [first] + [t for t in (_target(values, f, own) for f in rule.fallbacks) if t is not None]
        seen: set[str] = set()
        unique = [t for t in targets if not (t.label in seen or seen.add(t.label))]
        return Chain(unique, alias=chain.alias, rule=rule, small=rule.conditional)
    return chain


# ------------------------------------------------------------------ where and how a target is sent

CANONICAL = {"anthropic.messages": "/v1/messages", "anthropic.count_tokens": "/v1/messages/count_tokens",
             "openai.chat": "/v1/chat/completions", "openai.responses": "/v1/responses"}
_VERSION = re.compile(r"/v1(?:beta|alpha)?\d*(?=/)")  # the API version segment
_GEMINI_MODEL = re.compile(r"(/models/)([^/:?]+)(:)")


def api_path(path: str) -> str:
    """A client's path from its API version segment on (a prefix a client's base
    URL added, such as /openai, is not the provider's)."""
    m = _VERSION.search(path.split("?")[0])
    return path[m.start():] if m else path


def join(base_url: str, path: str) -> str:
    """base URL + API path, without doubling a version the base URL already ends with."""
    parts = urlsplit(base_url)
    base = parts.path.rstrip("/")
    tail = _VERSION.search(base + "/")
    if tail and tail.end() == len(base) and path.startswith(base[tail.start():] + "/"):
        path = path[len(base) - tail.start():]
    return base + path


def target_path(client_path: str, client_api: str, upstream_api: str, base_url: str,
                model: str | None = None, drop_query: Iterable[str] = ()) -> str:
    """The path (and query) a target is sent: the client's own when the API is the
    same (a Gemini model renamed in it), the API's canonical path when translated."""
    if client_api == upstream_api:
        path = api_path(client_path)
        if model and client_api == "gemini.generate":
            path = _GEMINI_MODEL.sub(lambda m: m.group(1) + model + m.group(3), path, count=1)
        path, _, query = path.partition("?")
        drop = set(drop_query)
        if query and drop:
            query = "&".join(p for p in query.split("&") if p.split("=", 1)[0] not in drop)
        return join(base_url, path) + (f"?{query}" if query else "")
    return join(base_url, CANONICAL[upstream_api])


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length", "host", "te",
              "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}
# Headers only one provider understands; dropped when a request is translated to another.
FAMILY_PREFIXES = {"anthropic": ("anthropic-",), "openai": ("openai-",), "gemini": ("x-goog-",)}
ANTHROPIC_VERSION = "2023-06-01"


def upstream_headers(headers: Iterable[tuple[str, str]], family: str, key: str | None,
                     translated: bool, drop: Iterable[str] = (), hop_by_hop: bool = True) -> list[tuple[str, str]]:
    """The client's headers as a target of `family` is sent them: hop-by-hop
    headers out (unless mitmproxy itself sends them on), the proxy's key (if it
    holds one) in place of any client credential, other providers' headers out
    of a translated request."""
    gone = (HOP_BY_HOP if hop_by_hop else set()) | {d.lower() for d in drop}
    out = [(k, v) for k, v in headers if k.lower() not in gone]
    if key is not None:  # the proxy's key replaces any credential the client sent ("": none at all)
        out = without_credentials(out) + ([header_for(family, key)] if key else [])
    if translated:
        foreign = tuple(p for f, prefixes in FAMILY_PREFIXES.items() if f != family for p in prefixes)
        out = [(k, v) for k, v in out if not k.lower().startswith(foreign)
               and k.lower() not in ("content-encoding", "content-type")]
        out.append(("content-type", "application/json"))
        if family == "anthropic" and not any(k.lower() == "anthropic-version" for k, _ in out):
            out.append(("anthropic-version", ANTHROPIC_VERSION))
    return out


def provider_hint(path: str, headers, query) -> str | None:
    """The provider an endpoint we do not parse (models lists, batches, files...)
    most likely belongs to, from the SDK's own headers."""
    if "anthropic-version" in headers or "x-api-key" in headers:
        return "anthropic"
    if "x-goog-api-key" in headers or "key" in query or path.startswith("/v1beta/"):
        return "gemini"
    if "authorization" in headers:
        return "openai"
    return None


def public_host(family: str) -> str:
    return urlsplit(PUBLIC_ENDPOINTS[family]).hostname or ""
