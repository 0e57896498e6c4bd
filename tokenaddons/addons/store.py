"""The addon that opens the event store named by `store_path`."""
from __future__ import annotations

import logging

from mitmproxy import ctx

from tokenaddons.store import DEFAULT_PATH, EventStore

log = logging.getLogger(__name__)


class Store:
    """The mitmproxy addon that opens the event store named by `store_path`.

    Other addons are given this instance by the bundle and write through
    `store.events`; it is None until mitmproxy has configured the options.
    """

    def __init__(self) -> None:
        self.events: EventStore | None = None

    def load(self, loader) -> None:
        loader.add_option("store_path", str, DEFAULT_PATH,
                          "SQLite file of tokenaddons' events (requests, decisions, cache, budgets).")
        loader.add_option("store_bodies", bool, False,
                          "Store request and response bodies (after scrubbing) with each event.")
        loader.add_option("store_body_max", int, 65536, "Bytes of each stored body kept at most.")

    def configure(self, updated) -> None:
        if "store_path" in updated or self.events is None:
            self.done()
            self.events = EventStore(ctx.options.store_path)
            self.events.start()
            log.info("tokenaddons: events go to %s", self.events.path)

    def done(self) -> None:
        if self.events:
            self.events.flush()
            self.events.close()
            self.events = None
