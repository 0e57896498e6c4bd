"""The cache tier the team shares, between each proxy's memory and its SQLite.

An entry is one Redis string (a JSON header line, then the answer's bytes)
that expires with the entry's own TTL. Single flight across proxies: a lookup
that misses claims the key (`SET NX` with a short lease) in the same step; a
proxy that finds the key claimed by another waits for the entry to appear,
and goes upstream itself if the claim goes away without one (the fetch
failed, or the answer was too large to share). The claimant renews its
leases every second while it fetches, so the claims of a proxy that died
lapse within `LEASE_S` instead of holding others for their whole wait.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

from tokenaddons.engines import jsonio
from tokenaddons.store.cache_tier import Entry
from tokenaddons.team.link import Link

POLL_S = 0.05  # how often a proxy waiting on another's fetch looks for the entry
LEASE_S = 5.0  # a claim not renewed for this long lapses

# KEYS: entry, claim. ARGV: owner ('' = look only), lease ms.
# -> {1, entry} | {0, 1 if this proxy holds the claim now (taken, or already its own) else 0}
LOOKUP = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if ARGV[1] == '' then return {0, 0} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0, 1} end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('PEXPIRE', KEYS[2], ARGV[2]) return {0, 1} end
return {0, 0}
"""

# KEYS: claims. ARGV: owner, lease ms. Renews those still ours.
RENEW = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]) end
end
return 1
"""

# KEYS: entry, claim. ARGV: owner, entry ('' = none to store), TTL ms. The claim is released if it is ours.
FILL = """
if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""


def encode(entry: Entry) -> bytes:
    head = {"t": entry.content_type, "c": entry.created, "e": entry.expires, "m": entry.model, "u": entry.usage,
            "$": entry.cost_usd}
    return jsonio.dumps(head) + b"\n" + entry.body


def decode(value: bytes) -> Entry:
    head, _, body = value.partition(b"\n")
    h = jsonio.loads(head)
    return Entry(body, h["t"], h["c"], h["e"], h["m"], h["u"] or {}, h["$"])


class SharedCache:
    def __init__(self, link: Link, clock: Callable[[], float] = time.time):
        self.link = link
        self.clock = clock
        self.owner = secrets.token_hex(8)  # this process, as the holder of a claim
        self._lookup = link.script(LOOKUP)
        self._fill = link.script(FILL)
        self._renew = link.script(RENEW)
        self.claims: set[str] = set()  # keys this proxy is fetching for the team
        self.lease_s = LEASE_S

    def _keys(self, key: str) -> list[str]:
        return [f"{self.link.prefix}cache:{key}", f"{self.link.prefix}cache-claim:{key}"]

    def _fresh(self, value: bytes | None) -> Entry | None:
        if value is None:
            return None
        entry = decode(value)
        return entry if entry.expires > self.clock() else None

    async def lookup(self, key: str, claim: bool = True) -> tuple[Entry | None, bool]:
        """The shared entry, or None and whether this proxy now holds the claim to
        fetch it (`claim=False`: look only). Raises `Unavailable`."""
        found, value = await self.link.call(self._lookup, keys=self._keys(key),
                                            args=[self.owner if claim else "", int(self.lease_s * 1000)])
        if found:
            return self._fresh(value), False
        if value:
            self.claims.add(key)
        return None, bool(value)

    async def renew(self) -> None:
        """Renew the leases of the claims this proxy holds (every second). Raises `Unavailable`."""
        if self.claims:
            await self.link.call(self._renew, keys=[self._keys(k)[1] for k in self.claims],
                                 args=[self.owner, int(self.lease_s * 1000)])

    async def wait(self, key: str, seconds: float) -> Entry | None:
        """Wait for another proxy's fetch: the entry once it is stored, or None when
        its claim ends without one or `seconds` pass. Raises `Unavailable`."""
        deadline = time.monotonic() + seconds
        keys = self._keys(key)
        while True:
            value, claim = await self.link.call(self.link.client.mget, keys)
            if value is not None:
                return self._fresh(value)
            if claim is None or time.monotonic() + POLL_S > deadline:
                return None
            await asyncio.sleep(POLL_S)

    def fill(self, key: str, entry: Entry | None) -> None:
        """In the background: store the entry for the team (None: nothing to store)
        and release this proxy's claim on the key."""
        self.claims.discard(key)
        value, ttl_ms = b"", 0
        if entry is not None:
            ttl_ms = int((entry.expires - self.clock()) * 1000)
            if ttl_ms > 0:
                value = encode(entry)
        self.link.later(self._fill, keys=self._keys(key), args=[self.owner, value, max(ttl_ms, 1)])
