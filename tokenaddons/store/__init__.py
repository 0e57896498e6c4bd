"""The SQLite event store: writer thread, schema and migrations, rollups, queries."""
from tokenaddons.store.db import connect
from tokenaddons.store.schema import DECISION_COLUMNS, MIGRATIONS, REQUEST_COLUMNS, migrate, open_for_reading
from tokenaddons.store.writer import EventStore

DEFAULT_PATH = "~/.tokenaddons/events.db"

__all__ = ["DECISION_COLUMNS", "DEFAULT_PATH", "MIGRATIONS", "REQUEST_COLUMNS", "EventStore", "connect",
           "migrate", "open_for_reading"]
