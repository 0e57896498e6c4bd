"""What start-up loaded is kept out of the garbage collector's reach.

mitmproxy's modules, tiktoken's tables, the phone numbering plans and the
public suffix list are some 125,000 objects that live as long as the process.
Each full collection walks them all (about 95 ms, on mitmproxy's event loop:
every client waits), and at exit Python tears them down one by one. Once the
proxy runs, they are frozen (`gc.freeze`): collections look only at what
requests create, and a stopped proxy exits in a tenth of a second.
"""
from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


class Heap:
    def running(self) -> None:
        gc.collect()  # what start-up left as garbage is freed first, not frozen with the rest
        gc.freeze()
        log.debug("tokenaddons: %d objects loaded at start-up frozen out of garbage collection", gc.get_freeze_count())
