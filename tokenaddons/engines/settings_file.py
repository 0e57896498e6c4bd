"""The settings file's contents, validated, and the copy in force that addons share.

No I/O and no mitmproxy here: `parse` takes a parsed TOML document and raises
ValueError naming the bad key; the Settings addon reads the file and publishes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

PRICE_KEYS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_1h_mtok",
              "max_output_tokens")
BUDGET_SCOPES = ("provider", "model", "project")
BUDGET_KEYS = ("hourly_usd", "daily_usd", "monthly_usd")
PROVIDER_KEYS = ("base_url", "key", "api")
ROUTE_KEYS = ("match", "fallbacks", "to", "max_input_tokens", "no_tools")

# The wire-format families a provider can speak, and where each is served publicly.
PUBLIC_ENDPOINTS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ProviderSettings:
    """Where one provider is reached and whose key it gets.

    `api` is the wire-format family it speaks (anthropic, openai, gemini), so an
    OpenAI-compatible service can be named (`[providers.groq]` with `api = "openai"`).
    `key`: "keyring" (the OS keychain), "env:VAR", "none" (a local server that wants
    no key: nothing is sent), or None (the client's own credential).
    """

    name: str
    api: str
    base_url: str
    key: str | None = None


@dataclass(frozen=True)
class RouteRule:
    """One `[[routes]]` entry: for a model asked for that matches `match` (a shell
    pattern), send to `to` (when the request meets the small-request conditions,
    if any) and then, if that fails before the first byte, to each fallback."""

    match: str
    to: str | None = None  # "provider/model"
    fallbacks: tuple[str, ...] = ()
    max_input_tokens: int | None = None  # the rule applies only to requests this small
    no_tools: bool = False  # ... and only to requests that offer no tools

    @property
    def conditional(self) -> bool:
        return self.max_input_tokens is not None or self.no_tools


@dataclass
class Values:
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    # scope kind ("provider" | "model" | "project") -> name or pattern -> window -> USD
    budgets: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    providers: dict[str, ProviderSettings] = field(default_factory=dict)  # only those the file names
    aliases: dict[str, str] = field(default_factory=dict)  # name -> "provider/model" or "model"
    routes: list[RouteRule] = field(default_factory=list)

    def provider(self, name: str) -> ProviderSettings | None:
        """A provider by name: as the file sets it, else a public one at its public endpoint."""
        found = self.providers.get(name)
        if found is None and name in PUBLIC_ENDPOINTS:
            found = ProviderSettings(name, name, PUBLIC_ENDPOINTS[name])
        return found

    def split_target(self, target: str) -> tuple[str | None, str]:
        """"provider/model" -> (provider, model); a name whose first part names no
        provider is a model alone (None: the provider of the client's API)."""
        head, sep, rest = target.partition("/")
        if sep and rest and self.provider(head) is not None:
            return head, rest
        return None, target


def _amount(where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def _count(where: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where} must be a positive whole number, not {value!r}")
    return value


def _table(where: str, value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a table")
    return value


def _text(where: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a non-empty string, not {value!r}")
    return value.strip()


def _unknown(where: str, found, allowed) -> None:
    extra = sorted(set(found) - set(allowed))
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(extra)} (expected {', '.join(allowed)})")


def _provider(name: str, table: dict) -> ProviderSettings:
    where = f"[providers.{name}]"
    _unknown(where, _table(where, table), PROVIDER_KEYS)
    api = _text(f"{where} api", table["api"]) if "api" in table else name
    if api not in PUBLIC_ENDPOINTS:
        known = ", ".join(PUBLIC_ENDPOINTS)
        if "api" in table:
            raise ValueError(f"{where} api must be one of {known}, not {api!r}")
        raise ValueError(f"{where}: api is required for a provider not named {known} "
                         f"(the wire format it speaks, e.g. api = \"openai\")")
    if "base_url" in table:
        base_url = _text(f"{where} base_url", table["base_url"]).rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{where} base_url must be an http(s) URL such as https://api.example.com, "
                             f"not {table['base_url']!r}")
    elif name in PUBLIC_ENDPOINTS:
        base_url = PUBLIC_ENDPOINTS[name]
    else:
        raise ValueError(f"{where}: base_url is required for a provider without a public endpoint")
    key = None
    if "key" in table:
        key = _text(f"{where} key", table["key"])
        env = key.removeprefix("env:")
        if key not in ("keyring", "none") and not (key.startswith("env:") and _ENV_NAME.fullmatch(env)):
            raise ValueError(f"{where} key must be \"keyring\", \"env:VARIABLE\" or \"none\", not "
                             f"{table['key']!r} (leave it out to pass the client's own credential)")
    return ProviderSettings(name, api, base_url, key)


def _target(values: Values, where: str, value, bare: bool = False) -> str:
    """A "provider/model" naming a known provider (`bare`: a model alone is allowed too)."""
    text = _text(where, value)
    provider, model = values.split_target(text)
    if provider is None and (not bare or "/" in text):
        known = ", ".join(sorted(set(PUBLIC_ENDPOINTS) | set(values.providers)))
        raise ValueError(f"{where}: {text!r} must be \"provider/model\" with a known provider ({known})")
    if not model.strip():
        raise ValueError(f"{where}: {text!r} names no model")
    return text


def _route(values: Values, i: int, table) -> RouteRule:
    where = f"[[routes]] #{i + 1}"
    _unknown(where, _table(where, table), ROUTE_KEYS)
    if "match" not in table:
        raise ValueError(f"{where}: match is required (a pattern of the model asked for, e.g. \"claude-sonnet-*\")")
    match = _text(f"{where} match", table["match"])
    fallbacks = table.get("fallbacks", [])
    if not isinstance(fallbacks, list):
        raise ValueError(f"{where} fallbacks must be a list of \"provider/model\"")
    limit = table.get("max_input_tokens")
    if limit is not None:
        limit = _count(f"{where} max_input_tokens", limit)
    no_tools = table.get("no_tools", False)
    if not isinstance(no_tools, bool):
        raise ValueError(f"{where} no_tools must be true or false, not {no_tools!r}")
    rule = RouteRule(
        match=match,
        to=_target(values, f"{where} to", table["to"]) if "to" in table else None,
        fallbacks=tuple(_target(values, f"{where} fallbacks[{j}]", t) for j, t in enumerate(fallbacks)),
        max_input_tokens=limit,
        no_tools=no_tools,
    )
    if rule.conditional and rule.to is None:
        raise ValueError(f"{where}: max_input_tokens and no_tools choose when to send to `to`; to is required")
    if rule.to is None and not rule.fallbacks:
        raise ValueError(f"{where}: nothing to do; give `to` (\"provider/model\") or `fallbacks`")
    return rule


def parse(doc: dict) -> Values:
    """Validated settings from a parsed TOML document; ValueError names the bad key."""
    _unknown("settings", doc, ("prices", "budget", "providers", "aliases", "routes"))
    out = Values()
    for model, table in _table("[prices]", doc.get("prices", {})).items():
        where = f"[prices.{model!r}]"
        _unknown(where, _table(where, table), PRICE_KEYS)
        for needed in ("input_mtok", "output_mtok"):
            if needed not in table:
                raise ValueError(f"{where}: {needed} is required")
        out.prices[model] = {k: _count(f"{where} {k}", v) if k == "max_output_tokens" else _amount(f"{where} {k}", v)
                             for k, v in table.items()}
    budget = _table("[budget]", doc.get("budget", {}))
    _unknown("[budget]", budget, BUDGET_SCOPES)
    for kind in BUDGET_SCOPES:
        for name, table in _table(f"[budget.{kind}]", budget.get(kind, {})).items():
            where = f"[budget.{kind}.{name!r}]"
            _unknown(where, _table(where, table), BUDGET_KEYS)
            caps = {k.removesuffix("_usd"): _amount(f"{where} {k}", v) for k, v in table.items()}
            out.budgets.setdefault(kind, {})[name] = caps
    for name, table in _table("[providers]", doc.get("providers", {})).items():
        if "/" in name or not name.strip():
            raise ValueError(f"[providers.{name!r}]: a provider's name cannot contain '/'")
        out.providers[name] = _provider(name, table)
    for name, target in _table("[aliases]", doc.get("aliases", {})).items():
        out.aliases[name] = _target(out, f"[aliases] {name}", target, bare=True)
    routes = doc.get("routes", [])
    if not isinstance(routes, list):
        raise ValueError("routes must be an array of tables ([[routes]])")
    out.routes = [_route(out, i, table) for i, table in enumerate(routes)]
    return out


class Published:
    """The settings in force. The bundle hands one instance to the Settings
    addon, which publishes each load, and to every addon that reads them;
    `generation` changes with every load, so readers know to re-sync."""

    def __init__(self) -> None:
        self.values = Values()
        self.generation = 0

    def publish(self, values: Values) -> None:
        self.values = values
        self.generation += 1
