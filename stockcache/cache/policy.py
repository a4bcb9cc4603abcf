"""TTL policy: how long an entry is fresh, and how long it is kept after that (grace).

Levels (``quote``, ``news``, ``history``, ``fundamentals``, ``ai_analysis``, ``fx``)
each have a TTL in seconds; an entry stays in the tiers ``grace`` seconds past
its TTL so it can be served stale when the upstream fails. Which level a key is
on, when the caller does not say, is asked of an injected ``level_of``: the
cache knows nothing of the service's kinds of data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

# A key's level: a callable (key -> level or None), or a mapping from the key's
# kind (its text before the first ":") to the level.
LevelOf = Callable[[str], str | None] | Mapping[str, str]


def kind_of(key: str) -> str:
    """The kind a key names: its text before the first ``:`` (``quote:AAPL`` -> ``quote``), else ``other``."""
    head, sep, _ = key.partition(":")
    return head if sep else "other"


def service_levels() -> Mapping[str, str]:
    """The level of each kind the service stores (``quote:`` -> quote, ``profile:`` -> fundamentals).

    The default ``level_of`` of :func:`~stockcache.cache.open_cache` and
    :class:`~stockcache.cache.TieredCache`, so ``cache.set("quote:AAPL", v)``
    needs no ``ttl_level``. The only place the cache package learns of the
    service's kinds: it reads the kinds registry (``kinds.KINDS``).
    """
    from ..kinds import KINDS

    return {name: kind.ttl_level for name, kind in KINDS.items()}


class TtlPolicy:
    """TTLs per level, the grace period, and the level of a key. Immutable after construction, so thread-safe."""

    def __init__(self, ttls: Mapping[str, float], *, grace: float, level_of: LevelOf | None = None) -> None:
        if grace < 0 or not math.isfinite(grace):
            raise ValueError("grace must be a number of seconds >= 0")
        self.ttls = dict(ttls)
        self.grace = grace
        if level_of is None:
            self._level_of: Callable[[str], str | None] = lambda key: None
            self._known = ""
        elif callable(level_of):
            self._level_of = level_of
            self._known = ""
        else:
            levels = dict(level_of)
            self._level_of = lambda key: levels.get(kind_of(key))
            self._known = ", ".join(sorted(levels))

    def check_level(self, level: str) -> None:
        """ValueError unless ``level`` is one of the TTL levels."""
        if level not in self.ttls:
            raise ValueError(f"unknown ttl_level {level!r}; known: {', '.join(self.ttls)}")

    def ttl(self, key: str, ttl_level: str | None = None, ttl: float | None = None) -> float:
        """Seconds ``key`` stays fresh: ``ttl`` if given, else ``ttl_level``'s TTL, else its own level's.

        ValueError for a negative or non-finite ``ttl``, an unknown level, or a
        key whose level nobody knows.
        """
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
                raise ValueError(f"ttl must be a number of seconds >= 0, not {ttl!r}")
            return float(ttl)
        if ttl_level is None:
            ttl_level = self._level_of(key)
            if ttl_level is None:
                known = f" ({self._known})" if self._known else ""
                raise ValueError(f"no TTL for key {key!r}: pass ttl_level= or ttl=, or use a known kind{known}")
        seconds = self.ttls.get(ttl_level)
        if seconds is None:
            self.check_level(ttl_level)
        return float(seconds)  # type: ignore[arg-type]
