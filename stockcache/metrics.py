"""Counters and latency figures for stats, /metrics and KPIs.

Plain thread-safe counters owned by one ``Metrics`` object per service (no
process-global registry, so tests and embedded users can run several services
side by side). The web layer exports them in Prometheus text format.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter
from typing import Any


# Latency histogram bucket upper bounds in seconds (Prometheus "le" values).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, math.inf)


class Histogram:
    """Cumulative-ready bucket counts plus sum; percentiles are read off the buckets."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-th quantile (q in 0..1); None when empty."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip(LATENCY_BUCKETS, self.counts, strict=True):
            seen += n
            if seen >= rank and n:
                return bound if math.isfinite(bound) else LATENCY_BUCKETS[-2]
        return LATENCY_BUCKETS[-2]


class Metrics:
    """Thread-safe counters and latency histograms keyed by name and labels.

    The lock guards only the increment; nothing slow happens under it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, tuple[str, ...]]] = Counter()
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, name: str, label: str, seconds: float) -> None:
        with self._lock:
            histogram = self._histograms.get((name, label))
            if histogram is None:
                histogram = self._histograms[(name, label)] = Histogram()
            histogram.observe(seconds)

    def histograms(self, name: str) -> dict[str, Histogram]:
        """Copies of the histograms called ``name``, by label."""
        with self._lock:
            out = {}
            for (n, label), h in self._histograms.items():
                if n == name:
                    copy = Histogram()
                    copy.counts, copy.total, copy.count = list(h.counts), h.total, h.count
                    out[label] = copy
            return out

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
    REQUESTS = "http_requests"
    REQUEST_LATENCY = "http_request_seconds"
