"""Only provider traffic is decrypted when tokenaddons runs system-wide.

In regular, transparent, local, WireGuard, TUN and SOCKS modes every connection
on the machine can reach mitmproxy. This addon sets mitmproxy's `allow_hosts`
to the provider hosts the bundle knows (the public Anthropic, OpenAI and Gemini
endpoints, every `base_url` host of the settings file's `[providers]`, the
targets of any reverse modes running alongside, and the hosts named by
`intercept_hosts`), so every other connection is tunneled untouched:
the client sees the real server's certificate (pinned apps, package managers
and browsers keep working), nothing of it is decrypted and no row is written.

`allow_hosts` or `ignore_hosts` set by the user win: this addon then leaves
both alone. `intercept_all_hosts` restores mitmproxy's decrypt-everything default.

mitmproxy applies `allow_hosts` to connections (CONNECT, TLS, transparent
redirects); a plain-HTTP request sent to the explicit proxy is an HTTP flow
whatever its host, so the same rule is applied to it here: one to a host not
intercepted is passed on as it is, and no addon looks at it.
"""
from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy import mode_specs

from tokenaddons.engines.settings_file import PUBLIC_ENDPOINTS, Published
from tokenaddons.exchange import pass_through

log = logging.getLogger(__name__)

# Modes where a connection's destination is whatever the client wanted: the
# ones to restrict. Reverse and DNS modes have fixed targets.
FIXED_TARGET_MODES = (mode_specs.ReverseMode, mode_specs.DnsMode)
WATCHED = {"mode", "intercept_hosts", "intercept_all_hosts", "allow_hosts", "ignore_hosts"}
_HOST = re.compile(r"[A-Za-z0-9*._-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")


def host_pattern(spec: str) -> str:
    """A regular expression for mitmproxy's `allow_hosts` (matched against
    "host:port" strings: the destination, the TLS SNI, the Host header) from
    `host`, `host:port` or `*.domain`. ValueError for anything else."""
    spec = spec.strip().lower()
    host, port = spec, None
    if spec.startswith("["):  # [v6]:port
        host, _, rest = spec[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    if not host or not _HOST.fullmatch(host) or (port is not None and not port.isdigit()):
        raise ValueError(f"not a host, host:port or *.domain: {spec!r}")
    if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
        raise ValueError(f"a wildcard may only start a name (*.example.com): {spec!r}")
    name = r"(?:[^:]+\.)?" + re.escape(host[2:]) if host.startswith("*.") else re.escape(host)
    return rf"^{name}:{port if port else r'[0-9]+'}$"


def host_spec(host: str, port: int | None = None) -> str:
    """`host` or `host:port`, an IPv6 address in brackets."""
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def url_host(url: str) -> str:
    """The host of a base URL, with its port when the URL names one."""
    parts = urlsplit(url)
    return host_spec(parts.hostname or "", parts.port)


class Intercept:
    def __init__(self, published: Published | None = None) -> None:
        self.published = published if published is not None else Published()
        self.generation = -1  # of the settings the list was made from
        self.applied: list[str] | None = None  # what this addon last set allow_hosts to
        self.by_hand = False  # allow_hosts or ignore_hosts set by the user: left alone
        self.allow: list[re.Pattern] = []  # allow_hosts and ignore_hosts in force, compiled
        self.ignore: list[re.Pattern] = []

    def load(self, loader) -> None:
        loader.add_option("intercept_hosts", str, "",
                          "In regular and transparent modes, decrypt these hosts as well as the providers' "
                          "(comma-separated: host, host:port, *.domain); every other connection is tunneled "
                          "untouched.")
        loader.add_option("intercept_all_hosts", bool, False,
                          "Decrypt every HTTPS connection in regular and transparent modes, not only "
                          "the providers' (mitmproxy's default).")

    def configure(self, updated) -> None:
        if updated & WATCHED or self.published.generation != self.generation:  # (a settings file loaded)
            self._restrict()
        if updated & {"allow_hosts", "ignore_hosts"}:
            self.allow = [re.compile(p, re.IGNORECASE) for p in ctx.options.allow_hosts]
            self.ignore = [re.compile(p, re.IGNORECASE) for p in ctx.options.ignore_hosts]

    def client_connected(self, client) -> None:
        """The settings file changed (the Settings addon, before this one, looked):
        its providers' hosts join or leave the list before this connection is sorted."""
        if self.published.generation != self.generation:
            self._restrict()

    def _restrict(self) -> None:
        self.generation = self.published.generation
        try:
            extra = [host_pattern(h) for h in ctx.options.intercept_hosts.split(",") if h.strip()]
        except ValueError as e:
            raise exceptions.OptionsError(f"intercept_hosts: {e}") from None
        current = list(ctx.options.allow_hosts)
        if (current and current != self.applied) or ctx.options.ignore_hosts:
            if not self.by_hand:
                log.info("tokenaddons intercept: allow_hosts/ignore_hosts set by hand; using those")
            self.by_hand, self.applied = True, None
            return
        self.by_hand = False
        wanted = self.patterns(extra)
        if wanted != current:
            self.applied = wanted
            ctx.options.update(allow_hosts=wanted)
            if wanted:
                log.info("tokenaddons intercept: decrypting only %d provider host pattern(s); other connections "
                         "pass through untouched", len(wanted))

    def patterns(self, extra: list[str]) -> list[str]:
        """What allow_hosts should be: [] (everything decrypted) when no mode
        lets clients choose their destination, or when asked to decrypt all."""
        modes = [mode_specs.ProxyMode.parse(m) for m in ctx.options.mode]
        if ctx.options.intercept_all_hosts or all(isinstance(m, FIXED_TARGET_MODES) for m in modes):
            return []
        hosts = [url_host(url) for url in PUBLIC_ENDPOINTS.values()]
        hosts += [url_host(p.base_url) for p in self.published.values.providers.values()]
        # a reverse mode running alongside must keep reaching its target
        hosts += [host_spec(*m.address) for m in modes if isinstance(m, mode_specs.ReverseMode)]
        out: list[str] = []
        for pattern in [host_pattern(h) for h in hosts] + extra:
            if pattern not in out:
                out.append(pattern)
        return out

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """A plain-HTTP request through the explicit proxy to a host that is not
        intercepted: none of ours (connections are sorted by mitmproxy itself)."""
        if (not self.allow and not self.ignore) or flow.is_replay == "request" or \
                isinstance(flow.client_conn.proxy_mode, FIXED_TARGET_MODES):
            return
        req = flow.request
        names = [f"{req.host}:{req.port}"]
        if host := req.headers.get("host"):
            names.append(host if re.search(r":[0-9]+$", host) else f"{host}:{req.port}")
        allowed = not self.allow or any(p.search(n) for p in self.allow for n in names)
        if not allowed or any(p.search(n) for p in self.ignore for n in names):
            pass_through(flow)
