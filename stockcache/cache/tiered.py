"""The tier chain: read-through across the tiers (memory first), promotion, write-through, stale reads.

The rest of the cache's jobs live beside it, each in its own module: TTLs and
grace (:mod:`.policy`), counting (:mod:`.counters`), the ``cached`` decorator
(:mod:`.cached`), the JSON the tiers store (:mod:`.codec`) and the janitor
(:mod:`.housekeeping`). :class:`TieredCache` puts them together behind the
methods the service and the Python API use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

from ..errors import CacheError
from .base import Entry, Tier
from .cached import Flights
from .cached import cached as cached_decorator
from .counters import ReadCounts, TierFailures
from .frozen import freeze
from .housekeeping import Janitor, housekeep
from .policy import LevelOf, TtlPolicy, service_levels

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_STRIPES = 64  # epoch counters, so a write to one key rarely cancels a promotion of another


class TieredCache:
    """Tiers in order (memory, SQLite, then Redis if any): read from the top, write to all.

    ``get`` returns only fresh values; a hit in a lower tier is copied into the
    tiers above it with its original timing. Entries stay in the tiers for
    ``grace`` seconds after they expire so ``get_stale`` can serve them when the
    upstream fails. A tier that fails (CacheError) is logged, counted and
    skipped, so the cache degrades instead of failing a request.

    ``level_of`` says which TTL level a key is on when ``set`` is given
    neither ``ttl_level`` nor ``ttl`` (:mod:`.policy`); by default the
    service's kinds (``quote:AAPL`` -> quote).

    Thread-safe. The lock guards promotion epochs only, and is held across
    tier calls only for in-process tiers (no I/O); a ``cached`` function never
    runs under it.
    """

    def __init__(
        self,
        tiers: list[Tier],
        *,
        ttls: Mapping[str, float],
        grace: float,
        clock: Callable[[], float] = time.time,
        level_of: LevelOf | None = None,
    ) -> None:
        if not tiers:
            raise ValueError("a TieredCache needs at least one tier")
        self._tiers = list(tiers)
        self._top_get = self._tiers[0].get
        self._local = [t for t in self._tiers if t.in_process]
        self._remote_bottom_up = [t for t in reversed(self._tiers) if not t.in_process]
        self.policy = TtlPolicy(ttls, grace=grace, level_of=service_levels() if level_of is None else level_of)
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        # A promotion (copying a lower-tier hit upwards) is dropped if a set or
        # delete touched the key's stripe meanwhile, so it cannot resurrect a
        # deleted key or overwrite a newer value.
        self._epochs = [0] * _STRIPES
        self._reads = ReadCounts([t.name for t in self._tiers])
        self._count_hit = self._reads.hit
        self._failures = TierFailures(log)
        self._flights = Flights()
        self._janitor_limit = 1000
        self._janitor = Janitor(lambda: self.housekeep(self._janitor_limit))
        self._closed = False

    @property
    def tiers(self) -> list[Tier]:
        """The tiers, top first."""
        return list(self._tiers)

    # reads ---------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The fresh value for ``key``, or None when missing or expired."""
        # The memory-hit path is inlined: it is the hot path of the service.
        now = self._clock()
        try:
            entry = self._top_get(key)
        except CacheError as exc:
            self._tier_failed(self._tiers[0], "get", exc)
            entry = None
        if entry is not None and now < entry.expires_at:
            self._count_hit(key, 0)
            return entry.value
        found = self._find_below(key, now)
        if found is None:
            self._reads.miss(key)
            return None
        self._count_hit(key, found[1])
        return found[0].value

    def memory_hit(self, key: str) -> Entry | None:
        """The fresh entry for ``key`` if the top (in-process) tier has one, counted as a hit; else None, uncounted.

        The fast path of a single cached read: no lower tier is asked and a miss
        is not counted, so the caller's full lookup (``get_many``) counts it once.
        """
        try:
            entry = self._top_get(key)
        except CacheError as exc:
            self._tier_failed(self._tiers[0], "get", exc)
            return None
        if entry is None or self._clock() >= entry.expires_at:
            return None
        self._count_hit(key, 0)
        return entry

    def memory_peek_many(self, keys: list[str]) -> dict[str, Entry]:
        """The fresh entries the top tier holds for ``keys`` (one lock round), uncounted: for a caller that
        may yet hand the reads to the full lookup; it counts what it serves (:meth:`count_memory_hits`)."""
        try:
            got = self._tiers[0].get_many(keys)
        except CacheError as exc:
            self._tier_failed(self._tiers[0], "get_many", exc)
            return {}
        now = self._clock()
        return {key: entry for key, entry in got.items() if now < entry.expires_at}

    def count_memory_hits(self, kind: str, count: int) -> None:
        """Count ``count`` reads of ``kind``'s keys answered by the top tier (after :meth:`memory_peek_many`)."""
        self._reads.hits(kind, 0, count)

    def get_entry(self, key: str) -> Entry | None:
        """The fresh entry for ``key`` (``entry.tier`` says where it was found), or None."""
        found = self._find(key)
        if found is None:
            self._reads.miss(key)
            return None
        self._count_hit(key, found[1])
        return found[0]

    def peek(self, key: str) -> Entry | None:
        """Like :meth:`get_entry`, but not counted in hits and misses.

        For a second look at a key whose read was already counted (the service's
        last check before fetching), so one read is never two misses.
        """
        found = self._find(key)
        return None if found is None else found[0]

    def _find(self, key: str) -> tuple[Entry, int] | None:
        """A fresh entry and the index of the first tier that has one, without counting."""
        now = self._clock()
        try:
            entry = self._top_get(key)
        except CacheError as exc:
            self._tier_failed(self._tiers[0], "get", exc)
            entry = None
        if entry is not None and now < entry.expires_at:
            return entry, 0
        return self._find_below(key, now)

    def _find_below(self, key: str, now: float) -> tuple[Entry, int] | None:
        """The rest of a lookup after the top tier had nothing fresh."""
        seen = {key: self._epochs[hash(key) % _STRIPES]}
        for index in range(1, len(self._tiers)):
            tier = self._tiers[index]
            try:
                entry = tier.get(key)
            except CacheError as exc:
                self._tier_failed(tier, "get", exc)
                continue
            if entry is not None and now < entry.expires_at:
                self._promote({key: entry}, index, seen)
                return entry, index
        return None

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Fresh entries for those keys that have one: one round trip per tier."""
        rest = list(dict.fromkeys(keys))
        found: dict[str, Entry] = {}
        answered: list[tuple[int, Iterable[str]]] = []
        now = self._clock()
        seen: dict[str, int] = {}
        for index, tier in enumerate(self._tiers):
            if not rest:
                break
            if index == 1:
                epochs = self._epochs
                seen = {key: epochs[hash(key) % _STRIPES] for key in rest}
            try:
                got = tier.get_many(rest)
            except CacheError as exc:
                self._tier_failed(tier, "get_many", exc)
                continue
            fresh = {key: e for key, e in got.items() if now < e.expires_at}
            if fresh:
                found.update(fresh)
                answered.append((index, fresh))
                if index:
                    self._promote(fresh, index, seen)
                rest = [] if len(fresh) == len(rest) else [key for key in rest if key not in fresh]
        self._reads.record(answered, rest)
        return found

    def get_stale(self, key: str) -> Entry | None:
        """An entry still within ``expires_at + grace``, fresh or not (stale-if-error)."""
        return self.get_stale_many([key]).get(key)

    def get_stale_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Like :meth:`get_stale` for several keys; the freshest copy across tiers wins.

        Counted as ``stale_reads``, never as hits or misses.
        """
        rest = list(dict.fromkeys(keys))
        self._reads.stale(len(rest))
        now = self._clock()
        best: dict[str, Entry] = {}
        for tier in self._tiers:
            if not rest:
                break
            try:
                got = tier.get_many(rest)
            except CacheError as exc:
                self._tier_failed(tier, "get_stale", exc)
                continue
            for key, entry in got.items():
                if now >= entry.expires_at + self.grace:
                    continue
                held = best.get(key)
                if held is None or entry.expires_at > held.expires_at:
                    best[key] = entry
            # Only keys without a fresh copy are worth looking up further down.
            rest = [key for key in rest if key not in best or now >= best[key].expires_at]
        return best

    def _promote(self, entries: Mapping[str, Entry], below: int, seen: Mapping[str, int]) -> None:
        for tier in self._tiers[:below]:
            try:
                if tier.in_process:
                    with self._lock:
                        batch = self._unchanged(entries, seen)
                        if batch:
                            tier.set_many(batch)
                else:
                    batch = self._unchanged(entries, seen)
                    if batch:
                        tier.set_many(batch)
            except CacheError as exc:
                self._tier_failed(tier, "promote", exc)

    def _unchanged(self, entries: Mapping[str, Entry], seen: Mapping[str, int]) -> dict[str, Entry]:
        epochs = self._epochs
        return {k: e for k, e in entries.items() if epochs[hash(k) % _STRIPES] == seen.get(k)}

    # writes --------------------------------------------------------------

    def set(self, key: str, value: Any, ttl_level: str | None = None, *, ttl: float | None = None) -> None:
        """Store ``value`` in every tier.

        The TTL is ``ttl`` seconds if given, else the TTL of ``ttl_level``, else
        the level of the key's kind (``quote:AAPL`` -> quote). The value must be
        JSON-compatible (ValueError otherwise, before any tier is touched); it
        is stored deep-frozen, so later changes to the caller's object do not
        reach the cache.
        """
        self._write({key: value}, ttl_level, ttl)

    def set_many(
        self, items: Mapping[str, Any], ttl_level: str | None = None, *, ttl: float | None = None
    ) -> None:
        """Store several values, one round trip per tier; the same TTL rules as :meth:`set`."""
        self._write(items, ttl_level, ttl)

    def store(self, key: str, value: Any, ttl_level: str | None = None, *, ttl: float | None = None) -> Entry:
        """Like :meth:`set`, and return the entry stored (its value is the frozen copy every read returns)."""
        return self._write({key: value}, ttl_level, ttl)[key]

    def _write(self, items: Mapping[str, Any], ttl_level: str | None, ttl: float | None) -> dict[str, Entry]:
        policy = self.policy
        fixed = None if ttl is None and ttl_level is None else policy.ttl("", ttl_level, ttl)
        now = self._clock()
        top = self._tiers[0].name
        entries: dict[str, Entry] = {}
        for key, value in items.items():
            if type(key) is not str:
                raise ValueError(f"cache keys are strings, not {type(key).__name__}")
            seconds = policy.ttl(key) if fixed is None else fixed
            entries[key] = Entry(freeze(value), now, now + seconds, top)
        if not entries:
            return entries
        # Lower tiers first, then the in-process ones under the lock with the
        # epoch bump: a promotion that read the old value cannot land after it.
        for tier in self._remote_bottom_up:
            try:
                tier.set_many(entries)
            except CacheError as exc:
                self._tier_failed(tier, "set", exc)
        failures: list[tuple[Tier, CacheError]] = []
        with self._lock:
            self._bump(entries)
            for tier in self._local:
                try:
                    tier.set_many(entries)
                except CacheError as exc:
                    failures.append((tier, exc))
        for tier, error in failures:  # logged outside the lock
            self._tier_failed(tier, "set", error)
        return entries

    def delete(self, key: str) -> bool:
        """Remove ``key`` from every tier; True if any tier had it."""
        found = False
        for tier in self._remote_bottom_up:
            try:
                found = tier.delete(key) or found
            except CacheError as exc:
                self._tier_failed(tier, "delete", exc)
        failures: list[tuple[Tier, CacheError]] = []
        with self._lock:
            self._bump([key])
            for tier in self._local:
                try:
                    found = tier.delete(key) or found
                except CacheError as exc:
                    failures.append((tier, exc))
        for tier, error in failures:
            self._tier_failed(tier, "delete", error)
        return found

    def clear_pattern(self, pattern: str) -> int:
        """Remove every key matching the glob (SQLite GLOB, case-sensitive) from every tier.

        Returns the number of distinct keys removed.
        """
        removed: set[str] = set()
        for tier in self._remote_bottom_up:
            try:
                removed |= tier.delete_pattern_keys(pattern)
            except CacheError as exc:
                self._tier_failed(tier, "clear_pattern", exc)
        # Match outside the lock; only the bump and the removal happen under it.
        with self._lock:
            for stripe in range(_STRIPES):
                self._epochs[stripe] += 1
        for tier in self._local:
            try:
                removed |= tier.delete_pattern_keys(pattern)
            except CacheError as exc:
                self._tier_failed(tier, "clear_pattern", exc)
        return len(removed)

    def _bump(self, keys: Iterable[str]) -> None:
        epochs = self._epochs
        for key in keys:
            epochs[hash(key) % _STRIPES] += 1

    # decorator -----------------------------------------------------------

    def cached(self, ttl_level: str, key_prefix: str | None = None) -> Callable[[F], F]:
        """Cache a function's (JSON-compatible) result per arguments, across restarts.

        Keys are ``fn:<prefix>:<arguments as JSON>`` (:mod:`.cached`), a
        namespace of their own: no ``key_prefix`` can reach the service's
        entries. The prefix (text without ``:``) defaults to the function's
        module and qualified name; arguments must be JSON values. Concurrent
        callers with the same arguments wait for one computation; no lock is
        held while the function runs. The cached (frozen) value is returned
        every time.
        """
        self.policy.check_level(ttl_level)
        return cached_decorator(self, self._flights, ttl_level, key_prefix)

    # housekeeping --------------------------------------------------------

    def purge_expired(self, limit: int = 1000) -> int:
        """One bounded step: each tier drops at most ``limit`` entries past their grace."""
        removed = 0
        for tier in self._tiers:
            try:
                removed += tier.purge(limit)
            except CacheError as exc:
                self._tier_failed(tier, "purge", exc)
        return removed

    def flush(self) -> None:
        """Make every tier's buffered writes durable."""
        for tier in self._tiers:
            try:
                tier.flush()
            except CacheError as exc:
                self._tier_failed(tier, "flush", exc)

    def housekeep(self, limit: int = 1000) -> int:
        """What the janitor does each interval: bounded purge steps while there is a backlog, then a flush."""
        return housekeep(self.purge_expired, self.flush, limit, pause=self._janitor.pause)

    def start_janitor(self, interval: float, *, limit: int = 1000) -> None:
        """Run :meth:`housekeep` every ``interval`` seconds in a daemon thread (once; stopped by :meth:`close`)."""
        if self._closed:
            return
        self._janitor_limit = limit
        self._janitor.start(interval)

    def close(self) -> None:
        """Stop the janitor, flush and close every tier. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._janitor.stop()
        for tier in self._tiers:
            try:
                tier.close()
            except CacheError as exc:
                self._tier_failed(tier, "close", exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # health and stats ----------------------------------------------------

    def _tier_failed(self, tier: Tier, operation: str, exc: CacheError) -> None:
        self._failures.failed(tier.name, operation, exc)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` needs, without the I/O of :meth:`get_stats` (no row counts, no file sizes).

        ``failing_tiers`` names the tiers that failed in the last minute, and each
        tier with a live status (Redis) reports it under its name.
        """
        out: dict[str, Any] = {}
        for tier in self._tiers:
            try:
                status = tier.health()
            except CacheError as exc:
                self._tier_failed(tier, "health", exc)
                status = {"status": "down"}
            if status is not None:
                out[tier.name] = status
        out["failing_tiers"] = self._failures.failing()
        return out

    def get_stats(self) -> dict[str, Any]:
        """Counters for ``/api/cache/stats``.

        Every counted read (``get``, ``get_entry``, ``get_many``, a
        ``memory_hit`` that hit) is counted once: top-level ``hits``/``misses``/
        ``hit_rate`` and ``by_kind`` by whether a tier answered it fresh, each
        tier's ``hits`` as the reads it answered and its ``misses`` as those
        that reached it and were not answered there. ``peek`` is never counted;
        ``get_stale*`` calls count as ``stale_reads`` only. The rest of each
        tier's dict is its own (sizes, evictions, write failures). ``errors``
        counts tier failures ever; ``failing_tiers`` names the tiers that failed
        in the last minute (what a health check wants).
        """
        reads = self._reads.snapshot()
        out: dict[str, Any] = {"memory": None, "sqlite": None, "redis": None}
        for tier in self._tiers:
            try:
                out[tier.name] = {**tier.stats(), **reads["tiers"][tier.name]}
            except CacheError as exc:
                self._tier_failed(tier, "stats", exc)
                out[tier.name] = None
        errors, by_tier = self._failures.totals()
        out.update(
            failing_tiers=self._failures.failing(),
            hits=reads["hits"],
            misses=reads["misses"],
            hit_rate=reads["hit_rate"],
            stale_reads=reads["stale_reads"],
            errors=errors,
            tier_errors=by_tier,
            by_kind=reads["by_kind"],
        )
        return out
