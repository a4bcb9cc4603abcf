"""The SQLite tier after failed writes: it drops and counts them, then comes back by itself.

A real full disk is in ``tests/integration/test_disk_full.py``. Here the two
ways sqlitedict's worker fails are produced directly, with a fake clock for
the retry interval: a statement refused for space (``PRAGMA max_page_count``
on the worker's own connection gives SQLITE_FULL, "database or disk is full",
exactly as a full disk does), and a worker thread that has stopped (what
sqlitedict's worker does when its own commit fails).
"""

from __future__ import annotations

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


def test_sqlite_tier_comes_back_after_its_worker_stopped(tier: SQLiteTier, clock: FakeClock) -> None:
    tier.set_many(_entries(clock, "A", 3))
    tier._db.conn.close(force=True)  # the worker thread ends, as when its own commit fails
    tier._db.conn.join(10)
    with pytest.raises(CacheError):
        tier.set_many(_entries(clock, "B", 2))
    assert tier.stats()["writes"] == "failing" and tier.health() is not None
    clock.advance(WRITE_RETRY_SECONDS)
    tier.set_many(_entries(clock, "C", 2))  # a new worker, no restart
    tier.flush()
    assert {"quote:C0", "quote:C1"} <= _on_disk(tier.path)
    assert not {"quote:B0", "quote:B1"} & _on_disk(tier.path)
    stats = tier.stats()
    assert stats["writes"] == "ok" and stats["pending_writes"] == 0 and tier.health() is None
    assert stats["dropped_writes"] >= 2  # B0 and B1 at least; A's three if they were still unconfirmed


def test_sqlite_tier_drops_counts_and_retries_writes_refused_for_space(tier: SQLiteTier, clock: FakeClock) -> None:
    tier.set_many(_entries(clock, "OLD", 5))
    tier.flush()
    pages = tier._query("PRAGMA page_count")[0][0]
    tier._query(f"PRAGMA max_page_count = {pages}")  # "the disk" is full from here on
    worker = tier._db.conn
    tier.set_many(_entries(clock, "NEW", 100))  # queued: the worker meets the error a moment later
    with pytest.raises(CacheError, match="disk is full"):
        tier.flush()
    worker.join(10)  # retired: it finishes its queue (rows after the refused one may land), then stops
    assert not worker.is_alive()
    # Nothing is served from the overlay as if written: what a read finds is in the file (rows
    # after the refused one may have fitted, and are fine), and the batch is counted as dropped.
    new = [f"quote:NEW{i}" for i in range(100)]
    written = {key for key in _on_disk(tier.path) if key.startswith("quote:NEW")}
    assert len(written) < 50  # the disk was full for most of them
    assert set(tier.get_many(new)) == written and (tier.get(new[0]) is None) == (new[0] not in written)
    assert tier.stats()["dropped_writes"] == 100 and tier.stats()["pending_writes"] == 0
    # Until the retry time, writes are refused at once (and counted), not queued.
    with pytest.raises(CacheError):
        tier.set_many(_entries(clock, "MORE", 3))
    assert tier.stats()["dropped_writes"] == 103
    assert tier.get("quote:OLD1") is not None  # reads go on
    # Then a new worker (whose connection has room) takes writes again.
    clock.advance(WRITE_RETRY_SECONDS)
    tier.set_many(_entries(clock, "BACK", 100))
    tier.flush()
    on_disk = _on_disk(tier.path)
    assert {f"quote:BACK{i}" for i in range(100)} <= on_disk
    assert tier.stats()["writes"] == "ok"
