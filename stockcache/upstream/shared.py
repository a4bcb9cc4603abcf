"""Upstream coordination across instances through Redis: shared budgets and cross-instance single-flight.

Imported only when ``REDIS_URL`` is set. With several instances behind a load
balancer, each one's own budget would let N instances spend N times a
provider's quota, and each one's own single-flight would let N instances fetch
the same key at once. Here:

- :class:`SharedBudget` reserves every upstream call in Redis first (one Lua
  script, atomic: per-second smoothing, per-minute sliding window, per-UTC-day
  count, a shared 429 pause), then in the instance's own
  :class:`~stockcache.budget.Budget` as before, so the usage ledger, the KPIs
  and the refresher keep working, and a Redis that lost its data (restart) can
  never let one instance past its own limits.
- :class:`PeerLocks` is a short per-key lock (``SET NX PX``) the fetcher's
  flight leader takes; an instance that finds it taken waits for the key's
  cache entry instead of calling upstream (see ``Fetcher``).

A small script instead of a limiter library: none of them reserves a call a
little in the future (our per-second smoothing) the way the local Budget does,
and the script is one round trip. If Redis is unreachable, both fall back to
the instance's own budget and single-flight at once (RedisLink fails fast), so
Redis never blocks the service; calls made meanwhile are not in Redis's windows.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..cache import TieredCache
from ..cache.redis import DEFAULT_NAMESPACE, RedisLink
from ..clock import seconds_to_utc_midnight, utc_day
from ..errors import CacheError, RateLimited
from ..settings import Settings
from .guard import Budget, Limits, share_cap

log = logging.getLogger(__name__)

# KEYS: second window, minute window, day counter, pause-until
# ARGV: now_ms, per_second, minute_cap, day_cap, max_wait_ms, member, this instance's calls today, units
# (what the call costs in the minute and day windows; members member#1 .. member#units)
# Returns {1, wait_ms, "ok"} or {0, retry_after_ms, why}; a day refusal's retry is computed by the caller.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local minute_cap = tonumber(ARGV[3])
local day_cap = tonumber(ARGV[4])
local max_wait = tonumber(ARGV[5])
local member = ARGV[6]
local units = tonumber(ARGV[8] or '1')
local paused = tonumber(redis.call('GET', KEYS[4]) or '0')
if now < paused then return {0, paused - now, 'paused after the provider said 429'} end
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
local mine = tonumber(ARGV[7])
if mine > day then
  day = mine
  redis.call('SET', KEYS[3], day, 'EX', 172800)
end
if day_cap > 0 and day + units > day_cap then return {0, 0, 'daily budget spent'} end
if minute_cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) + units > minute_cap then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local since = oldest[2] and tonumber(oldest[2]) or now
    return {0, since + 60000 - now, 'per-minute budget spent'}
  end
end
local start = now
if per_second > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
  if redis.call('ZCARD', KEYS[1]) >= per_second then
    local nth = redis.call('ZRANGE', KEYS[1], -per_second, -per_second, 'WITHSCORES')
    start = tonumber(nth[2]) + 1000
    if start - now > max_wait then return {0, start - now, 'per-second budget spent'} end
  end
  redis.call('ZADD', KEYS[1], start, member)
  redis.call('PEXPIRE', KEYS[1], 2000 + max_wait)
end
if minute_cap > 0 then
  for i = 1, units do redis.call('ZADD', KEYS[2], start, member .. '#' .. i) end
  redis.call('PEXPIRE', KEYS[2], 61000 + max_wait)
end
redis.call('INCRBY', KEYS[3], units)
redis.call('EXPIRE', KEYS[3], 172800)
return {1, start - now, 'ok'}
"""

# Gives back a reservation the local budget then refused (KEYS as above, ARGV[1] = member, ARGV[2] = units).
_REFUND = """
local units = tonumber(ARGV[2] or '1')
redis.call('ZREM', KEYS[1], ARGV[1])
for i = 1, units do redis.call('ZREM', KEYS[2], ARGV[1] .. '#' .. i) end
local day = tonumber(redis.call('GET', KEYS[3]) or '0')
if day > 0 then redis.call('DECRBY', KEYS[3], math.min(day, units)) end
return 1
"""

# Moves a day's count by ARGV[1] (a settled reservation: usually negative), never below 0.
_SETTLE = """
local day = tonumber(redis.call('GET', KEYS[1]) or '0')
local moved = math.max(0, day + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], moved, 'EX', 172800)
return moved
"""

