"""What start-up loaded is kept out of the garbage collector's reach.

mitmproxy's modules, tiktoken's tables, the phone numbering plans and the
public suffix list are some 125,000 objects that live as long as the process.
Each full collection walks them all (about 95 ms, on mitmproxy's event loop:
every client waits), and at exit Python tears them down one by one. Once the
proxy runs, they are frozen (`gc.freeze`): collections look only at what
requests create, and a stopped proxy exits in a tenth of a second.

And what requests create is let go of as each exchange ends (last in the
bundle, after the summary is kept and the capture is taken): mitmproxy's flows
are freed only by the collector, and each would otherwise keep its parsed
body, thousands of objects, for every collection to walk until then.
"""
from __future__ import annotations

import gc
import logging

from mitmproxy import http

from tokenaddons.exchange import Exchange

log = logging.getLogger(__name__)


class Heap:
    after_send = True  # (dispatch.py)

    def running(self) -> None:
        gc.collect()  # what start-up left as garbage is freed first, not frozen with the rest
        gc.freeze()
        log.debug("tokenaddons: %d objects loaded at start-up frozen out of garbage collection", gc.get_freeze_count())

    def response(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release(flow)

    @staticmethod
    def _release(flow: http.HTTPFlow) -> None:
        ex = Exchange.of(flow)
        if ex is not None:
            ex.release()
