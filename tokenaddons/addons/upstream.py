"""An unreachable upstream answered in the provider's own error shape.

When mitmproxy cannot connect upstream it answers with its own HTML page, which
no SDK can parse. mitmproxy offers no hook to replace that page, so this addon
acts before the connection is made: it remembers, per upstream address, whether
the last connection succeeded (`server_connected` / `server_connect_error`),
and for an address that failed last (or was never tried) it first checks with a
plain TCP connect. An upstream that cannot be reached gets a provider-shaped 502
naming it, with `Retry-After`, and for `upstream_retry_s` after a failed check
requests are answered at once instead of each waiting for a connect to fail.

An address that worked is not checked again until a connection to it fails, so
healthy traffic pays nothing. The one request whose connection fails first
after a good spell still gets mitmproxy's page (and is metered as
`upstream_unreachable`); every request after it gets the provider's shape.
Cache hits are served before this addon and never need the upstream.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.proxy import server_hooks

from tokenaddons.errors import refuse
from tokenaddons.exchange import Exchange, handled
from tokenaddons.options import number

log = logging.getLogger(__name__)

Address = tuple[str, int]


class Upstream:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.up: set[Address] = set()
        self.down: dict[Address, tuple[float, str]] = {}  # address -> (answer at once until, why)
        # options, parsed in configure
        self.check = True
        self.connect_timeout = 5.0
        self.retry_s = 1.0

    def load(self, loader) -> None:
        loader.add_option("upstream_check", bool, True,
                          "Check an upstream that is new or failed last before sending to it, so that a "
                          "down upstream gets an error in the provider's shape, not mitmproxy's HTML page.")
        loader.add_option("upstream_connect_timeout_s", str, "5", "Seconds the check waits for a TCP connect.")
        loader.add_option("upstream_retry_s", str, "1",
                          "After a failed check, answer requests to that upstream at once for this long.")

    def configure(self, updated) -> None:
        self.check = ctx.options.upstream_check
        self.connect_timeout = number("upstream_connect_timeout_s")
        self.retry_s = number("upstream_retry_s")

    @staticmethod
    def _address(conn) -> Address | None:
        if conn.address is None or conn.via is not None:  # through another proxy: its health is not the target's
            return None
        return str(conn.address[0]).lower(), int(conn.address[1])

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        if (addr := self._address(data.server)) is not None:
            self.up.add(addr)
            self.down.pop(addr, None)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        if (addr := self._address(data.server)) is not None:
            self.up.discard(addr)
            self.down[addr] = (self.clock() + self.retry_s, str(data.server.error or "connect failed"))

    async def request(self, flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or not ex.known or handled(flow) or not self.check:
            return
        if flow.server_conn.via is not None:
            return
        addr = (flow.request.host.lower(), flow.request.port)
        if addr in self.up:
            return
        until, why = self.down.get(addr, (0.0, ""))
        if self.clock() >= until:
            why = await self._probe(addr)
            if why is None:
                self.up.add(addr)
                self.down.pop(addr, None)
                return
            self.down[addr] = (self.clock() + self.retry_s, why)
        if handled(flow):  # answered by someone else while we waited
            return
        refuse(flow, "upstream", "upstream", f"cannot reach the upstream {addr[0]}:{addr[1]} ({why})",
               retry_after=self.retry_s)
        log.warning("tokenaddons upstream: %s:%d unreachable (%s); answered %s with 502", *addr, why,
                    flow.request.path)

    async def _probe(self, addr: Address) -> str | None:
        """None if a TCP connection opens, else why not."""
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*addr),
                                               self.connect_timeout)
        except asyncio.TimeoutError:
            return "connect timed out"
        except OSError as e:
            return e.strerror or str(e) or type(e).__name__
        writer.close()
        return None
