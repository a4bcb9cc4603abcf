"""The SQLite tier on a real file: restarts, other processes, JSON on disk, corruption, purge."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache import TieredCache, open_cache
from stockcache.settings import Settings
from tests.unit.conftest_cache import GRACE, QUOTE, TTLS, make_cache

ROOT = Path(__file__).resolve().parents[2]


def db_path(data_dir: Path) -> Path:
    return data_dir / "cache.sqlite"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a second process on the same file)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )


def test_cache_persistence_survives_close_and_reopen(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", QUOTE)
        cache.set("history:AAPL:30", {"candles": [{"close": 1.0}]})
        before = cache.get_entry("quote:AAPL")
    with make_cache(tmp_path, clock) as cache:
        after = cache.get_entry("quote:AAPL")
        assert cache.get("history:AAPL:30") == {"candles": ({"close": 1.0},)}
        assert cache.get_stats()["sqlite"]["size"] == 2
    assert before is not None and after is not None
    assert (after.value, after.stored_at, after.expires_at, after.tier) == (
        before.value, before.stored_at, before.expires_at, "sqlite",
    )


def test_cache_persistence_expiry_survives_reopen(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", QUOTE)
    clock.advance(TTLS["quote"] + 1)
    with make_cache(tmp_path, clock) as cache:
        assert cache.get("quote:AAPL") is None
        stale = cache.get_stale("quote:AAPL")
        assert stale is not None and stale.value == QUOTE


def test_cache_persistence_second_process_reads_what_first_wrote(tmp_path: Path) -> None:
    cache = make_cache(tmp_path, time.time)
    try:
        cache.set("quote:AAPL", QUOTE)
        cache.set("news:AAPL:7", {"articles": []})
        cache.flush()  # committed: visible to other processes while we keep it open
        result = run_python(
            """
            import json, sys
            from stockcache.cache import open_cache
            from stockcache.settings import Settings
            cache = open_cache(sys.argv[1], settings=Settings(), janitor_interval=None)
            entry = cache.get_entry("quote:AAPL")
            print(json.dumps({"tier": entry.tier, "value": entry.value, "news": cache.get("news:AAPL:7")}))
            cache.set("quote:MSFT", {"price": 1.5})
            cache.close()
            """,
            str(tmp_path),
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"tier": "sqlite", "value": QUOTE, "news": {"articles": []}}
        # ...and the first process sees what the second wrote.
        assert cache.get("quote:MSFT") == {"price": 1.5}
    finally:
        cache.close()


def test_cache_persistence_stores_only_json_text(tmp_path: Path, clock: Any) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", QUOTE)
        cache.set("history:AAPL:30", {"candles": [{"close": 1.0}], "note": "ünïcode"})
        cache.set("misc:none", None, ttl=60)
        cache.set_many({f"quote:S{i}": [i, str(i)] for i in range(20)})
    with sqlite3.connect(db_path(tmp_path)) as conn:
        rows = conn.execute("SELECT key, typeof(value), value, expires_at FROM cache").fetchall()
    assert len(rows) == 23
    for key, kind, value, expires_at in rows:
        assert kind == "text", key
        decoded = json.loads(value)
        assert isinstance(decoded, list) and len(decoded) == 3
        assert decoded[2] == expires_at
        assert not value.startswith("\x80")  # no pickle protocol header


def test_cache_persistence_planted_pickle_is_never_unpickled(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Exploit())
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:OK", QUOTE)
    with sqlite3.connect(db_path(tmp_path)) as conn:
        conn.executemany(
            "REPLACE INTO cache (key, value, expires_at) VALUES (?, ?, ?)",
            [("quote:AAPL", payload, clock() + 300), ("quote:MSFT", payload.hex(), None),
             ("quote:TSLA", '{"not": "a triple"}', clock() + 300)],
        )
    with caplog.at_level(logging.WARNING), make_cache(tmp_path, clock) as cache:
        assert cache.get("quote:AAPL") is None
        assert cache.get_many(["quote:AAPL", "quote:MSFT", "quote:TSLA", "quote:OK"]).keys() == {"quote:OK"}
        assert cache.get_stale("quote:AAPL") is None
        assert cache.get_stats()["sqlite"]["bad_rows"] >= 3
        # A later set simply replaces the planted row; purge drops rows without expiry.
        cache.set("quote:AAPL", QUOTE)
        assert cache.get("quote:AAPL") == QUOTE
        assert cache.purge_expired() >= 1
    assert not marker.exists()
    assert "not valid cache JSON" in caplog.text


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _garbled(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):  # the first bytes of every page but page 1
        data[offset : offset + 64] = os.urandom(64)
    path.write_bytes(bytes(data))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", [_garbage, _truncated, _garbled], ids=["garbage", "truncated", "garbled"])
def test_cache_persistence_corrupt_file_is_moved_aside(
    tmp_path: Path, clock: Any, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    with make_cache(tmp_path, clock) as cache:
        cache.set_many({f"quote:S{i}": {"i": i, "pad": "x" * 500} for i in range(300)})
    assert not Path(f"{db_path(tmp_path)}-wal").exists() or os.path.getsize(f"{db_path(tmp_path)}-wal") == 0
    damage(db_path(tmp_path))
    with caplog.at_level(logging.WARNING, logger="stockcache.cache.sqlite"), make_cache(tmp_path, clock) as cache:
        assert cache.get("quote:S1") is None
        assert cache.get_stats()["sqlite"]["size"] == 0
        cache.set("quote:AAPL", QUOTE)
        cache.flush()
        assert cache.get_stats()["sqlite"]["size"] == 1
    moved = sorted(p.name for p in tmp_path.glob("cache.sqlite.corrupt-*"))
    assert len(moved) == 1 and moved[0].endswith("Z")
    assert "corrupt or unreadable" in caplog.text and moved[0] in caplog.text
    with make_cache(tmp_path, clock) as cache:  # the fresh file is fine
        assert cache.get("quote:AAPL") == QUOTE
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1


@pytest.mark.timeout(60)
def test_cache_persistence_empty_file_is_a_fresh_database(tmp_path: Path, clock: Any) -> None:
    db_path(tmp_path).write_bytes(b"")
    with make_cache(tmp_path, clock) as cache:
        cache.set("quote:AAPL", QUOTE)
        assert cache.get("quote:AAPL") == QUOTE
    assert not list(tmp_path.glob("cache.sqlite.corrupt-*"))


def test_cache_persistence_files_are_owner_only(tmp_path: Path, clock: Any) -> None:
    old = os.umask(0o022)
    try:
        cache = make_cache(tmp_path, clock)
    finally:
        os.umask(old)
    try:
        cache.set("quote:AAPL", QUOTE)
        cache.flush()
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{db_path(tmp_path)}{suffix}")
            assert path.exists(), suffix
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, suffix
    finally:
        cache.close()


def test_cache_persistence_tightens_existing_file_mode(tmp_path: Path, clock: Any) -> None:
    make_cache(tmp_path, clock).close()
    os.chmod(db_path(tmp_path), 0o644)
    make_cache(tmp_path, clock).close()
    assert stat.S_IMODE(db_path(tmp_path).stat().st_mode) == 0o600


def test_cache_persistence_file_stops_growing_when_purged(tmp_path: Path, clock: Any) -> None:
    def checkpoint() -> int:
        with sqlite3.connect(db_path(tmp_path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return db_path(tmp_path).stat().st_size

    sizes = []
    with make_cache(tmp_path, clock) as cache:
        for round_ in range(8):
            # New keys every round (symbols come and go), all expiring.
            cache.set_many({f"quote:R{round_}-{i}": {"pad": "x" * 200} for i in range(300)})
            cache.flush()
            clock.advance(TTLS["quote"] + GRACE)
            steps = []
            while removed := cache.purge_expired(limit=100):
                steps.append(removed)
            # 300 rows in SQLite (and the 100 memory holds), at most 100 per tier per step
            assert steps == [200, 100, 100]
            assert cache.get_stats()["sqlite"]["size"] == 0
            sizes.append(checkpoint())
    assert max(sizes[2:]) <= sizes[1], sizes


def test_cache_persistence_open_cache_uses_settings_data_dir(tmp_path: Path, clock: Any) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    cache: TieredCache = open_cache(settings=settings, clock=clock, janitor_interval=None)
    cache.close()
    assert db_path(tmp_path / "fresh").exists()
