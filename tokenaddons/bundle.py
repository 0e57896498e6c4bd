"""The pipeline: every addon instance, in the order mitmproxy calls them.

Request phase top to bottom; an addon that answers a request itself sets
flow.response and every later addon skips that flow.
"""
from __future__ import annotations

from tokenaddons.intake import Intake, Outlet
from tokenaddons.meter import Meter
from tokenaddons.store import Store


def addons() -> list:
    store = Store()
    return [
        store,           # the event store every other addon writes through
        Intake(),        # detect the API, parse the body once, project tag
        Meter(store),    # usage, cost, savings: one event row per exchange
        Outlet(),        # serialize the body once, if anything changed it
    ]
