"""Team mode: several proxies share one cache, one budget and one set of rate
limits through one Redis server (`--set redis_url=redis://HOST:PORT/DB`).

`link` is the connection and its health (an outage is noticed once, calls fail
fast while it lasts, recovery is automatic); `cache`, `budget` and `ratelimit`
hold the shared state's Lua scripts, each change one atomic step on the server.
Nothing here imports mitmproxy: the addons (cache, budget, ratelimit, team)
call it.
"""
