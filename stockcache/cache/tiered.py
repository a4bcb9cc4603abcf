"""Read-through, write-through cache over an ordered list of tiers (memory first)."""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

from ..errors import CacheError
from ..kinds import KINDS
from .base import Entry, Tier
from .frozen import freeze

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_STRIPES = 64  # epoch counters, so a write to one key rarely cancels a promotion of another
_MAX_KINDS = 32  # by_kind stays small whatever keys callers invent
_ERROR_LOG_INTERVAL = 60.0
_JANITOR_MAX_STEPS = 10


def _kind(key: str) -> str:
    head, sep, _ = key.partition(":")
    return head if sep else "other"


class TieredCache:
    """Tiers in order (memory, later redis, then sqlite): read from the top, write to all.

    ``get`` returns only fresh values; a hit in a lower tier is copied into the
    tiers above it with its original timing. Entries stay in the tiers for
    ``grace`` seconds after they expire so ``get_stale`` can serve them when the
    upstream fails. A tier that fails (CacheError) is logged, counted and
    skipped, so the cache degrades instead of failing a request.

    Thread-safe. The lock guards counters and promotion epochs only, and is
    held across tier calls only for in-process tiers (no I/O); a ``cached``
    function never runs under it.
    """

    def __init__(
        self,
        tiers: list[Tier],
        *,
        ttls: Mapping[str, int],
        grace: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not tiers:
            raise ValueError("a TieredCache needs at least one tier")
        self._tiers = list(tiers)
        self._top_get = self._tiers[0].get
        self._local = [t for t in self._tiers if t.in_process]
        self._remote_bottom_up = [t for t in reversed(self._tiers) if not t.in_process]
        self._ttls = dict(ttls)
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        # A promotion (copying a lower-tier hit upwards) is dropped if a set or
        # delete touched the key's stripe meanwhile, so it cannot resurrect a
        # deleted key or overwrite a newer value.
        self._epochs = [0] * _STRIPES
        self._hits = 0
        self._misses = 0
        self._stale_reads = 0
        self._errors = 0
        self._tier_errors: dict[str, int] = {}
        self._by_kind: dict[str, list[int]] = {}
        self._last_error_log: dict[str, float] = {}
        self._last_failure: dict[str, float] = {}
        self._inflight: dict[str, threading.Event] = {}
        self._stop = threading.Event()
        self._janitor: threading.Thread | None = None
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
            self._count_hit(key)
            return entry.value
        entry = self._find_below(key, now)
        self._count(key, entry is not None)
        return None if entry is None else entry.value

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
        self._count_hit(key)
        return entry

    def get_entry(self, key: str) -> Entry | None:
        """The fresh entry for ``key`` (``entry.tier`` says where it was found), or None."""
        entry = self._find(key)
        self._count(key, entry is not None)
        return entry

    def peek(self, key: str) -> Entry | None:
        """Like :meth:`get_entry`, but not counted in hits and misses.

        For a second look at a key whose read was already counted (the service's
        last check before fetching), so one read is never two misses.
        """
        return self._find(key)

    def _find(self, key: str) -> Entry | None:
        """A fresh entry from the first tier that has one, without counting stats."""
        now = self._clock()
        try:
            entry = self._top_get(key)
        except CacheError as exc:
            self._tier_failed(self._tiers[0], "get", exc)
            entry = None
        if entry is not None and now < entry.expires_at:
            return entry
        return self._find_below(key, now)

    def _find_below(self, key: str, now: float) -> Entry | None:
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
                return entry
        return None

    def get_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Fresh entries for those keys that have one: one round trip per tier."""
        rest = list(dict.fromkeys(keys))
        found: dict[str, Entry] = {}
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
                if index:
                    self._promote(fresh, index, seen)
                rest = [key for key in rest if key not in fresh]
        self._record(found, rest)
        return found

    def get_stale(self, key: str) -> Entry | None:
        """An entry still within ``expires_at + grace``, fresh or not (stale-if-error)."""
        return self.get_stale_many([key]).get(key)

    def get_stale_many(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Like :meth:`get_stale` for several keys; the freshest copy across tiers wins."""
        rest = list(dict.fromkeys(keys))
        with self._lock:
            self._stale_reads += len(rest)
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
        self._set_many({key: value}, ttl_level, ttl)

    def set_many(
        self, items: Mapping[str, Any], ttl_level: str | None = None, *, ttl: float | None = None
    ) -> None:
        """Store several values, one round trip per tier; the same TTL rules as :meth:`set`."""
        self._set_many(items, ttl_level, ttl)

    def _set_many(
        self, items: Mapping[str, Any], ttl_level: str | None, ttl: float | None
    ) -> dict[str, Entry]:
        now = self._clock()
        top = self._tiers[0].name
        entries: dict[str, Entry] = {}
        for key, value in items.items():
            if type(key) is not str:
                raise ValueError(f"cache keys are strings, not {type(key).__name__}")
            seconds = self._ttl_for(key, ttl_level, ttl)
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

    def _ttl_for(self, key: str, ttl_level: str | None, ttl: float | None) -> float:
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl < 0:
                raise ValueError(f"ttl must be a number of seconds >= 0, not {ttl!r}")
            return float(ttl)
        if ttl_level is None:
            kind = KINDS.get(_kind(key))
            ttl_level = kind.ttl_level if kind is not None else None
            if ttl_level is None:
                raise ValueError(
                    f"no TTL for key {key!r}: pass ttl_level= or ttl=, or use a known kind "
                    f"({', '.join(sorted(KINDS))})"
                )
        try:
            return float(self._ttls[ttl_level])
        except KeyError:
            raise ValueError(
                f"unknown ttl_level {ttl_level!r}; known: {', '.join(self._ttls)}"
            ) from None

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

        The key is ``prefix:arg1:arg2:kw=v`` (keyword arguments sorted); the
        prefix defaults to the function's qualified name. Concurrent callers
        with the same arguments wait for one computation; no lock is held while
        the function runs. The cached (frozen) value is returned every time.
        """
        if ttl_level not in self._ttls:
            raise ValueError(f"unknown ttl_level {ttl_level!r}; known: {', '.join(self._ttls)}")

        def decorate(fn: F) -> F:
            prefix = key_prefix or fn.__qualname__

            def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                parts = [str(arg) for arg in args]
                parts += [f"{name}={kwargs[name]}" for name in sorted(kwargs)]
                return f"{prefix}:{':'.join(parts)}"

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key = make_key(args, kwargs)
                while True:
                    entry = self.get_entry(key)
                    if entry is not None:
                        return entry.value
                    with self._lock:
                        running = self._inflight.get(key)
                        if running is None:
                            event = self._inflight[key] = threading.Event()
                    if running is None:
                        break
                    running.wait()  # then look again; if the leader failed, compute ourselves
                try:
                    # A leader that finished between our miss and our taking over
                    # has stored its value by now; look once more, uncounted.
                    entry = self._find(key)
                    if entry is not None:
                        return entry.value
                    value = fn(*args, **kwargs)
                    return self._set_many({key: value}, ttl_level, None)[key].value
                finally:
                    with self._lock:
                        del self._inflight[key]
                    event.set()

            wrapper.cache_key = lambda *args, **kwargs: make_key(args, kwargs)  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

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

    def start_janitor(self, interval: float, *, limit: int = 1000) -> None:
        """Purge expired entries and flush every ``interval`` seconds in a daemon thread."""
        if self._janitor is not None or self._closed:
            return
        thread = threading.Thread(
            target=self._janitor_loop, args=(interval, limit), name="stockcache-cache-janitor", daemon=True
        )
        self._janitor = thread
        thread.start()

    def housekeep(self, limit: int = 1000) -> int:
        """What the janitor does each interval: bounded purge steps, then a flush.

        Several steps run while there is a backlog, with a pause between them so
        request-path writes are not queued behind one long delete.
        """
        removed = 0
        for _ in range(_JANITOR_MAX_STEPS):
            step = self.purge_expired(limit)
            removed += step
            if step < limit or self._stop.wait(0.05):
                break
        self.flush()
        return removed

    def _janitor_loop(self, interval: float, limit: int) -> None:
        while not self._stop.wait(interval):
            try:
                self.housekeep(limit)
            except Exception:  # the janitor must outlive any surprise
                log.exception("cache janitor step failed")

    def close(self) -> None:
        """Stop the janitor, flush and close every tier. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._janitor is not None and self._janitor is not threading.current_thread():
            self._janitor.join(timeout=30)
        for tier in self._tiers:
            try:
                tier.close()
            except CacheError as exc:
                self._tier_failed(tier, "close", exc)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # stats ---------------------------------------------------------------

    def _count(self, key: str, hit: bool) -> None:
        if hit:
            self._count_hit(key)
        else:
            self._record((), (key,))

    def _count_hit(self, key: str) -> None:
        head, sep, _ = key.partition(":")
        kind = head if sep else "other"
        with self._lock:
            self._hits += 1
            counts = self._by_kind.get(kind)
            if counts is None:
                counts = self._kind_counts(kind)
            counts[0] += 1

    def _kind_counts(self, kind: str) -> list[int]:
        """The [hits, misses] pair of a kind, created on first use (lock held)."""
        if kind not in self._by_kind and len(self._by_kind) >= _MAX_KINDS:
            kind = "other"
        return self._by_kind.setdefault(kind, [0, 0])

    def _record(self, hits: Iterable[str], misses: Iterable[str]) -> None:
        with self._lock:
            by_kind = self._by_kind
            for index, keys in ((0, hits), (1, misses)):
                count = 0
                for key in keys:
                    kind = _kind(key)
                    counts = by_kind.get(kind)
                    if counts is None:
                        counts = self._kind_counts(kind)
                    counts[index] += 1
                    count += 1
                if index:
                    self._misses += count
                else:
                    self._hits += count

    def _tier_failed(self, tier: Tier, operation: str, exc: CacheError) -> None:
        now = time.monotonic()
        with self._lock:
            self._errors += 1
            self._tier_errors[tier.name] = self._tier_errors.get(tier.name, 0) + 1
            self._last_failure[tier.name] = now
            if now - self._last_error_log.get(tier.name, -math.inf) < _ERROR_LOG_INTERVAL:
                return
            self._last_error_log[tier.name] = now
        # The message names the tier and the error, never a cached value.
        log.warning("cache tier %s failed during %s, going on without it: %s", tier.name, operation, exc)

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
        now = time.monotonic()
        with self._lock:
            out["failing_tiers"] = sorted(
                name for name, at in self._last_failure.items() if now - at < _ERROR_LOG_INTERVAL)
        return out

    def get_stats(self) -> dict[str, Any]:
        """Counters for ``/api/cache/stats``.

        Top-level ``hits``/``misses``/``hit_rate`` and ``by_kind`` count fresh
        answers of ``get``/``get_entry``/``get_many`` (``get_stale*`` calls count
        as ``stale_reads`` only). Each tier's own dict counts every lookup that
        reached it, stale reads included. ``errors`` counts tier failures ever;
        ``failing_tiers`` names the tiers that failed in the last minute (what
        a health check wants).
        """
        out: dict[str, Any] = {"memory": None, "sqlite": None, "redis": None}
        for tier in self._tiers:
            try:
                out[tier.name] = tier.stats()
            except CacheError as exc:
                self._tier_failed(tier, "stats", exc)
                out[tier.name] = None
        now = time.monotonic()
        with self._lock:
            out.update(
                failing_tiers=sorted(
                    name for name, at in self._last_failure.items() if now - at < _ERROR_LOG_INTERVAL
                ),
                hits=self._hits,
                misses=self._misses,
                hit_rate=_rate(self._hits, self._misses),
                stale_reads=self._stale_reads,
                errors=self._errors,
                tier_errors=dict(self._tier_errors),
                by_kind={
                    kind: {"hits": h, "misses": m, "hit_rate": _rate(h, m)}
                    for kind, (h, m) in sorted(self._by_kind.items())
                },
            )
        return out


def _rate(hits: int, misses: int) -> float:
    total = hits + misses
    return round(hits / total, 4) if total else 0.0
