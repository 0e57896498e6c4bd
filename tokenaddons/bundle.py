"""The pipeline: every addon instance, in the order mitmproxy calls them.

Request phase top to bottom; an addon that answers a request itself sets
flow.response and every later addon skips that flow. The response phase runs
in the same order, so what must see the meter's accounting sits after it.
"""
from __future__ import annotations

from tokenaddons.budget import Budget, BudgetSettle
from tokenaddons.cache import Cache, CacheFill
from tokenaddons.guard import Guard
from tokenaddons.intake import Intake, Outlet
from tokenaddons.meter import Meter
from tokenaddons.ratelimit import RateLimit
from tokenaddons.scrub import Scrub
from tokenaddons.settings import Settings
from tokenaddons.store import Store
from tokenaddons.upstream import Upstream


def addons() -> list:
    settings = Settings()
    store = Store()
    cache = Cache(store)
    budget = Budget(store, settings)
    return [
        settings,         # the TOML file: price overrides, budget caps per provider/model/project
        store,            # the event store every other addon writes through
        Intake(),         # detect the API, parse the body once, project tag
        Guard(),          # prompt injections in tool results and user text
        Scrub(store),          # PII and secrets out, placeholders restored in answers
        cache,            # exact-match lookup (after scrub: the key is what would be sent)
        Upstream(),       # a down upstream answered in the provider's shape (after the cache: hits need no upstream)
        RateLimit(),      # requests and input tokens per minute, per provider and project
        budget,           # spend caps: reserve the worst case before sending
        Meter(store),     # usage, cost, savings: one event row per exchange
        CacheFill(cache), # store complete answers with what they were billed
        BudgetSettle(budget),  # trade each reservation for the billed cost
        Outlet(),         # serialize the body once, if anything changed it
    ]
