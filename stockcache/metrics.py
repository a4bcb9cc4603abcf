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
from collections.abc import Sequence
from typing import Any

# Latency histogram bucket upper bounds in seconds (Prometheus "le" values).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, math.inf)


# Route groups for latency figures (issue 17): a login's password hash takes 0.15-0.9 s, a cached
# quote a millisecond, so one percentile over every route describes neither. In report order.
ROUTE_GROUPS = ("market_data", "portfolio", "auth", "admin", "other")
_GROUP_PATHS = (  # (path, group): a rule is in the group of the first path it is or is under
    ("/metrics/quotes", "market_data"),  # the Prometheus quote export; /metrics itself is admin
    ("/api/portfolio", "portfolio"), ("/api/watchlist", "portfolio"),
    ("/api/auth", "auth"), ("/api/me", "auth"), ("/api/tokens", "auth"),
    ("/api/cache", "admin"), ("/api/kpis", "admin"), ("/api/admin", "admin"), ("/api/users", "admin"),
    ("/metrics", "admin"),
    ("/static", "other"), ("/openapi.json", "other"), ("/healthz", "other"), ("(no route)", "other"),
)


def route_group(rule: str) -> str:
    """The group of a route rule (``/api/quote/<symbol>`` -> ``market_data``).

    Every route not listed above serves market data: the other API routes (quotes,
    history, news, profiles, FX, analysis ...) and the providers' drop-in APIs.
    """
    if rule == "/":
        return "other"  # the dashboard page
    for path, group in _GROUP_PATHS:
        if rule == path or rule.startswith(path + "/"):
            return group
    return "market_data"


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

    def quantile(self, q: float) -> float | None:
        """The q-th quantile in seconds, interpolated inside its bucket as Prometheus does; None when empty.

        A value in the open-ended last bucket reads as the highest finite bound.
        """
        return quantile(LATENCY_BUCKETS, self.counts, q)

    def summary_ms(self) -> dict[str, Any]:
        """``{"count", "p50_ms", "p95_ms", "p99_ms"}`` for stats, the CLI and KPIs."""
        return {"count": self.count, **percentiles_ms(self.counts)}


def quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """The q-th quantile (0..1) of bucket ``counts`` with upper ``bounds``, linearly interpolated."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for bound, n in zip(bounds, counts, strict=True):
        if n and seen + n >= rank:
            if not math.isfinite(bound):
                return lower
            return lower + (bound - lower) * max(0.0, rank - seen) / n
        seen += n
        if math.isfinite(bound):
            lower = bound
    return lower


def percentiles_ms(counts: Sequence[int]) -> dict[str, float | None]:
    """p50/p95/p99 in milliseconds (rounded to 0.01 ms) of latency bucket counts; None when empty."""
    out: dict[str, float | None] = {}
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        value = quantile(LATENCY_BUCKETS, counts, q)
        out[name] = None if value is None else round(value * 1000, 2)
    return out


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

    def observe_request(self, route: str, status: str, seconds: float) -> None:
        """One HTTP request: its latency by route and its count by (route, status), under one lock."""
        with self._lock:
            histogram = self._histograms.get((Metrics.REQUEST_LATENCY, route))
            if histogram is None:
                histogram = self._histograms[(Metrics.REQUEST_LATENCY, route)] = Histogram()
            histogram.observe(seconds)
            self._counts[(Metrics.REQUESTS, (route, status))] += 1

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

    # Names used across the code base, in one place so a typo cannot split a counter.
    UPSTREAM_CALLS = "upstream_calls"
    UPSTREAM_ERRORS = "upstream_errors"
    RATE_LIMITED = "upstream_rate_limited"
    COALESCED = "coalesced"
    STALE_SERVED = "stale_served"
    REQUESTS = "http_requests"
    REQUEST_LATENCY = "http_request_seconds"
    # Interactive item reads (labels: kind, tier): tier is where a fresh answer
    # was found (memory, sqlite, redis) or "miss" when it had to go upstream.
    # Background refreshes are not reads and are not counted here.
    READS = "cache_reads"
    READ_MISS = "miss"
    REFRESH_RUNS = "refresh_runs"
    REFRESHED = "refresh_refreshed"  # label: kind
    REFRESH_FAILED = "refresh_failed"  # label: kind
    REFRESH_SKIPPED = "refresh_skipped_budget"  # label: kind
