"""The SQLite tier after failed writes: it drops and counts them, then comes back by itself.

A real full disk is in ``tests/integration/test_disk_full.py``. Here the ways
the writer can fail are produced directly, with a fake clock for the retry
interval: a statement refused for space (``PRAGMA max_page_count`` on the
writer's own connection gives SQLITE_FULL, "database or disk is full",
exactly as a full disk does), a write connection that breaks under the
writer, and a writer thread that stops.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from stockcache.cache.base import Entry
from stockcache.cache.sqlite import WRITE_RETRY_SECONDS, SQLiteTier
from stockcache.errors import CacheError

from ..conftest import FakeClock


@pytest.fixture
def tier(tmp_path: Path, clock: FakeClock):
    t = SQLiteTier(tmp_path / "cache.sqlite", grace=1000, clock=clock)
    yield t
    t.close()


def _entries(clock: FakeClock, prefix: str, n: int) -> dict[str, Entry]:
    now = clock()
    return {f"quote:{prefix}{i}": Entry({"price": float(i), "pad": "x" * 300}, now, now + 300, "memory")
            for i in range(n)}


def _on_disk(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[0] for row in conn.execute("SELECT key FROM cache")}
    finally:
        conn.close()


def test_sqlite_tier_comes_back_after_its_write_connection_broke(tier: SQLiteTier, clock: FakeClock) -> None:
    tier.set_many(_entries(clock, "A", 3))
    tier.flush()
    tier._query("SELECT 1")
    tier._conn.close()  # type: ignore[union-attr]  # the connection dies under the writer
    tier.set_many(_entries(clock, "B", 2))  # queued; the writer meets the broken connection
    with pytest.raises(CacheError):
        tier.flush()
    assert tier.stats()["writes"] == "failing" and tier.health() is not None
    with pytest.raises(CacheError):  # refused at once until the retry time
        tier.set_many(_entries(clock, "X", 1))
    clock.advance(WRITE_RETRY_SECONDS)
    tier.set_many(_entries(clock, "C", 2))  # a new connection, no restart
    tier.flush()
    on_disk = _on_disk(tier.path)
    assert {"quote:A0", "quote:C0", "quote:C1"} <= on_disk
    assert not {"quote:B0", "quote:B1", "quote:X0"} & on_disk
    stats = tier.stats()
    assert stats["writes"] == "ok" and stats["pending_writes"] == 0 and tier.health() is None
    assert stats["dropped_writes"] == 3 and stats["write_failures"] == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sqlite_tier_comes_back_after_its_writer_thread_stopped(
    tier: SQLiteTier, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tier._run

    def stop_once(batch: list) -> object:
        monkeypatch.setattr(tier, "_run", run)
        raise SystemExit  # ends the thread, as no error of ours would
    monkeypatch.setattr(tier, "_run", stop_once)
    tier.set_many(_entries(clock, "A", 2))
    tier._writer.join(10)
    assert not tier._writer.is_alive()
    with pytest.raises(CacheError):  # never queued for a writer that is gone, never waited on
        tier.set_many(_entries(clock, "B", 2))
    with pytest.raises(CacheError):
        tier.flush()
    assert tier.get("quote:A0") is None  # what was not written is not served as if it were
    clock.advance(WRITE_RETRY_SECONDS)
    tier.set_many(_entries(clock, "C", 2))  # a new writer thread
    tier.flush()
    assert {"quote:C0", "quote:C1"} <= _on_disk(tier.path)
    assert tier.stats()["writes"] == "ok" and tier.stats()["dropped_writes"] == 4


def test_sqlite_tier_drops_counts_and_retries_writes_refused_for_space(tier: SQLiteTier, clock: FakeClock) -> None:
    tier.set_many(_entries(clock, "OLD", 5))
    tier.flush()
    pages = tier._query("PRAGMA page_count")[0][0]
    tier._query(f"PRAGMA max_page_count = {pages}")  # "the disk" is full from here on
    tier.set_many(_entries(clock, "NEW", 100))  # queued: the writer meets the error a moment later
    with pytest.raises(CacheError, match="disk is full"):
        tier.flush()
    # The refused transaction is rolled back whole, and nothing of it is served as if written.
    new = [f"quote:NEW{i}" for i in range(100)]
    assert not {key for key in _on_disk(tier.path) if key.startswith("quote:NEW")}
    assert tier.get_many(new) == {} and tier.get(new[0]) is None
    assert tier.stats()["dropped_writes"] == 100 and tier.stats()["pending_writes"] == 0
    # Until the retry time, writes are refused at once (and counted), not queued.
    with pytest.raises(CacheError):
        tier.set_many(_entries(clock, "MORE", 3))
    assert tier.stats()["dropped_writes"] == 103
    assert tier.get("quote:OLD1") is not None  # reads go on
    # Then a new connection (which has room) takes writes again.
    clock.advance(WRITE_RETRY_SECONDS)
    tier.set_many(_entries(clock, "BACK", 100))
    tier.flush()
    on_disk = _on_disk(tier.path)
    assert {f"quote:BACK{i}" for i in range(100)} <= on_disk
    assert tier.stats()["writes"] == "ok"


def test_sqlite_tier_logs_failure_and_recovery_once_each(
    tier: SQLiteTier, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    pages = tier._query("PRAGMA page_count")[0][0]
    tier._query(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.INFO, logger="stockcache.cache.sqlite"):
        for round_ in range(3):
            tier.set_many(_entries(clock, f"R{round_}", 50))
            with pytest.raises(CacheError):
                tier.flush()
            clock.advance(WRITE_RETRY_SECONDS)
            tier._query(f"PRAGMA max_page_count = {pages}")  # the new connection is as full
        clock.advance(WRITE_RETRY_SECONDS)
        tier.set_many(_entries(clock, "OK", 1))
        tier.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("writes failed (database or disk is full)" in line for line in lines) == 1, lines
    assert sum("writes work again" in line for line in lines) == 1, lines
