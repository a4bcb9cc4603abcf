"""Statistics of a running service: reads by kind and tier, latency by route, refresher counters."""

from __future__ import annotations

from typing import Any

from .metrics import Metrics
from .settings import Settings


def activity_stats(metrics: Metrics, settings: Settings) -> dict[str, Any]:
    """Reads by kind and tier, latency percentiles by route and refresher counters, for stats()."""
    by_kind: dict[str, dict[str, Any]] = {}
    for (kind, tier), n in sorted(metrics.by_label(Metrics.READS).items()):
        by_kind.setdefault(kind, {})[tier] = n
    hits = misses = 0
    for figures in by_kind.values():
        kind_misses = figures.get(Metrics.READ_MISS, 0)
        kind_hits = sum(figures.values()) - kind_misses
        figures.update(hits=kind_hits, misses=kind_misses, hit_rate=_rate(kind_hits, kind_misses))
        hits, misses = hits + kind_hits, misses + kind_misses
    latency = {route: hist.summary_ms()
               for route, hist in sorted(metrics.histograms(Metrics.REQUEST_LATENCY).items())}

    def per_kind(name: str) -> dict[str, int]:
        return {labels[0]: n for labels, n in sorted(metrics.by_label(name).items()) if labels}

    refresher = {
        "enabled": settings.refresh, "hours": settings.refresh_hours,
        "runs": metrics.get(Metrics.REFRESH_RUNS), "refreshed": per_kind(Metrics.REFRESHED),
        "failed": per_kind(Metrics.REFRESH_FAILED), "skipped_budget": per_kind(Metrics.REFRESH_SKIPPED),
    }
    return {"reads": {"hits": hits, "misses": misses, "hit_rate": _rate(hits, misses), "by_kind": by_kind},
            "latency": latency, "refresher": refresher}


def _rate(hits: int, misses: int) -> float | None:
    total = hits + misses
    return round(hits / total, 4) if total else None
