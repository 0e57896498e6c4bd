"""The end of an exchange, after the meter: what addons asked to run once the
answer's cost is known (the cache fills, budgets trade a reservation for the
billed cost), in the order they asked, then the exchange's summary goes into
`flow.metadata`, where a saved flow keeps it."""
from __future__ import annotations

import logging

from mitmproxy import http

from tokenaddons.exchange import METADATA_KEY, Exchange

log = logging.getLogger(__name__)


class Settle:
    after_send = True  # (dispatch.py)

    def response(self, flow: http.HTTPFlow) -> None:
        self._settle(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._settle(flow)

    @staticmethod
    def _settle(flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is None or ex.state.get("settled"):
            return
        ex.state["settled"] = True
        for addon, fn in ex.settlers:
            try:
                fn(flow, ex)
            except Exception:  # one addon's failure must not keep the others from settling
                log.exception("tokenaddons %s: settling %s failed", addon, ex.path)
        flow.metadata[METADATA_KEY] = ex.summary()
