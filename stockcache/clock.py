"""UTC-day arithmetic shared by the budgets, the usage ledger, the providers, the refresher and the KPIs.

Daily quotas (Alpha Vantage's 25 calls) and the KPI history both turn over at
UTC midnight. Its own module, importing nothing from stockcache, so every
layer (providers included) can use it without bending the import arrows.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime

DAY = 86400.0


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a unix time, in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def iso_utc(ts: float) -> str:
    """``2024-05-06T12:34:56Z`` of a unix time: UTC, whole seconds (truncated), "Z". Thread-safe."""
    return _iso_second(math.floor(ts))


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    # Every answer renders its fetched_at, and a batch's items were mostly fetched
    # in the same second: formatting once per second is ~20% of a warm 100-quote batch.
    return datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def seconds_to_utc_midnight(now: float) -> float:
    """Seconds from ``now`` until the next UTC day starts, in (0, 86400]: when daily quotas reset."""
    return DAY - (now % DAY)
