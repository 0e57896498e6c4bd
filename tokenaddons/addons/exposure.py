"""A warning when the proxy can be reached from beyond this machine by anyone.

mitmproxy listens on every interface unless told otherwise, and this proxy
spends its users' provider keys, holds their cached answers and their
pseudonyms: reachable from the network with no `proxyauth`, anyone who can
connect can use it.
"""
from __future__ import annotations

import ipaddress
import logging

from mitmproxy import ctx
from mitmproxy.proxy.mode_specs import ProxyMode

log = logging.getLogger(__name__)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "" (every interface) or a name that may resolve anywhere
        return False


class Exposure:
    def __init__(self) -> None:
        self.warned: set[str] = set()

    def configure(self, updated) -> None:
        if not updated & {"mode", "listen_host", "proxyauth", "server"}:
            return
        o = ctx.options
        if not o.server or getattr(o, "proxyauth", None):  # declared by mitmproxy's ProxyAuth addon
            return
        for spec in o.mode:
            try:
                mode = ProxyMode.parse(spec)
            except ValueError:
                continue  # mitmproxy reports a bad mode itself
            if mode.listen_port(o.listen_port) is None:
                continue  # captures local traffic: nothing listens
            host = mode.listen_host(o.listen_host)
            if loopback(host) or spec in self.warned:
                continue
            self.warned.add(spec)
            log.warning("tokenaddons: the proxy (%s) listens on %s with no proxyauth: anyone who can reach this "
                        "machine can spend through it and read its cache. Pass --listen-host 127.0.0.1, or set "
                        "proxyauth.", spec, host or "every interface")
