"""``GET /metrics``: our Metrics and cache stats in Prometheus text format via prometheus-client.

A fresh registry per call with one custom collector reading the live figures,
so there is no process-global registry and no double bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..metrics import LATENCY_BUCKETS, ROUTE_GROUPS, Histogram, Metrics, route_group
from ..runtime import Runtime

CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Collector:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Any]:
        metrics = self._runtime.metrics
        stats = self._runtime.service.stats()

        latency = HistogramMetricFamily("stockcache_http_request_duration_seconds",
                                        "HTTP request latency by route and route group.", labels=["route", "group"])
        for route, hist in sorted(metrics.histograms(Metrics.REQUEST_LATENCY).items()):
            latency.add_metric([route, route_group(route)], _cumulative(hist.counts), hist.total)
        yield latency

        by_group = HistogramMetricFamily("stockcache_http_group_request_duration_seconds",
                                         "HTTP request latency by route group (market_data, portfolio, auth, "
                                         "admin, other).", labels=["group"])
        groups = _groups(metrics)  # one snapshot for the histograms and the quantiles below
        for group, hist in groups.items():
            by_group.add_metric([group], _cumulative(hist.counts), hist.total)
        yield by_group

        requests = CounterMetricFamily("stockcache_http_requests", "HTTP requests by route and status.",
                                       labels=["route", "status"])
        for (route, status), n in sorted(metrics.by_label(Metrics.REQUESTS).items()):
            requests.add_metric([route, status], n)
        yield requests

        hits = CounterMetricFamily("stockcache_cache_hits", "Cache hits by tier.", labels=["tier"])
        misses = CounterMetricFamily("stockcache_cache_misses", "Cache misses by tier.", labels=["tier"])
        size = GaugeMetricFamily("stockcache_cache_entries", "Entries in each cache tier.", labels=["tier"])
        for tier in ("memory", "sqlite", "redis"):
            tier_stats = stats.get(tier)
            if isinstance(tier_stats, dict):
                hits.add_metric([tier], tier_stats.get("hits", 0))
                misses.add_metric([tier], tier_stats.get("misses", 0))
                size.add_metric([tier], tier_stats.get("size", 0))
        yield hits
        yield misses
        yield size

        kind_hits = CounterMetricFamily("stockcache_cache_kind_hits", "Cache hits by kind of data.",
                                        labels=["kind"])
        kind_misses = CounterMetricFamily("stockcache_cache_kind_misses", "Cache misses by kind of data.",
                                          labels=["kind"])
        for kind, figures in sorted((stats.get("by_kind") or {}).items()):
            kind_hits.add_metric([kind], figures.get("hits", 0))
            kind_misses.add_metric([kind], figures.get("misses", 0))
        yield kind_hits
        yield kind_misses

        calls = CounterMetricFamily("stockcache_upstream_calls", "Upstream calls by provider.",
                                    labels=["provider"])
        errors = CounterMetricFamily("stockcache_upstream_errors", "Upstream errors by provider.",
                                     labels=["provider"])
        limited = CounterMetricFamily("stockcache_upstream_rate_limited",
                                      "Calls refused by a budget or a 429, by provider.", labels=["provider"])
        left = GaugeMetricFamily("stockcache_upstream_budget_left", "Calls left in a budget window.",
                                 labels=["provider", "window"])
        for name, figures in sorted(stats["upstream"].items()):
            calls.add_metric([name], figures["calls"])
            errors.add_metric([name], figures["errors"])
            limited.add_metric([name], figures["rate_limited"])
            for window, value in (figures.get("budget_left") or {}).items():
                if value is not None:
                    left.add_metric([name, window], value)
        yield calls
        yield errors
        yield limited
        yield left

        units = CounterMetricFamily("stockcache_upstream_units",
                                    "Budget units answered upstream calls cost, by provider and unit "
                                    "(a model API's tokens).", labels=["provider", "unit"])
        for (name, *_), n in sorted(metrics.by_label(Metrics.UPSTREAM_UNITS).items()):
            units.add_metric([name, stats["upstream"].get(name, {}).get("unit", "call")], n)
        yield units
        tokens = stats.get("llm_tokens") or {}
        yield CounterMetricFamily("stockcache_llm_tokens", "Model tokens (prompt and completion) this process spent.",
                                  value=tokens.get("spent", 0))
        yield GaugeMetricFamily("stockcache_llm_tokens_today",
                                "Model tokens spent today (UTC) by every process on the data dir.",
                                value=tokens.get("today", 0))
        if tokens.get("left") is not None:
            yield GaugeMetricFamily("stockcache_llm_tokens_left", "Model tokens left in today's budget.",
                                    value=tokens["left"])

        yield from _activity(metrics, stats, groups)

        yield CounterMetricFamily("stockcache_coalesced_requests",
                                  "Requests that joined an upstream call already in flight.",
                                  value=stats["coalesced"])
        yield CounterMetricFamily("stockcache_stale_answers",
                                  "Answers served stale because the upstream failed or the budget was spent.",
                                  value=stats["stale_served"])


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, n in zip(LATENCY_BUCKETS, counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if math.isinf(bound) else repr(bound), cumulative))
    return buckets


def _groups(metrics: Metrics) -> dict[str, Histogram]:
    """The request latency histograms summed per route group, every group listed."""
    out = {group: Histogram() for group in ROUTE_GROUPS}
    for route, hist in metrics.histograms(Metrics.REQUEST_LATENCY).items():
        total = out[route_group(route)]
        total.counts = [a + b for a, b in zip(total.counts, hist.counts, strict=True)]
        total.total += hist.total
        total.count += hist.count
    return out


def _activity(metrics: Metrics, stats: dict[str, Any], groups: dict[str, Histogram]) -> Iterator[Any]:
    """Reads by kind and tier, latency percentiles by route, and the refresher's counters."""
    read_hits = CounterMetricFamily("stockcache_read_hits",
                                    "Items of interactive requests answered fresh from a cache tier.",
                                    labels=["kind", "tier"])
    read_misses = CounterMetricFamily("stockcache_read_misses",
                                      "Items of interactive requests that had to go upstream.", labels=["kind"])
    for (kind, tier), n in sorted(metrics.by_label(Metrics.READS).items()):
        if tier == Metrics.READ_MISS:
            read_misses.add_metric([kind], n)
        else:
            read_hits.add_metric([kind, tier], n)
    yield read_hits
    yield read_misses

    quantiles = GaugeMetricFamily("stockcache_http_request_latency_quantile_seconds",
                                  "p50/p95/p99 HTTP latency by route, read off the histogram.",
                                  labels=["route", "quantile"])
    for route, hist in sorted(metrics.histograms(Metrics.REQUEST_LATENCY).items()):
        for q in (0.5, 0.95, 0.99):
            value = hist.quantile(q)
            if value is not None:
                quantiles.add_metric([route, str(q)], value)
    yield quantiles

    group_quantiles = GaugeMetricFamily("stockcache_http_group_latency_quantile_seconds",
                                        "p50/p95/p99 HTTP latency by route group, read off the histogram.",
                                        labels=["group", "quantile"])
    for group, hist in groups.items():
        for q in (0.5, 0.95, 0.99):
            value = hist.quantile(q)
            if value is not None:
                group_quantiles.add_metric([group, str(q)], value)
    yield group_quantiles

    refresher = stats.get("refresher") or {}
    yield CounterMetricFamily("stockcache_refresh_runs", "Background refresh rounds.",
                              value=refresher.get("runs", 0))
    for name, key, text in (
        ("stockcache_refresh_refreshed", "refreshed", "Entries the background refresher fetched again."),
        ("stockcache_refresh_failed", "failed", "Background refreshes the upstream failed."),
        ("stockcache_refresh_skipped_budget", "skipped_budget",
         "Due refreshes left for later because the refresher's budget share was spent."),
    ):
        family = CounterMetricFamily(name, text, labels=["kind"])
        for kind, n in sorted((refresher.get(key) or {}).items()):
            family.add_metric([kind], n)
        yield family


