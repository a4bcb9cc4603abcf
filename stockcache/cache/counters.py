"""The cache's counters: every read counted once, by kind and by the tier that answered it, and tier failures.

Tiers count nothing of the sort themselves: a tier cannot tell a fresh answer
from one only kept for grace, nor a counted read from a second look. The
tier chain knows both, so it counts here, and ``get_stats()`` derives every
figure from one table: a tier's ``hits`` are the reads it answered fresh, its
``misses`` the reads that reached it and went on (or found nothing).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .policy import kind_of

MAX_KINDS = 32  # by_kind stays small whatever keys callers invent
FAILING_FOR = 60.0  # seconds a tier is reported failing after its last failure; also the log interval


def hit_rate(hits: int, misses: int) -> float:
    total = hits + misses
    return round(hits / total, 4) if total else 0.0


class ReadCounts:
    """Counted reads: per kind, how many each tier answered fresh and how many missed everywhere. Thread-safe.

    One lock, held only for the increments.
    """

    def __init__(self, tiers: Sequence[str]) -> None:
        self._tiers = list(tiers)
        self._miss = len(self._tiers)  # the slot after the tiers' counts the misses
        self._by_kind: dict[str, list[int]] = {}
        self._stale_reads = 0
        self._lock = threading.Lock()

    def _slots(self, kind: str) -> list[int]:
        """The counts of a kind, created on first use (lock held)."""
        slots = self._by_kind.get(kind)
        if slots is None:
            if len(self._by_kind) >= MAX_KINDS:
                kind = "other"
            slots = self._by_kind.setdefault(kind, [0] * (self._miss + 1))
        return slots

    def hit(self, key: str, index: int) -> None:
        """One read of ``key`` answered fresh by the tier at ``index``."""
        head, sep, _ = key.partition(":")
        kind = head if sep else "other"
        with self._lock:
            slots = self._by_kind.get(kind)
            if slots is None:
                slots = self._slots(kind)
            slots[index] += 1

    def hits(self, kind: str, index: int, count: int) -> None:
        """``count`` reads of one kind's keys answered fresh by the tier at ``index`` (a warm batch)."""
        with self._lock:
            self._slots(kind)[index] += count

    def miss(self, key: str) -> None:
        """One read of ``key`` that no tier answered fresh."""
        kind = kind_of(key)
        with self._lock:
            self._slots(kind)[self._miss] += 1

    def record(self, hits: Iterable[tuple[int, Iterable[str]]], misses: Iterable[str]) -> None:
        """A batch: ``(tier index, keys it answered)`` pairs, and the keys nobody answered."""
        by_kind = self._by_kind
        with self._lock:
            for index, keys in hits:
                for key in keys:
                    head, sep, _ = key.partition(":")
                    kind = head if sep else "other"
                    slots = by_kind.get(kind)
                    if slots is None:
                        slots = self._slots(kind)
                    slots[index] += 1
            miss = self._miss
            for key in misses:
                head, sep, _ = key.partition(":")
                kind = head if sep else "other"
                slots = by_kind.get(kind)
                if slots is None:
                    slots = self._slots(kind)
                slots[miss] += 1

    def stale(self, reads: int) -> None:
        """``reads`` lookups of entries for stale-if-error (not hits or misses)."""
        with self._lock:
            self._stale_reads += reads

    def snapshot(self) -> dict[str, Any]:
        """``{"tiers": {name: {"hits", "misses"}}, "hits", "misses", "hit_rate", "stale_reads", "by_kind"}``."""
        with self._lock:
            table = {kind: list(slots) for kind, slots in self._by_kind.items()}
            stale_reads = self._stale_reads
        n = self._miss
        totals = [sum(slots[i] for slots in table.values()) for i in range(n + 1)]
        tiers = {
            name: {"hits": totals[i], "misses": sum(totals[i + 1:])} for i, name in enumerate(self._tiers)
        }
        hits, misses = sum(totals[:n]), totals[n]
        by_kind = {}
        for kind, slots in sorted(table.items()):
            kind_hits = sum(slots[:n])
            by_kind[kind] = {"hits": kind_hits, "misses": slots[n], "hit_rate": hit_rate(kind_hits, slots[n])}
        return {"tiers": tiers, "hits": hits, "misses": misses, "hit_rate": hit_rate(hits, misses),
                "stale_reads": stale_reads, "by_kind": by_kind}


class TierFailures:
    """Tier failures: counted, remembered a minute (``failing_tiers``), logged once a minute per tier. Thread-safe."""

    def __init__(self, log: logging.Logger, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._errors = 0
        self._by_tier: dict[str, int] = {}
        self._last_failure: dict[str, float] = {}
        self._last_log: dict[str, float] = {}

    def failed(self, tier: str, operation: str, exc: BaseException) -> None:
        """Count a failure of ``tier`` during ``operation``; log it unless one was logged this last minute."""
        now = self._monotonic()
        with self._lock:
            self._errors += 1
            self._by_tier[tier] = self._by_tier.get(tier, 0) + 1
            self._last_failure[tier] = now
            if now - self._last_log.get(tier, -math.inf) < FAILING_FOR:
                return
            self._last_log[tier] = now
        # Outside the lock (logging writes to a stream); names the tier and the error, never a value.
        self._log.warning("cache tier %s failed during %s, going on without it: %s", tier, operation, exc)

    def failing(self) -> list[str]:
        """The tiers that failed in the last minute, sorted."""
        now = self._monotonic()
        with self._lock:
            return sorted(name for name, at in self._last_failure.items() if now - at < FAILING_FOR)

    def totals(self) -> tuple[int, dict[str, int]]:
        """Failures ever, in all and by tier."""
        with self._lock:
            return self._errors, dict(self._by_tier)
