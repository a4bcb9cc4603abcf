"""What every cache tier stores and offers.

A tier is a small, dict-like store of :class:`Entry` objects (in the spirit of
requests-cache's backends). Tiers keep an entry until ``expires_at + grace`` so
stale data can still be served when the upstream fails; whether an entry is
fresh is decided by :class:`~stockcache.cache.tiered.TieredCache`, never by a tier,
and so are hits and misses counted there (:mod:`.counters`). Tiers that store
text store :mod:`.codec`'s JSON. Tier failures surface as
:class:`~stockcache.errors.CacheError` only.
"""

from __future__ import annotations

import abc
import builtins
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached value with its timing and the tier it came from. Immutable, so thread-safe."""

    value: Any
    stored_at: float
    expires_at: float
    tier: str

    def age(self, now: float) -> float:
        """Seconds since the value was stored."""
        return now - self.stored_at

    def is_fresh(self, now: float) -> bool:
        """True while the TTL has not run out."""
        return now < self.expires_at


class Tier(abc.ABC):
    """One level of the cache; every implementation must be thread-safe.

    Adding a tier means implementing these methods and adding one line to
    ``TIERS`` in ``tests/unit/test_cache_tiers.py``, whose contract every tier passes.
    """

    name: ClassVar[str]
    # True when every operation is pure in-process memory work (no I/O), so the
    # tiered cache may call it while holding its own lock.
    in_process: ClassVar[bool] = False

    @abc.abstractmethod
    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` if it is within ``expires_at + grace``, else None."""

    @abc.abstractmethod
    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Entries for those keys that are within grace, in one round trip."""

    @abc.abstractmethod
    def set(self, key: str, entry: Entry) -> None:
        """Store ``entry`` (its value already frozen and JSON-compatible)."""

    @abc.abstractmethod
    def set_many(self, entries: Mapping[str, Entry]) -> None:
        """Store several entries in one round trip."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""

    @abc.abstractmethod
    def delete_pattern_keys(self, pattern: str) -> builtins.set[str]:
        """Remove every key matching the SQLite ``GLOB`` pattern; the keys removed."""

    def delete_pattern(self, pattern: str) -> int:
        """Remove every key matching the SQLite ``GLOB`` pattern; how many were removed."""
        return len(self.delete_pattern_keys(pattern))

    @abc.abstractmethod
    def purge(self, limit: int) -> int:
        """Drop at most ``limit`` entries whose ``expires_at + grace`` has passed."""

    def health(self) -> dict[str, Any] | None:
        """The tier's live status for a health check, cheaply (no scans); None when it has none."""
        return None

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """The tier's size and its own counters for ``get_stats()`` (hits and misses are the chain's)."""

    def flush(self) -> None:  # noqa: B027 - optional hook, a no-op for tiers that buffer nothing
        """Make buffered writes durable (nothing to do for tiers that buffer nothing)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release resources; idempotent."""


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile an SQLite ``GLOB`` pattern (``* ? [abc] [^a-z]``, case-sensitive).

    fnmatch differs from GLOB (``[!..]`` vs ``[^..]``), and the memory tier must
    remove exactly what the SQLite tier removes, so the rules are SQLite's.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            # Parsed as SQLite's patternCompare does: optional '^', a leading ']'
            # is literal, 'a-z' is a range only after a literal and before a
            # non-']' character, and an unclosed set matches nothing.
            j = i
            negate = j < n and pattern[j] == "^"
            if negate:
                j += 1
            members: list[str] = []
            if j < n and pattern[j] == "]":
                members.append(re.escape("]"))
                j += 1
            prior: str | None = None
            while j < n and pattern[j] != "]":
                c = pattern[j]
                if c == "-" and prior is not None and j + 1 < n and pattern[j + 1] != "]":
                    high = pattern[j + 1]
                    if prior <= high:
                        members.append(f"{re.escape(prior)}-{re.escape(high)}")
                    prior = None
                    j += 2
                else:
                    members.append(re.escape(c))
                    prior = c
                    j += 1
            if j >= n:
                return re.compile(r"(?!)")
            out.append(("[^" if negate else "[") + "".join(members) + "]")
            i = j + 1
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)