def render(runtime: Runtime) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(runtime))  # type: ignore[arg-type]
    return generate_latest(registry)


class _QuoteCollector:
    """``/metrics/quotes``: one gauge per quote figure, labelled by symbol (built per scrape)."""

    def __init__(self, quotes: Mapping[str, Mapping[str, Any]], errors: Mapping[str, Mapping[str, Any]]) -> None:
        self._quotes, self._errors = quotes, errors

    def collect(self) -> Iterator[Any]:
        price = GaugeMetricFamily("stockcache_quote_price", "Last price, in the listing's currency (major unit).",
                                  labels=["symbol", "currency"])
        figures = {
            "change": GaugeMetricFamily("stockcache_quote_change", "Change since the previous close.",
                                        labels=["symbol"]),
            "change_percent": GaugeMetricFamily("stockcache_quote_change_percent",
                                                "Change since the previous close, in percent.", labels=["symbol"]),
            "previous_close": GaugeMetricFamily("stockcache_quote_previous_close", "The previous close.",
                                                labels=["symbol"]),
            "age": GaugeMetricFamily("stockcache_quote_age_seconds", "Seconds since the quote was fetched upstream.",
                                     labels=["symbol"]),
            "timestamp": GaugeMetricFamily("stockcache_quote_timestamp_seconds",
                                           "The quote's own time (Unix seconds).", labels=["symbol"]),
        }
        stale = GaugeMetricFamily("stockcache_quote_stale", "1 when served past its TTL (the upstream failed).",
                                  labels=["symbol"])
        failed = GaugeMetricFamily("stockcache_quote_error", "1 for a symbol without a quote, by error code.",
                                   labels=["symbol", "code"])
        for symbol, quote in sorted(self._quotes.items()):
            if _finite(quote.get("price")):
                price.add_metric([symbol, str(quote.get("currency") or "")], quote["price"])
            for name, family in figures.items():
                if _finite(quote.get(name)):
                    family.add_metric([symbol], quote[name])
            stale.add_metric([symbol], 1.0 if quote.get("stale") else 0.0)
        for symbol, error in sorted(self._errors.items()):
            failed.add_metric([symbol, str(error.get("code", ""))], 1.0)
        yield price
        yield from figures.values()
        yield stale
        yield failed


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def render_quotes(quotes: Mapping[str, Mapping[str, Any]], errors: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Quotes (and the symbols that failed) as Prometheus gauges, for ``/metrics/quotes``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_QuoteCollector(quotes, errors))  # type: ignore[arg-type]
    return generate_latest(registry)
