"""The SQLite store's own facts: the file, its modes and pragmas, its schema version, surviving SIGKILL.

What every engine does alike (users, tokens, isolation, cascades) is the
contract in tests/integration/test_store_contract.py, run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stockcache.errors import ConfigError, StockcacheError
from stockcache.store import SCHEMA_VERSION, SqliteStore, Store, first_run_hint, open_store, store_path
from stockcache.store.schema import MIGRATIONS

from ..conftest import FakeClock

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock):
    s = open_store(tmp_path, clock=clock)
    yield s
    s.close()


@pytest.fixture
def two_users(store: Store):
    return store.create_user("alice", "hash-a"), store.create_user("bob", "hash-b")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- schema and opening ----------------------------------------------------------------


def test_store_open_creates_schema_from_empty(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        assert s.path == tmp_path / "store.sqlite"
        assert s.integrity_check() == "ok"
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "api_tokens", "positions", "watchlist"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_store_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    with open_store(tmp_path) as s:
        user = s.create_user("alice", "h")
        s.add_position(user.id, "AAPL", 1, 2)
    for _ in range(2):
        with open_store(tmp_path / "store.sqlite") as s:
            assert [u.username for u in s.list_users()] == ["alice"]
            assert [p.symbol for p in s.list_positions(user.id)] == ["AAPL"]


def test_store_refuses_newer_schema_version(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ConfigError, match="schema version .* upgrade stockcache"):
        open_store(tmp_path)


def test_store_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot be opened"):
        open_store(tmp_path)


def test_store_file_is_created_0600_with_wal_files_too(tmp_path: Path) -> None:
    with open_store(tmp_path / "sub" / "store.sqlite") as s:
        s.create_user("alice", "h")  # a write, so -wal and -shm exist
        files = sorted(p for p in (tmp_path / "sub").iterdir() if p.name.startswith("store.sqlite"))
        assert {p.name for p in files} >= {"store.sqlite", "store.sqlite-wal"}
        for path in files:
            assert _mode(path) == 0o600, path
    assert _mode(tmp_path / "sub") == 0o700


def test_store_tightens_a_world_readable_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    open_store(tmp_path).close()
    os.chmod(tmp_path / "store.sqlite", 0o644)
    with open_store(tmp_path):
        pass
    assert _mode(tmp_path / "store.sqlite") == 0o600
    assert "tightened to 0600" in caplog.text


def test_store_closed_refuses_calls(tmp_path: Path) -> None:
    s = open_store(tmp_path)
    s.close()
    with pytest.raises(StockcacheError, match="closed"):
        s.list_users()


def test_store_path_is_inside_the_data_dir(tmp_path: Path) -> None:
    assert store_path(tmp_path) == tmp_path / "store.sqlite"


def test_store_first_run_hint_names_the_command_and_data_dir(tmp_path: Path) -> None:
    hint = first_run_hint(tmp_path / "my data")
    assert "stockcache users add admin --admin --data-dir" in hint
    assert f"'{tmp_path / 'my data'}'" in hint  # quoted for the shell


def test_store_first_run_hint_command_works_from_any_folder(tmp_path: Path) -> None:
    """Pasted from a folder holding a ``stockcache/`` directory (a clone's parent), it still runs."""
    import subprocess

    (tmp_path / "stockcache").mkdir()
    line = next(ln for ln in first_run_hint(tmp_path / "data").splitlines() if "users add" in ln)
    command = line.strip().split(" users add")[0]
    result = subprocess.run(f"{command} users list --data-dir {tmp_path / 'data'}", shell=True, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# -- what only SQLite can show -----------------------------------------------------------


def test_store_delete_user_cascades_to_everything_they_own(store: Store, two_users) -> None:
    alice, bob = two_users
    store.add_position(alice.id, "AAPL", 1, 1)
    store.add_watch(alice.id, "MSFT")
    store.create_api_token(alice.id, "tokenid1", "hash", "laptop")
    store.add_position(bob.id, "TSLA", 1, 1)
    assert store.delete_user("alice")
    assert store.list_positions(alice.id) == []
    assert store.list_watchlist(alice.id) == []
    assert store.find_api_token("tokenid1") is None
    assert store.held_symbols() == {"TSLA"}  # bob's rows untouched
    conn = sqlite3.connect(store.path)
    assert conn.execute("SELECT count(*) FROM positions WHERE user_id = ?", (alice.id,)).fetchone()[0] == 0
    conn.close()


# -- concurrency and durability --------------------------------------------------------


def test_store_write_is_visible_to_another_connection_when_the_call_returns(store: Store, two_users) -> None:
    alice, _ = two_users
    p = store.add_position(alice.id, "AAPL", 3, 4)
    other = sqlite3.connect(store.path)
    try:
        assert other.execute("SELECT symbol, shares FROM positions WHERE id = ?", (p.id,)).fetchone() == ("AAPL", 3.0)
    finally:
        other.close()


def test_store_acknowledged_write_survives_the_writer_being_killed(tmp_path: Path) -> None:
    # The writer process gets SIGKILL right after the call returns, never closing the store.
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from stockcache.store import open_store\n"
        "s = open_store(Path(sys.argv[1]))\n"
        "u = s.create_user('alice', 'h')\n"
        "s.add_position(u.id, 'AAPL', 7, 8)\n"
        "s.add_watch(u.id, 'MSFT')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=60)
    assert done.returncode == -9, done.stderr
    with open_store(tmp_path) as s:
        user = s.get_user_by_name("alice")
        assert user is not None
        assert [(p.symbol, p.shares) for p in s.list_positions(user[0].id)] == [("AAPL", 7.0)]
        assert [w.symbol for w in s.list_watchlist(user[0].id)] == ["MSFT"]
        assert s.integrity_check() == "ok"


def test_store_connection_settings_are_durable(store: SqliteStore) -> None:
    conn = store._conn()  # white-box: the pragmas are the durability guarantee
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
