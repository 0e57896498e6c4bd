"""Once running, what start-up loaded is frozen out of garbage collection."""
from __future__ import annotations

import gc

from mitmproxy import hooks
from mitmproxy.test import taddons

from tokenaddons.addons.heap import Heap


def test_running_freezes_what_start_up_loaded_out_of_the_collectors_walks():
    loaded = [[i] for i in range(1000)]  # as tiktoken's tables and the phone numbering plans are: alive for good
    probe = loaded[500]
    assert any(o is probe for o in gc.get_objects())
    try:
        with taddons.context(Heap()) as tctx:
            tctx.master.addons.trigger(hooks.RunningHook())
            assert gc.get_freeze_count() >= len(loaded)
            assert not any(o is probe for o in gc.get_objects())  # no collection walks it any more
            later = [0]
            assert any(o is later for o in gc.get_objects())  # what requests create still is collected
    finally:
        gc.unfreeze()
