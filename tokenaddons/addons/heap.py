"""What start-up loaded is kept out of the garbage collector's reach.

mitmproxy's modules, tiktoken's tables, the phone numbering plans and the
public suffix list are some 125,000 objects that live as long as the process.
Each full collection walks them all (about 95 ms, on mitmproxy's event loop:
every client waits), and at exit Python tears them down one by one. Once the
proxy runs, they are frozen (`gc.freeze`): collections look only at what
requests create, and a stopped proxy exits in a tenth of a second.

And what requests create is let go of as soon as it is no longer needed: the
parsed request body once the request has gone upstream (`Exchange.shelve`:
with many clients, each body would otherwise wait out its answer in memory,
grown cold in the CPU's caches, walked by each collection meanwhile), the
rest as each exchange ends (last in the bundle, after the summary is kept and
the capture is taken): mitmproxy's flows are freed only by the collector.
"""
from __future__ import annotations

import asyncio
import gc
import logging

from mitmproxy import http

from tokenaddons.exchange import Exchange, handled

log = logging.getLogger(__name__)


class Heap:
    after_send = True  # (dispatch.py)

    def running(self) -> None:
        gc.collect()  # what start-up left as garbage is freed first, not frozen with the rest
        gc.freeze()
        log.debug("tokenaddons: %d objects loaded at start-up frozen out of garbage collection", gc.get_freeze_count())

    def request(self, flow: http.HTTPFlow) -> None:
        # last in the request phase; on the loop's next turn, once mitmproxy has
        # written the request upstream (the client does not wait for the freeing)
        ex = Exchange.of(flow)
        if ex is None or handled(flow) or not ex.known:
            return
        try:
            asyncio.get_running_loop().call_soon(self._shelve, flow, ex)
        except RuntimeError:  # no event loop (a synchronous test): now
            self._shelve(flow, ex)

    @staticmethod
    def _shelve(flow: http.HTTPFlow, ex: Exchange) -> None:
        req = flow.request
        sent = req.raw_content if ex.body_version and "content-encoding" not in req.headers else None
        ex.shelve(sent)

    def response(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    @staticmethod
    def _release(flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is not None:
            ex.release()
