"""The addon that opens the event store named by `store_path`."""
from __future__ import annotations

import logging
import sqlite3

from mitmproxy import ctx, exceptions

from tokenaddons.options import number
from tokenaddons.store import DEFAULT_PATH, EventStore
from tokenaddons.store.writer import FLUSH_INTERVAL

log = logging.getLogger(__name__)


class Store:
    """The mitmproxy addon that opens the event store named by `store_path`.

    Other addons are given this instance by the bundle and write through
    `store.events`; it is None until mitmproxy has configured the options.
    Those that keep tables of their own in the file name their migrations
    (`add_schema`) when they are made, so they run before the writer starts.
    """

    def __init__(self) -> None:
        self.events: EventStore | None = None
        self.schemas: dict[str, list[str]] = {}

    def add_schema(self, version_table: str, migrations: list[str]) -> None:
        self.schemas[version_table] = migrations
        if self.events is not None:
            self.events.add_schema(version_table, migrations)

    def load(self, loader) -> None:
        loader.add_option("store_path", str, DEFAULT_PATH,
                          "SQLite file of tokenaddons' events (requests, decisions, cache, budgets).")
        loader.add_option("store_bodies", bool, False,
                          "Store request and response bodies (after scrubbing) with each event.")
        loader.add_option("store_body_max", int, 65536, "Bytes of each stored body kept at most.")
        loader.add_option("store_stall_s", str, "30",
                          "Seconds the writer may spend on one batch (the database locked by another program, "
                          "a full disk) before it is reported stuck, in the log and in report/stats.")
        loader.add_option("store_batch_s", str, f"{FLUSH_INTERVAL:g}",
                          "Seconds the writer gathers rows before it commits them together: fewer, larger "
                          "batches cost the proxy less CPU; a proxy killed outright (kill -9) loses what it "
                          "had not committed yet (a normal stop writes everything).")

    def configure(self, updated) -> None:
        stall, batch = number("store_stall_s"), number("store_batch_s")
        if self.events is not None:
            self.events.stall_after = stall
            self.events.flush_interval = batch
        if "store_path" in updated or self.events is None:
            events = EventStore(ctx.options.store_path, schemas=self.schemas, stall_after=stall,
                                flush_interval=batch)
            try:
                events.start()
            except (OSError, sqlite3.Error) as e:  # the store in use, if any, stays
                raise exceptions.OptionsError(f"store_path: cannot open the event store {events.path}: {e}") from e
            self.done()
            self.events = events
            log.info("tokenaddons: events go to %s", self.events.path)

    def done(self) -> None:
        if self.events:
            self.events.flush()
            self.events.close()
            self.events = None
