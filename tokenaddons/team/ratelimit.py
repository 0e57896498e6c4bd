"""Rate limits the team shares: token buckets and provider pauses in Redis.

A bucket is a hash (level, stamp, per minute) refilled by the server's own
clock, so proxies whose clocks differ still agree. One Lua script checks every
bucket a request needs and the pause on its provider and credential, and
takes from all buckets, or from none and says how long to wait. A pause (an
upstream 429's retry-after) is a key holding the server time it ends, which
expires with it; a longer pause never gets shortened by a shorter one. (A
take the link tries again after a stall may take twice: on the safe side.)
"""
from __future__ import annotations

from tokenaddons.team.link import Link

IDLE_MS = 120_000  # a bucket untouched this long is full again anyway: let it expire

# KEYS: the buckets, then the pause. ARGV: per bucket: per minute, amount.
# -> {'0', 0} taken from every bucket, or {seconds to wait, i} (i = #KEYS: the pause)
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local n = #KEYS - 1
local wait, which, levels = 0, 0, {}
for i = 1, n do
  local per, amount = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', KEYS[i], 'level', 'stamp', 'per')
  local level, stamp = tonumber(b[1]), tonumber(b[2])
  if level == nil or tonumber(b[3]) ~= per then level, stamp = per, now end
  level = math.min(per, level + math.max(0, now - stamp) * per / 60)
  levels[i] = level
  local w = (math.min(amount, per) - level) * 60 / per
  if w > wait then wait, which = w, i end
end
local paused = tonumber(redis.call('GET', KEYS[#KEYS]) or '0') - now
if paused > wait then wait, which = paused, #KEYS end
if wait > 0 then return {tostring(wait), which} end
for i = 1, n do
  local per, amount = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('HSET', KEYS[i], 'level', tostring(levels[i] - math.min(amount, per)), 'stamp', tostring(now),
             'per', ARGV[2 * i - 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[#ARGV])
end
return {'0', 0}
"""

# KEYS: the pause. ARGV: seconds. Never shortens a pause already longer.
PAUSE = """
local t = redis.call('TIME')
local ends = tonumber(t[1]) + tonumber(t[2]) / 1e6 + tonumber(ARGV[1])
if ends > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(ends), 'PX', math.ceil(tonumber(ARGV[1]) * 1000))
end
return 1
"""


class SharedLimits:
    def __init__(self, link: Link):
        self.link = link
        self._take = link.script(TAKE)
        self._pause = link.script(PAUSE)

    def bucket_key(self, scope: str, name: str, kind: str) -> str:
        return f"{self.link.prefix}ratelimit:{scope}:{kind}:{name}"

    def pause_key(self, provider: str, credential: str | None) -> str:
        return f"{self.link.prefix}pause:{provider}:{credential or '-'}"

    async def take(self, buckets: list[tuple[str, float, float]], pause: str) -> tuple[float, int]:
        """Take `amount` from every (key, per minute, amount) bucket, or from none:
        (0, -1) taken; (seconds, i) bucket i (i = len(buckets): the pause) has no
        room for that long. Raises `Unavailable`."""
        args: list = []
        for _, per_minute, amount in buckets:
            args += [per_minute, repr(float(amount))]
        args.append(IDLE_MS)
        wait, which = await self.link.call(self._take, keys=[k for k, _, _ in buckets] + [pause], args=args)
        return float(wait), int(which) - 1

    def pause(self, key: str, seconds: float) -> None:
        """In the background: pause a provider for one credential, for every proxy."""
        self.link.later(self._pause, keys=[key], args=[repr(seconds)])
