"""Counters and latency figures for stats, /metrics and KPIs.

Plain thread-safe counters owned by one ``Metrics`` object per service (no
process-global registry, so tests and embedded users can run several services
side by side). The web layer exports them in Prometheus text format.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Metrics:
    """Thread-safe counters keyed by name and label tuple; the lock guards only the increment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, tuple[str, ...]]] = Counter()

    def inc(self, name: str, *labels: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[(name, labels)] += amount

    def get(self, name: str, *labels: str) -> int:
        with self._lock:
            return self._counts[(name, labels)]

    def total(self, name: str) -> int:
        with self._lock:
            return sum(v for (n, _), v in self._counts.items() if n == name)

    def by_label(self, name: str) -> dict[tuple[str, ...], int]:
        with self._lock:
            return {labels: v for (n, labels), v in self._counts.items() if n == name}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {f"{n}{{{','.join(labels)}}}": v for (n, labels), v in self._counts.items()}

    # Names used across the code base, in one place so a typo cannot split a counter.
    UPSTREAM_CALLS = "upstream_calls"
    UPSTREAM_ERRORS = "upstream_errors"
    RATE_LIMITED = "upstream_rate_limited"
    COALESCED = "coalesced"
    STALE_SERVED = "stale_served"
