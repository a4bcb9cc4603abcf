"""UTC-day arithmetic shared by the budgets, the usage ledger, the providers, the refresher and the KPIs.

Daily quotas (Alpha Vantage's 25 calls) and the KPI history both turn over at
UTC midnight. Its own module, importing nothing from stockcache, so every
layer (providers included) can use it without bending the import arrows.
"""

from __future__ import annotations

from datetime import UTC, datetime

DAY = 86400.0


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a unix time, in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def seconds_to_utc_midnight(now: float) -> float:
    """Seconds from ``now`` until the next UTC day starts, in (0, 86400]: when daily quotas reset."""
    return DAY - (now % DAY)
