"""The pipeline: every addon instance, in the order mitmproxy calls them.

Request phase top to bottom; an addon that answers a request itself sets
flow.response (or marks the exchange answered) and every later addon skips
that flow (`handled`). The response phase runs in the same order, so what
must see the meter's accounting runs when the exchange settles, after it.
Addons never import each other: they share the Exchange, the event store,
the published settings and the team's Redis link, which this function hands
to those that need them.
"""
from __future__ import annotations

from tokenaddons.addons.budget import Budget
from tokenaddons.addons.cache import Cache
from tokenaddons.addons.capture import Capture
from tokenaddons.addons.compress import Compress
from tokenaddons.addons.exposure import Exposure
from tokenaddons.addons.guard import Guard
from tokenaddons.addons.heap import Heap
from tokenaddons.addons.intake import Intake
from tokenaddons.addons.intercept import Intercept
from tokenaddons.addons.meter import Meter
from tokenaddons.addons.outlet import Outlet
from tokenaddons.addons.ratelimit import RateLimit
from tokenaddons.addons.replay import Replay
from tokenaddons.addons.route import Route
from tokenaddons.addons.scrub import Scrub
from tokenaddons.addons.settings import Settings
from tokenaddons.addons.settle import Settle
from tokenaddons.addons.store import Store
from tokenaddons.addons.team import Team
from tokenaddons.addons.upstream import Upstream
from tokenaddons.dispatch import Pipeline
from tokenaddons.engines.settings_file import Published
from tokenaddons.team.hub import Hub


def addons() -> list:
    published = Published()
    store = Store()
    team = Hub()
    return [
        Settings(published),  # the TOML file: price overrides, budget caps per provider/model/project
        store,                # the event store every other addon writes through
        Intercept(published),  # system-wide modes: decrypt only provider hosts, tunnel the rest untouched
        Team(store, team),    # team mode: the Redis that several proxies share cache, budgets and limits through
        Intake(),             # detect the API, parse the body once, project tag
        Exposure(),           # a warning when anyone on the network could use the proxy (options only)
        Guard(),              # prompt injections in tool results and user text
        Scrub(store),         # PII and secrets out, placeholders restored in answers
        Cache(store, team),   # exact-match lookup (after scrub: the key is what would be sent)
        Route(published, store),  # providers, aliases, routes: fallback, translation, keys the client never holds
        Compress(store),      # prompt-cache hints, prefix-stable tool-output transforms (on the routed body)
        Upstream(),           # a down upstream answered in the provider's shape (after the cache: hits need no upstream)
        RateLimit(team),      # requests and input tokens per minute, per provider and project
        Budget(store, published, team),  # spend caps: reserve the worst case before sending
        Meter(store),         # usage, cost, savings: one event row per exchange
        Settle(),             # after the meter: the cache fills, budgets settle, the summary is kept
        Outlet(),             # serialize the body once, if anything changed it
        Capture(),            # the exchange saved as it went upstream (capture_path)
        Heap(),               # once running: what start-up loaded frozen out of garbage collection
    ]


def replay_addons() -> list:
    """The pipeline, then the driver that plays captured traffic through it
    (before mitmproxy's server playback, which answers what the pipeline lets through)."""
    pipeline = addons()
    store = next(a for a in pipeline if isinstance(a, Store))
    return pipeline + [Replay(store)]


def loaded(parts: list) -> list:
    """What a launcher hands mitmproxy: the parts as one addon of its chain, in
    their order (tokenaddons/dispatch.py says why)."""
    return [Pipeline(parts)]
