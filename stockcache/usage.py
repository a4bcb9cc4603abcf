"""Upstream calls per provider per UTC day, persisted so a daily budget survives a restart.

Alpha Vantage's free plan allows 25 calls a day; a restart that forgot the
morning's calls would blow the quota by lunch. The ledger is also the source of
"upstream calls per day" for the KPI history.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .errors import CacheError

log = logging.getLogger(__name__)


def utc_day(ts: float) -> str:
    """``YYYY-MM-DD`` of a unix time, in UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class UsageLedger:
    """Counts calls per (day, provider) in SQLite. Thread-safe: one connection behind a lock.

    Each call is one small upsert (WAL, synchronous=NORMAL: a power cut may lose
    the last few counts, never corrupt the file). Pass ``path=None`` for a
    ledger that lives in memory only (tests, the Python API without a data dir).
    """

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS usage (day TEXT NOT NULL, provider TEXT NOT NULL,"
                " calls INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, provider))"
            )
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open the usage ledger: {exc}") from exc

    def record(self, provider: str, calls: int = 1) -> None:
        """Add ``calls`` to today's count; a failure is logged, never raised (counting must not fail a fetch)."""
        day = utc_day(self._clock())
        try:
            with self._lock:
                self._db.execute(
                    "INSERT INTO usage (day, provider, calls) VALUES (?, ?, ?)"
                    " ON CONFLICT(day, provider) DO UPDATE SET calls = calls + excluded.calls",
                    (day, provider, calls),
                )
        except sqlite3.Error as exc:
            log.warning("could not record upstream usage: %s", exc)

    def calls_on(self, day: str, provider: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT calls FROM usage WHERE day = ? AND provider = ?", (day, provider)
            ).fetchone()
        return int(row[0]) if row else 0

    def today(self, provider: str) -> int:
        return self.calls_on(utc_day(self._clock()), provider)

    def days(self, limit: int) -> dict[str, dict[str, int]]:
        """The last ``limit`` days that have counts: ``{day: {provider: calls}}``, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT day, provider, calls FROM usage WHERE day IN"
                " (SELECT DISTINCT day FROM usage ORDER BY day DESC LIMIT ?) ORDER BY day DESC",
                (limit,),
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for day, provider, calls in rows:
            out.setdefault(day, {})[provider] = calls
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
