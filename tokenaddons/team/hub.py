"""What the Team addon hands to the addons that share state through Redis.

The bundle gives one `Hub` to the Team addon, which keeps it current (the link
for `redis_url`, this proxy's id), and to the cache, budget and rate-limit
addons, which read it on each request: `hub.link is None` is all team mode
costs when it is off.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from tokenaddons.team.link import Link

Job = Callable[[Link], Awaitable]


class Hub:
    def __init__(self) -> None:
        self.link: Link | None = None
        self.instance = ""  # this proxy's store, by the id kept in it: its spend is that store's rows
        self.jobs: list[Job] = []
        self._parts: dict[str, object] = {}

    def part(self, name: str, make: Callable[[Link], object]):
        """The shared piece `name` of the current link (made once per link), or
        None when team mode is off."""
        link = self.link
        if link is None:
            return None
        found = self._parts.get(name)
        if found is None:
            found = self._parts[name] = make(link)
        return found

    def every_second(self, job: Job) -> None:
        """Run `await job(link)` every second while Redis answers, and at once when it is back."""
        self.jobs.append(job)

    def set(self, link: Link | None, instance: str) -> None:
        self.link, self.instance, self._parts = link, instance, {}
