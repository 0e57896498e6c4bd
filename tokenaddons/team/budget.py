"""Budget windows the team shares: spend and reservations of every proxy, in Redis.

One hash per window and scope (`budget:WINDOW:START:SCOPE`, expiring a while
after the window ends) holds, per proxy, `s:ID` (what it has spent in the
window, as its own event store says), `h:ID` (what its requests in flight hold)
and `u:ID` (server time until which that hold counts: a proxy that dies
without settling frees its holds in `HOLD_S` at most). A proxy always writes
its own fields as absolute values from its own state, under one lock per
proxy, so its view and Redis's never drift, and writing them again is
harmless: that is how a window's spend is rebuilt after Redis lost its data
(every running proxy reports its own again within `SYNC_S`, and a proxy that
starts later reports when it starts).

Check and reserve are one Lua script: the sum of every proxy's spend and
live holds, plus this request's worst case, against the cap of each window,
then the hold taken in all of them, or in none.
"""
from __future__ import annotations

import asyncio
from typing import Protocol

from tokenaddons.team.link import Link

HOLD_S = 15.0  # a hold not refreshed for this long is dropped (its proxy is gone)
SYNC_S = 1.0  # how often a proxy reports its own spend and holds again
EXPIRE_AFTER_S = 3600  # a window's hash outlives the window (clocks differ a little)

# Sum of the other proxies' spend and live holds in one window (expired holds deleted).
OTHERS = """
local function others(key, me, now)
  local total, held, live = 0, {}, {}
  local f = redis.call('HGETALL', key)
  for i = 1, #f, 2 do
    local kind, who = string.sub(f[i], 1, 1), string.sub(f[i], 3)
    if who ~= me then
      if kind == 's' then total = total + tonumber(f[i + 1])
      elseif kind == 'h' then held[who] = tonumber(f[i + 1])
      elseif kind == 'u' then live[who] = tonumber(f[i + 1]) end
    end
  end
  for who, h in pairs(held) do
    if (live[who] or 0) > now then total = total + h
    else redis.call('HDEL', key, 'h:' .. who, 'u:' .. who) end
  end
  return total
end
local function mine(key, me, spent, held, hold_until, expire_at)
  if spent > 0 then redis.call('HSET', key, 's:' .. me, tostring(spent)) else redis.call('HDEL', key, 's:' .. me) end
  if held > 1e-12 then redis.call('HSET', key, 'h:' .. me, tostring(held), 'u:' .. me, tostring(hold_until))
  else redis.call('HDEL', key, 'h:' .. me, 'u:' .. me) end
  redis.call('EXPIREAT', key, expire_at)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
"""

# KEYS: one hash per window. ARGV: me, need, hold seconds, then per key: limit (0 = none), my spend,
# my holds, expire at. -> {0, totals...} reserved in every window, or {i, total} window i has no room.
RESERVE = OTHERS + """
local me, need, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local totals = {}
for i, key in ipairs(KEYS) do
  local a = 3 + (i - 1) * 4
  local total = others(key, me, now) + tonumber(ARGV[a + 2]) + tonumber(ARGV[a + 3])
  local limit = tonumber(ARGV[a + 1])
  if limit > 0 and total + need > limit then return {i, tostring(total)} end
  totals[i] = tostring(total + need)
end
for i, key in ipairs(KEYS) do
  local a = 3 + (i - 1) * 4
  mine(key, me, tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]) + need, now + hold, ARGV[a + 4])
end
return {0, unpack(totals)}
"""

# KEYS: one hash per window. ARGV: me, hold seconds, then per key: my spend, my holds, expire at.
# -> the team's spend in each window (every proxy's, holds left out)
REPORT = OTHERS + """
local me, hold = ARGV[1], tonumber(ARGV[2])
local spent = {}
for i, key in ipairs(KEYS) do
  local a = 2 + (i - 1) * 3
  mine(key, me, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), now + hold, ARGV[a + 3])
  local total = 0
  local f = redis.call('HGETALL', key)
  for j = 1, #f, 2 do
    if string.sub(f[j], 1, 2) == 's:' then total = total + tonumber(f[j + 1]) end
  end
  spent[i] = tostring(total)
end
return spent
"""

WindowKey = tuple  # (scope, window name, start): the Budget addon's key of a window


class Local(Protocol):
    """This proxy's own budget state (the Budget addon): USD per window key."""

    spent: dict
    reserved: dict


class SharedBudget:
    def __init__(self, link: Link, instance: str):
        self.link = link
        self.instance = instance  # this proxy's store: its spend is its own event rows
        self.lock = asyncio.Lock()
        self.hold_s = HOLD_S
        self._reserve = link.script(RESERVE)
        self._report = link.script(REPORT)
        self.reported: dict[WindowKey, float] = {}  # key -> its expiry: windows Redis may hold our fields in

    def key(self, w: WindowKey) -> str:
        scope, name, start = w
        return f"{self.link.prefix}budget:{name}:{int(start)}:{scope}"

    async def reserve(self, local: Local, windows: list[tuple[WindowKey, float, float]],
                      need: float) -> tuple[int | None, float]:
        """Check every window (key, limit, end) and hold `need` in all of them, in one
        step for the whole team; on success `local.reserved` holds it too. (None,
        0) reserved; (i, total spent or held) window i has no room. Raises `Unavailable`."""
        async with self.lock:
            args: list = [self.instance, repr(need), repr(self.hold_s)]
            for key, limit, end in windows:
                args += [repr(limit), repr(local.spent.get(key, 0.0)), repr(local.reserved.get(key, 0.0)),
                         int(end + EXPIRE_AFTER_S)]
            found = await self.link.call(self._reserve, keys=[self.key(w[0]) for w in windows], args=args)
            if int(found[0]):
                return int(found[0]) - 1, float(found[1])
            for key, _, end in windows:
                local.reserved[key] += need
                self.reported[key] = end + EXPIRE_AFTER_S
            return None, 0.0

    async def report(self, local: Local, windows: dict[WindowKey, float]) -> dict[WindowKey, float]:
        """Write this proxy's own spend and holds in the windows given (key -> end)
        and in every window it wrote before, as they are now; the team's spend in
        each. Raises `Unavailable`."""
        async with self.lock:
            for key, end in windows.items():
                self.reported[key] = end + EXPIRE_AFTER_S
            keys = list(self.reported)
            args: list = [self.instance, repr(self.hold_s)]
            for key in keys:
                args += [repr(local.spent.get(key, 0.0)), repr(local.reserved.get(key, 0.0)),
                         int(self.reported[key])]
            if not keys:
                return {}
            totals = await self.link.call(self._report, keys=[self.key(k) for k in keys], args=args)
            return {k: float(t) for k, t in zip(keys, totals)}

    def forget_ended(self, now: float) -> None:
        """Windows whose hash Redis has let expire are not written again."""
        for key in [k for k, expires in self.reported.items() if expires <= now]:
            del self.reported[key]
