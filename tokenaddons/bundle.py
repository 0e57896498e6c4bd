"""The pipeline: every addon instance, in the order mitmproxy calls them.

Request phase top to bottom; an addon that answers a request itself sets
flow.response (or marks the exchange answered) and every later addon skips
that flow (`handled`). The response phase runs in the same order, so what
must see the meter's accounting runs when the exchange settles, after it.
Addons never import each other: they share the Exchange, the event store and
the published settings, which this function hands to those that need them.
"""
from __future__ import annotations

from tokenaddons.addons.budget import Budget
from tokenaddons.addons.cache import Cache
from tokenaddons.addons.exposure import Exposure
from tokenaddons.addons.guard import Guard
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.ratelimit import RateLimit
from tokenaddons.addons.route import Route
from tokenaddons.addons.scrub import Scrub
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.addons.upstream import Upstream
from tokenaddons.engines.settings_file import Published


def addons() -> list:
    published = Published()
    store = Store()
    return [
        Settings(published),  # the TOML file: price overrides, budget caps per provider/model/project
        store,                # the event store every other addon writes through
        Intake(),             # detect the API, parse the body once, project tag
        Exposure(),           # a warning when anyone on the network could use the proxy (options only)
        Guard(),              # prompt injections in tool results and user text
        Scrub(store),         # PII and secrets out, placeholders restored in answers
        Cache(store),         # exact-match lookup (after scrub: the key is what would be sent)
        Route(published, store),  # providers, aliases, routes: fallback, translation, keys the client never holds
        Upstream(),           # a down upstream answered in the provider's shape (after the cache: hits need no upstream)
        RateLimit(),          # requests and input tokens per minute, per provider and project
        Budget(store, published),  # spend caps: reserve the worst case before sending
        Meter(store),         # usage, cost, savings: one event row per exchange
        Settle(),             # after the meter: the cache fills, budgets settle, the summary is kept
        Outlet(),             # serialize the body once, if anything changed it
    ]