_PAUSE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ms = tonumber(ARGV[1])
if until_ms > current then redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[2])) end
return 1
"""

# Takes each lock (KEYS[i], token ARGV[i + 1], PX ARGV[1]) unless a live peer lock holds it.
# A lock is live when it is a string in our token format with an expiry. Anything else under
# the key (no expiry: it would block the key forever; not our format: not ours to honour) is
# taken over in the same round trip, so a stuck or foreign key heals by itself.
# Returns per key: 1 taken, 0 held by a peer, 2 taken over.
_TAKE = """
local out = {}
for i, key in ipairs(KEYS) do
  local token = ARGV[i + 1]
  if redis.call('SET', key, token, 'NX', 'PX', ARGV[1]) then
    out[i] = 1
  else
    local live = false
    if redis.call('TYPE', key)['ok'] == 'string' and redis.call('PTTL', key) > 0 then
      live = string.match(redis.call('GET', key), '^%x+:%d+$') ~= nil
    end
    if live then
      out[i] = 0
    else
      redis.call('SET', key, token, 'PX', ARGV[1])
      out[i] = 2
    end
  end
end
return out
"""

# Deletes the lock only if it is still ours (it may have expired and been taken by a peer).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_instance = os.urandom(6).hex()
_counter = itertools.count(1)


def _token() -> str:
    return f"{_instance}:{next(_counter)}"


class SharedBudget:
    """A provider's budget shared by every instance on one Redis; the interface of ``budget.Budget``.

    Thread-safe (the local Budget is; Redis does the rest atomically). Times
    come from the injected clock of each instance, so their clocks should agree
    to well under a second (NTP does).
    """

    def __init__(
        self,
        local: Budget,
        link: RedisLink,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        clock: Callable[[], float] = time.time,
        max_wait: float = 2.0,
    ) -> None:
        self.local = local
        self._link = link
        self._clock = clock
        self._max_wait = max_wait
        base = f"{namespace}:budget:{{{local.provider}}}"  # one hash slot per provider
        self._second, self._minute, self._pause_key = f"{base}:second", f"{base}:minute", f"{base}:paused"
        self._day_prefix = f"{base}:day:"
        self._acquire = link.client.register_script(_ACQUIRE)
        self._refund = link.client.register_script(_REFUND)
        self._pause = link.client.register_script(_PAUSE)
        self._settle = link.client.register_script(_SETTLE)

    @property
    def provider(self) -> str:
        return self.local.provider

    @property
    def limits(self) -> Limits:
        return self.local.limits

    def _keys(self, now: float) -> list[str]:
        return [self._second, self._minute, self._day_prefix + utc_day(now), self._pause_key]

    def acquire(self, *, share: float = 1.0, units: int = 1) -> float:
        """Reserve one call costing ``units`` in Redis, then locally; the seconds to wait first, or RateLimited."""
        units = max(1, int(units))
        now = self._clock()
        limits = self.limits
        keys = self._keys(now)
        member = _token()
        args: list[int | str] = [
            int(now * 1000), limits.per_second,
            share_cap(limits.per_minute, share) if limits.per_minute else 0,
            share_cap(limits.per_day, share) if limits.per_day else 0,
            int(self._max_wait * 1000), member, self.local.calls_today(), units,
        ]
        try:
            ok, wait_ms, why = self._link.run("budget", lambda r: self._acquire(keys=keys, args=args, client=r))
        except CacheError:
            return self.local.acquire(share=share, units=units)  # Redis unusable: this instance's own budget only
        if not ok:
            retry = seconds_to_utc_midnight(now) if why == "daily budget spent" else int(wait_ms) / 1000
            seconds = max(1, math.ceil(retry))
            raise RateLimited(f"{self.provider}: {why} (shared by all instances); retry in {seconds} s.",
                              retry_after=seconds, provider=self.provider)
        try:
            local_wait = self.local.acquire(share=share, units=units)
        except RateLimited:
            try:
                self._link.run("budget", lambda r: self._refund(keys=keys, args=[member, units], client=r))
            except CacheError:
                pass
            raise
        return max(int(wait_ms) / 1000, local_wait)

    def settle(self, reserved: int, spent: int) -> None:
        """Move today's shared count (and this instance's) by what the call really cost minus its reservation."""
        delta = int(spent) - int(reserved)
        if not delta:
            return
        self.local.settle(reserved, spent)
        day_key = self._day_prefix + utc_day(self._clock())
        try:
            self._link.run("budget", lambda r: self._settle(keys=[day_key], args=[delta], client=r))
        except CacheError:
            pass  # this instance's own count is right; the shared one is high until the day ends

    def pause(self, seconds: float) -> None:
        """The provider said 429: every instance makes no call to it for ``seconds``."""
        self.local.pause(seconds)
        until = int((self._clock() + max(seconds, 0.0)) * 1000)
        ttl = max(1, int(seconds * 1000) + 1000)
        try:
            self._link.run("budget", lambda r: self._pause(keys=[self._pause_key], args=[until, ttl], client=r))
        except CacheError:
            pass

    def remaining(self) -> dict[str, int | None]:
        """Calls left in each window for all instances together (this instance's view if Redis is down)."""
        now = self._clock()
        now_ms = int(now * 1000)
        day_key = self._day_prefix + utc_day(now)

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.zcount(self._second, f"({now_ms - 1000}", "+inf")
            pipe.zcount(self._minute, f"({now_ms - 60000}", "+inf")
            pipe.get(day_key)
            return pipe.execute()

        try:
            second, minute, day = self._link.run("budget", read)
        except CacheError:
            return self.local.remaining()
        local = self.local.remaining()
        limits = self.limits
        day_calls = max(int(day or 0), self.local.calls_today())
        out: dict[str, int | None] = {
            "second": max(0, limits.per_second - second) if limits.per_second else None,
            "minute": max(0, limits.per_minute - minute) if limits.per_minute else None,
            "day": max(0, limits.per_day - day_calls) if limits.per_day else None,
        }
        # The local budget is enforced too: never report more room than it has.
        for window, left in out.items():
            mine = local.get(window)
            if left is not None and mine is not None:
                out[window] = min(left, mine)
        return out

    def calls_today(self) -> int:
        """Upstream calls to this provider today by all instances (this one's if Redis is down)."""
        now = self._clock()
        try:
            day = self._link.run("budget", lambda r: r.get(self._day_prefix + utc_day(now)))
        except CacheError:
            return self.local.calls_today()
        return max(int(day or 0), self.local.calls_today())


class PeerLocks:
    """Short per-key locks (``SET NX PX``) so one instance fetches a key while the others wait.

    Thread-safe. ``ttl`` bounds how long a crashed leader can hold a key; a
    live leader releases it as soon as its result is in the cache. A value
    under a lock key that no instance of ours could have left (no expiry, or
    not our token format) is taken over at once, in the same script: it would
    otherwise make every miss for that key wait the full upstream timeout.
    """

    def __init__(self, link: RedisLink, *, namespace: str = DEFAULT_NAMESPACE, ttl: float = 25.0) -> None:
        self._link = link
        self._prefix = f"{namespace}:lock:"
        self._ttl_ms = max(1, int(ttl * 1000))
        self._take = link.client.register_script(_TAKE)
        self._release = link.client.register_script(_RELEASE)

    def acquire(self, key: str) -> str | None:
        """A token if this instance now holds ``key``'s lock, None if a peer does; CacheError if Redis is down."""
        return self.acquire_many([key])[0]

    def acquire_many(self, keys: Iterable[str]) -> list[str | None]:
        """:meth:`acquire` for several keys in one round trip."""
        keys = list(keys)
        if not keys:
            return []
        tokens = [_token() for _ in keys]
        names = [self._prefix + key for key in keys]
        taken = self._link.run("lock", lambda r: self._take(keys=names, args=[self._ttl_ms, *tokens], client=r))
        for name, outcome in zip(names, taken):
            if int(outcome) == 2:
                log.warning("took over the Redis lock %s: it had no expiry or was not a stockcache lock", name)
        return [token if int(outcome) else None for token, outcome in zip(tokens, taken)]

    def release(self, key: str, token: str) -> None:
        """Give the lock back if it is still ours; CacheError if Redis is down (it then expires)."""
        self._link.run("unlock", lambda r: self._release(keys=[self._prefix + key], args=[token], client=r))


class SharedUpstream:
    """What a StockService uses when ``REDIS_URL`` is set: shared budgets and peer locks on one link.

    The link is the Redis tier's when the cache has one (one pool, one
    up/down state), else its own.
    """

    def __init__(self, link: RedisLink, *, namespace: str, lock_ttl: float, owns_link: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.namespace = namespace
        self.locks = PeerLocks(link, namespace=namespace, ttl=lock_ttl)
        self._clock = clock
        self._owns_link = owns_link

    @classmethod
    def open(cls, settings: Settings, cache: TieredCache, *, clock: Callable[[], float] = time.time) -> SharedUpstream:
        links = (getattr(tier, "link", None) for tier in cache.tiers)
        link = next((found for found in links if isinstance(found, RedisLink)), None)
        owns = link is None
        if link is None:
            link = RedisLink(settings.redis_url)
            link.start_monitor()
        # A leader may try two providers, each up to the timeout, after up to 2 s of smoothing.
        lock_ttl = 2 * settings.upstream_timeout + 5
        return cls(link, namespace=settings.redis_namespace, lock_ttl=lock_ttl, owns_link=owns, clock=clock)

    def budgets(self, local: Mapping[str, Budget]) -> dict[str, SharedBudget]:
        """Each local budget wrapped so all instances share one count."""
        return {name: SharedBudget(budget, self.link, namespace=self.namespace, clock=self._clock)
                for name, budget in local.items()}

    def close(self) -> None:
        if self._owns_link:
            self.link.close()
