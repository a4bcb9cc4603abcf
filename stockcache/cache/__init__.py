"""The two-level cache: an in-memory LRU over a SQLite file, with TTL levels and grace.

``open_cache`` builds it from settings; the tiers are a plain list (memory
first). With ``REDIS_URL`` the shared Redis tier comes last, below SQLite:
memory -> SQLite -> Redis. A local SQLite hit is several times cheaper than
a Redis round trip even on loopback (docs/benchmarks.md, "Redis tier"), and
Redis is only needed for what this instance has not fetched or seen itself.

The package, one job per module: ``base`` (Entry, the Tier interface),
``memory``/``sqlite``/``redis`` (the tiers), ``codec`` (the JSON they store),
``frozen`` (read-only values), ``tiered`` (the tier chain, TieredCache),
``policy`` (TTLs and grace), ``counters`` (hits and misses, counted once),
``cached`` (the decorator and its single-flight), ``housekeeping`` (the janitor).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import CacheError, ConfigError
from ..settings import TTL_LEVELS, Settings
from .base import Entry, Tier
from .frozen import FrozenDict, freeze
from .memory import MemoryTier
from .policy import LevelOf
from .sqlite import SQLiteTier
from .tiered import TieredCache

__all__ = [
    "Entry", "FrozenDict", "LevelOf", "MemoryTier", "SQLiteTier", "Tier", "TieredCache", "freeze", "open_cache",
]

CACHE_FILE = "cache.sqlite"

log = logging.getLogger(__name__)


def open_cache(
    data_dir: str | os.PathLike[str] | None = None,
    ttls: Mapping[str, int] | None = None,
    memory_max_items: int | None = None,
    redis_url: str | None = None,
    *,
    settings: Settings | None = None,
    stale_grace: int | None = None,
    clock: Callable[[], float] = time.time,
    janitor_interval: float | None = 60.0,
    level_of: LevelOf | None = None,
) -> TieredCache:
    """Open the tiered cache stored in ``<data_dir>/cache.sqlite``.

    Arguments left out come from ``settings`` (or, without it, the environment),
    then the defaults; ``ttls`` may name only some levels. ``janitor_interval``
    None starts no background purge thread (tests call ``purge_expired``).
    ``level_of`` gives the TTL level of a key stored without one (a callable
    on the key, or a mapping from its kind); by default the service's kinds.
    Raises ConfigError for bad arguments and CacheError if the file cannot be
    opened at all (a corrupt file is moved aside instead).
    """
    missing = (
        None in (data_dir, memory_max_items, redis_url, stale_grace)
        or ttls is None
        or not set(TTL_LEVELS) <= set(ttls)
    )
    if settings is None and missing:
        settings = Settings.from_env()
    base = settings if settings is not None else Settings()
    data_dir = Path(data_dir if data_dir is not None else base.data_dir)
    merged = dict(base.ttls)
    for level, seconds in (ttls or {}).items():
        if level not in TTL_LEVELS:
            raise ConfigError(f"unknown TTL level {level!r}; known: {', '.join(TTL_LEVELS)}")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ConfigError(f"TTL for {level} must be a whole number of seconds >= 0")
        merged[level] = seconds
    max_items = memory_max_items if memory_max_items is not None else base.memory_max_items
    if max_items < 1:
        raise ConfigError("memory_max_items must be at least 1")
    grace = stale_grace if stale_grace is not None else base.stale_grace
    if grace < 0:
        raise ConfigError("stale_grace must be at least 0")
    if redis_url is None:
        redis_url = base.redis_url

    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {data_dir}: {exc}") from exc
    tiers: list[Tier] = [MemoryTier(max_items, grace=grace, clock=clock)]
    tiers.append(SQLiteTier(data_dir / CACHE_FILE, grace=grace, clock=clock))
    if redis_url:
        tiers.append(_redis_tier(redis_url, base.redis_namespace, grace=grace, clock=clock))
    cache = TieredCache(tiers, ttls=merged, grace=grace, clock=clock, level_of=level_of)
    if janitor_interval is not None:
        cache.start_janitor(janitor_interval)
    return cache


def _redis_tier(url: str, namespace: str, *, grace: int, clock: Callable[[], float]) -> Tier:
    """The Redis tier; redis-py is imported here only, so only REDIS_URL users need it."""
    try:
        from .redis import RedisTier
    except ImportError as exc:
        raise ConfigError(
            "REDIS_URL is set but redis-py is not installed; pip install 'stockcache[redis]'") from exc
    try:
        tier = RedisTier(url, grace=grace, clock=clock, namespace=namespace)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None
    try:  # one bounded PING, so an unreachable Redis is logged (once) at start-up
        tier.link.run("ping", lambda r: r.ping())
        log.info("Redis tier at %s (namespace %r)", tier.link.endpoint, namespace)
    except CacheError:
        pass  # the link has said so; the tier stays and is used as soon as Redis answers
    return tier
