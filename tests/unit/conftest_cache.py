"""Helpers for the cache tests (imported explicitly; not a pytest conftest).

Tests use the shared ``clock`` fixture (tests/conftest.py, a FakeClock) and a
real SQLite file under ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stockcache.cache import TieredCache, open_cache
from stockcache.settings import Settings

TTLS = {"quote": 300, "news": 1800, "history": 3600, "fundamentals": 86400, "ai_analysis": 604800}
GRACE = 1000

QUOTE = {
    "symbol": "AAPL", "price": 261.74, "change": 2.29, "change_percent": 0.8826, "high": 263.31,
    "low": 260.68, "open": 261.07, "previous_close": 259.45, "timestamp": 1582641000,
}


def make_cache(data_dir: Path, clock: Any, **overrides: Any) -> TieredCache:
    """A cache on ``data_dir`` with the test TTLs, no janitor and no environment."""
    options: dict[str, Any] = {
        "ttls": TTLS, "memory_max_items": 100, "redis_url": "", "settings": Settings(),
        "stale_grace": GRACE, "clock": clock, "janitor_interval": None,
    }
    options.update(overrides)
    return open_cache(data_dir, **options)
