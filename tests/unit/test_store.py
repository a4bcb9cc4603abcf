"""The user store as a spec: schema, isolation between users, cascades, durability, permissions."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stockcache.errors import ConfigError, Conflict, InvalidRequest, NotFound, StockcacheError
from stockcache.store import SCHEMA_VERSION, Position, Store, WatchItem, first_run_hint, open_store, store_path
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


# -- users -----------------------------------------------------------------------------


def test_store_create_user_and_look_it_up(store: Store, clock: FakeClock) -> None:
    user = store.create_user("Alice", "the-hash", is_admin=True)
    assert user.username == "Alice" and user.is_admin and user.created_at == "2023-11-14T22:13:20Z"
    assert store.get_user(user.id) == user
    assert store.get_user_by_name("alice") == (user, "the-hash")  # names are case-insensitive
    assert store.list_users() == [user]
    assert store.count_users() == 1
    assert "the-hash" not in repr(user)


def test_store_duplicate_user_is_conflict_whatever_the_case(store: Store) -> None:
    store.create_user("alice", "h")
    with pytest.raises(Conflict):
        store.create_user("ALICE", "h")


def test_store_create_user_refuses_a_bad_name(store: Store) -> None:
    with pytest.raises(InvalidRequest):
        store.create_user("no spaces", "h")


def test_store_unknown_user_is_none(store: Store) -> None:
    assert store.get_user(99) is None
    assert store.get_user_by_name("nobody") is None
    assert store.delete_user("nobody") is False


def test_store_deleted_user_id_is_never_reused(store: Store) -> None:
    # A removed user's unexpired JWT carries their id: it must not name someone new.
    first = store.create_user("alice", "h")
    assert store.delete_user("alice")
    again = store.create_user("alice", "h")
    assert again.id != first.id
    assert store.get_user(first.id) is None


def test_store_set_password_replaces_the_hash(store: Store) -> None:
    user = store.create_user("alice", "old")
    assert store.set_password(user.id, "new")
    assert store.get_user_by_name("alice") == (user, "new")
    assert store.set_password(999, "x") is False


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


# -- API tokens ------------------------------------------------------------------------


def test_store_api_token_lifecycle(store: Store, clock: FakeClock, two_users) -> None:
    alice, _ = two_users
    token = store.create_api_token(alice.id, "abcdefgh", "sha", "sheet")
    assert token.revoked_at is None and token.last_used_at is None and not token.revoked
    found = store.find_api_token("abcdefgh")
    assert found is not None
    assert found[0] == token and found[1] == "sha" and found[2].username == "alice"
    assert store.list_api_tokens(alice.id) == [token]
    clock.now += 10
    assert store.revoke_api_token("abcdefgh") is True
    assert store.revoke_api_token("abcdefgh") is False  # already revoked
    assert store.revoke_api_token("missing!") is False
    found = store.find_api_token("abcdefgh")
    assert found is not None and found[0].revoked_at == "2023-11-14T22:13:30Z"


def test_store_api_token_id_clash_is_conflict_and_unknown_user_not_found(store: Store, two_users) -> None:
    alice, _ = two_users
    store.create_api_token(alice.id, "abcdefgh", "sha", "")
    with pytest.raises(Conflict):
        store.create_api_token(alice.id, "abcdefgh", "sha2", "")
    with pytest.raises(NotFound):
        store.create_api_token(999, "zzzzzzzz", "sha", "")


def test_store_touch_api_token_writes_at_most_once_a_minute(store: Store, clock: FakeClock, two_users) -> None:
    alice, _ = two_users
    store.create_api_token(alice.id, "abcdefgh", "sha", "")
    assert store.touch_api_token("abcdefgh") is True
    clock.now += 59
    assert store.touch_api_token("abcdefgh") is False
    clock.now += 1
    assert store.touch_api_token("abcdefgh") is True
    found = store.find_api_token("abcdefgh")
    assert found is not None and found[0].last_used_at == "2023-11-14T22:14:20Z"


def test_store_list_api_tokens_is_per_user(store: Store, two_users) -> None:
    alice, bob = two_users
    store.create_api_token(alice.id, "aaaaaaaa", "sha", "")
    assert store.list_api_tokens(bob.id) == []


# -- positions: isolation is the point -------------------------------------------------


def test_store_positions_crud(store: Store, clock: FakeClock, two_users) -> None:
    alice, _ = two_users
    p = store.add_position(alice.id, "AAPL", 10, 150.5)
    assert p == Position(id=p.id, symbol="AAPL", shares=10.0, cost_basis=150.5)
    assert p.to_dict() == {"id": p.id, "symbol": "AAPL", "shares": 10.0, "cost_basis": 150.5}
    assert store.list_positions(alice.id) == [p]
    changed = store.update_position(alice.id, p.id, shares=12)
    assert changed == Position(id=p.id, symbol="AAPL", shares=12.0, cost_basis=150.5)
    assert isinstance(changed.shares, float)
    changed = store.update_position(alice.id, p.id, symbol="MSFT", cost_basis=0)
    assert changed == Position(id=p.id, symbol="MSFT", shares=12.0, cost_basis=0.0)
    assert store.update_position(alice.id, p.id) == changed  # nothing to change: still found
    assert store.delete_position(alice.id, p.id) is True
    assert store.delete_position(alice.id, p.id) is False
    assert store.list_positions(alice.id) == []


def test_store_user_cannot_read_or_touch_another_users_position(store: Store, two_users) -> None:
    alice, bob = two_users
    p = store.add_position(alice.id, "AAPL", 10, 150)
    assert store.list_positions(bob.id) == []
    assert store.update_position(bob.id, p.id, shares=1) is None
    assert store.update_position(bob.id, p.id) is None
    assert store.delete_position(bob.id, p.id) is False
    # Another user's id behaves exactly like a missing one.
    assert store.update_position(bob.id, 10_000, shares=1) is None
    assert store.delete_position(bob.id, 10_000) is False
    assert store.list_positions(alice.id) == [p]


def test_store_position_ids_are_not_reused(store: Store, two_users) -> None:
    alice, _ = two_users
    first = store.add_position(alice.id, "AAPL", 1, 1)
    store.delete_position(alice.id, first.id)
    assert store.add_position(alice.id, "AAPL", 1, 1).id != first.id


def test_store_position_for_missing_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_position(12345, "AAPL", 1, 1)


@pytest.mark.parametrize(
    ("shares", "cost"), [(0, 1), (-1, 1), (1, -0.01), (float("nan"), 1), (1, float("nan"))]
)
def test_store_check_constraints_refuse_bad_numbers(store: Store, two_users, shares: float, cost: float) -> None:
    # The last line of defence behind validate.position_input.
    alice, _ = two_users
    with pytest.raises(InvalidRequest):
        store.add_position(alice.id, "AAPL", shares, cost)
    p = store.add_position(alice.id, "AAPL", 1, 1)
    with pytest.raises(InvalidRequest):
        store.update_position(alice.id, p.id, shares=shares, cost_basis=cost)
    assert store.list_positions(alice.id) == [p]


# -- watchlist -------------------------------------------------------------------------


def test_store_watchlist_add_list_remove(store: Store, clock: FakeClock, two_users) -> None:
    alice, _ = two_users
    item = store.add_watch(alice.id, "AAPL")
    assert item == WatchItem(symbol="AAPL", added_at="2023-11-14T22:13:20Z")
    clock.now += 5
    store.add_watch(alice.id, "MSFT")
    assert [w.symbol for w in store.list_watchlist(alice.id)] == ["AAPL", "MSFT"]
    assert item.to_dict() == {"symbol": "AAPL", "added_at": "2023-11-14T22:13:20Z"}
    assert store.remove_watch(alice.id, "AAPL") is True
    assert store.remove_watch(alice.id, "AAPL") is False


def test_store_watch_twice_is_conflict(store: Store, two_users) -> None:
    alice, _ = two_users
    store.add_watch(alice.id, "AAPL")
    with pytest.raises(Conflict) as info:
        store.add_watch(alice.id, "AAPL")
    assert info.value.fields["symbol"] == "AAPL"


def test_store_user_cannot_see_or_remove_another_users_watch(store: Store, two_users) -> None:
    alice, bob = two_users
    store.add_watch(alice.id, "AAPL")
    assert store.list_watchlist(bob.id) == []
    assert store.remove_watch(bob.id, "AAPL") is False
    store.add_watch(bob.id, "AAPL")  # the same symbol is no conflict for another user
    assert store.remove_watch(bob.id, "AAPL") is True
    assert [w.symbol for w in store.list_watchlist(alice.id)] == ["AAPL"]


def test_store_watch_for_missing_user_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.add_watch(12345, "AAPL")


def test_store_held_symbols_covers_portfolios_and_watchlists(store: Store, two_users) -> None:
    alice, bob = two_users
    assert store.held_symbols() == set()
    store.add_position(alice.id, "AAPL", 1, 1)
    store.add_position(bob.id, "AAPL", 1, 1)
    store.add_watch(bob.id, "MSFT")
    assert store.held_symbols() == {"AAPL", "MSFT"}


def test_store_held_symbol_counts_counts_each_user_once_and_forgets_deleted_users(
        store: Store, two_users) -> None:
    alice, bob = two_users
    carol = store.create_user("carol", "hash-c")
    assert store.held_symbol_counts() == {}
    store.add_position(alice.id, "AAPL", 1, 1)
    store.add_position(alice.id, "AAPL", 2, 3)  # two lots and a watch: alice is still one holder
    store.add_watch(alice.id, "AAPL")
    store.add_watch(bob.id, "AAPL")
    store.add_position(bob.id, "MSFT", 1, 1)
    store.add_watch(carol.id, "AAPL")
    store.add_watch(carol.id, "NVDA")
    assert store.held_symbol_counts() == {"AAPL": 3, "MSFT": 1, "NVDA": 1}
    assert store.delete_user("carol")  # the cascade takes her holdings out of the counts
    assert store.remove_watch(bob.id, "AAPL")
    assert store.held_symbol_counts() == {"AAPL": 1, "MSFT": 1}


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


def test_store_is_usable_from_many_threads_at_once(store: Store) -> None:
    users = [store.create_user(f"user{i}", "h") for i in range(8)]
    errors: list[BaseException] = []

    def work(user_id: int) -> None:
        try:
            for n in range(20):
                p = store.add_position(user_id, f"S{n}", n + 1, n)
                store.update_position(user_id, p.id, shares=n + 2)
                store.list_positions(user_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u.id,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for u in users:
        assert len(store.list_positions(u.id)) == 20
    assert store.integrity_check() == "ok"


def test_store_connection_settings_are_durable(store: Store) -> None:
    conn = store._conn()  # white-box: the pragmas are the durability guarantee
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
