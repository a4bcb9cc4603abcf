"""Login attempts counted in Redis: the store's ``login_reserve``/``login_settle``, for instances sharing a Redis.

With ``REDIS_URL`` set, login limits go through Redis rather than the
database: one round trip per step, and a database under a password-guessing
flood is spared. Each step is one Lua script, so a reservation is atomic
across instances exactly as the store's transaction is. The link is the
cache's :class:`~stockcache.cache.redis.RedisLink` (duck-typed here: this
module imports no redis-py); its failures are CacheError, and the caller
falls back to the instance's own limits while Redis is down.

Keys: ``NS:{login}:SCOPE:KEY:failed`` (a sorted set of failed attempts by
time) and ``...:pending`` (a hash of attempts in progress), all in one hash
slot, each expiring with its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .shared import LoginCheck

# KEYS: failed, pending per check. ARGV: now, window, pending_ttl, attempt, limit per check.
# Returns {1, "0"} held, {0, seconds} refused, {2, "0"} crowded. Numbers travel as strings:
# Lua numbers returned to Redis lose their fraction.
_RESERVE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local attempt = ARGV[4]
local crowded = false
for i = 1, #KEYS / 2 do
  local failed, pending = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[4 + i])
  redis.call('ZREMRANGEBYSCORE', failed, '-inf', now - window)
  local held = redis.call('HGETALL', pending)
  local live = 0
  for j = 1, #held, 2 do
    if tonumber(held[j + 1]) <= now - ttl then redis.call('HDEL', pending, held[j]) else live = live + 1 end
  end
  local failures = redis.call('ZCARD', failed)
  if failures >= limit then
    local oldest = redis.call('ZRANGE', failed, -limit, -limit, 'WITHSCORES')
    return {0, tostring(tonumber(oldest[2]) + window - now)}
  end
  if failures + live >= limit then crowded = true end
end
if crowded then return {2, '0'} end
for i = 1, #KEYS / 2 do
  redis.call('HSET', KEYS[2 * i], attempt, ARGV[1])
  redis.call('EXPIRE', KEYS[2 * i], math.ceil(ttl) + 1)
end
return {1, '0'}
"""

# KEYS as above. ARGV: now, window, attempt, outcome (failed | abandoned | succeeded).
_SETTLE = """
for i = 1, #KEYS / 2 do
  redis.call('HDEL', KEYS[2 * i], ARGV[3])
  if ARGV[4] == 'failed' then
    redis.call('ZADD', KEYS[2 * i - 1], ARGV[1], ARGV[3])
    redis.call('EXPIRE', KEYS[2 * i - 1], math.ceil(tonumber(ARGV[2])) + 1)
  end
end
if ARGV[4] == 'succeeded' then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisLoginCounter:
    """The login-attempt bookkeeping of :class:`~stockcache.store.shared.SharedQueries`, in Redis. Thread-safe."""

    def __init__(self, link: Any, *, namespace: str) -> None:
        self._link = link
        self._prefix = f"{namespace}:{{login}}"
        self._window = 900.0  # the failures' expiry; learnt from each reservation
        self._reserve = link.client.register_script(_RESERVE)
        self._settle = link.client.register_script(_SETTLE)

    def _keys(self, checks: Sequence[LoginCheck]) -> list[str]:
        keys = []
        for check in checks:
            base = f"{self._prefix}:{check.scope}:{check.key}"
            keys += [f"{base}:failed", f"{base}:pending"]
        return keys

    def login_reserve(self, checks: Sequence[LoginCheck], attempt: str, *, now: float, window: float,
                      pending_ttl: float) -> tuple[str, int]:
        """As the store's: ("ok", 0), ("refused", seconds) or ("crowded", 0); CacheError if Redis is down."""
        keys = self._keys(checks)
        self._window = window
        args = [repr(now), repr(window), repr(pending_ttl), attempt, *(str(c.limit) for c in checks)]
        code, value = self._link.run("logins", lambda r: self._reserve(keys=keys, args=args, client=r))
        if int(code) == 1:
            return "ok", 0
        if int(code) == 2:
            return "crowded", 0
        return "refused", max(1, int(-(-float(value) // 1)))

    def login_settle(self, checks: Sequence[LoginCheck], attempt: str, *, outcome: str, now: float) -> None:
        """As the store's; CacheError if Redis is down (a held place then expires with its ttl)."""
        keys = self._keys(checks)
        args = [repr(now), repr(self._window), attempt, outcome]
        self._link.run("logins", lambda r: self._settle(keys=keys, args=args, client=r))
