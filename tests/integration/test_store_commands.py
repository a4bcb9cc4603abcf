"""``store migrate`` and ``store copy`` through the real command line, and a box moved onto PostgreSQL.

The round trip: users, tokens, a portfolio and a watchlist made on one box
(SQLite), copied into an empty PostgreSQL database, then served from there
by an instance: the same passwords log in, the same API token and even the
same JWT still work (the key went along), ids carry on past the box's.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.fake_upstream import FakeUpstream
from stockcache.store import SCHEMA_VERSION, open_store
from stockcache.store.postgres import open_postgres_store
from tests.integration.conftest import start_service, upstream_settings
from tests.integration.test_cli_users import PASSWORD, run
from tests.postgres_server import PASSWORD as DB_PASSWORD
from tests.postgres_server import pg_url  # noqa: F401 (fixture)


def _kept(answer) -> dict:
    """A created position as the portfolio lists it (without the add's ``verified``)."""
    assert answer.status_code == 201, answer.text
    return {key: value for key, value in answer.json().items() if key != "verified"}


def test_store_migrate_creates_and_then_finds_the_schema_on_both_engines(
        tmp_path: Path, pg_url: str) -> None:  # noqa: F811
    data = tmp_path / "data"
    first = run(data, "store", "migrate")
    assert first.returncode == 0, first.stderr
    assert f"migrated from schema version 0 to {SCHEMA_VERSION}" in first.stderr
    again = run(data, "store", "migrate")
    assert again.returncode == 0 and f"already at schema version {SCHEMA_VERSION}" in again.stderr
    env = {"STOCKCACHE_DATABASE_URL": pg_url}
    on_pg = run(data, "store", "migrate", env=env)
    assert on_pg.returncode == 0, on_pg.stderr
    assert f"to {SCHEMA_VERSION}" in on_pg.stderr and "stockcache:***@" in on_pg.stderr
    assert DB_PASSWORD not in on_pg.stdout + on_pg.stderr
    assert f"already at schema version {SCHEMA_VERSION}" in run(data, "store", "migrate", env=env).stderr


def test_store_migrate_upgrades_a_version_1_sqlite_store_in_place(tmp_path: Path) -> None:
    """A store.sqlite made before migration 2 keeps its rows and gains the new columns."""
    from stockcache.store.schema import for_dialect

    path = tmp_path / "store.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in for_dialect("sqlite")[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users (username, password_hash, created_at) VALUES ('old', 'h', '2024-01-01T00:00:00Z')")
    conn.execute("INSERT INTO api_tokens (id, user_id, token_hash, created_at) VALUES ('abcdefgh', 1, 'x', 'now')")
    conn.close()
    done = run(tmp_path, "store", "migrate")
    assert done.returncode == 0 and f"from schema version 1 to {SCHEMA_VERSION}" in done.stderr, done.stderr
    with open_store(tmp_path) as store:
        found = store.get_user_by_name("old")
        assert found is not None and found[0].password_version == 0
        token = store.find_api_token("abcdefgh")
        assert token is not None and token[0].scope == "full"


def test_store_copy_round_trip_to_postgresql(tmp_path: Path, pg_url: str, upstream: FakeUpstream) -> None:  # noqa: F811
    data = tmp_path / "box"
    for name in ("alice", "bob", "gone"):
        assert run(data, "users", "add", name, stdin=PASSWORD + "\n").returncode == 0
    assert run(data, "users", "remove", "gone").returncode == 0  # its id must never come back
    token = run(data, "tokens", "create", "alice", "--label", "sheet").stdout.strip()
    box = start_service(upstream_settings(data.parent, upstream, data_dir=data))
    try:
        login = box.api.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
        jwt = login.json()["access_token"]
        alice = box.api.as_user(jwt)
        # MSFT by its ISIN: the position keeps it, and so must the copy.
        positions = [_kept(alice.post("/api/portfolio", json={**held, "shares": n, "cost_basis": 10.5}))
                     for n, held in enumerate([{"symbol": "AAPL"}, {"isin": "US5949181045"}], start=1)]
        assert positions[1]["symbol"] == "MSFT" and positions[1]["isin"] == "US5949181045"
        for symbol in ("NVDA", "AMD", "TSLA"):
            assert alice.post("/api/watchlist", json={"symbol": symbol}).status_code == 201
        watched = [item["symbol"] for item in alice.get("/api/watchlist").json()["items"]]
        me = box.runtime.store.get_user_by_name("alice")
        assert me is not None
        alert = box.runtime.store.add_alert(me[0].id, "AAPL", "above", 1.0, "phone", "note")
        fired = box.runtime.store.fire_alert(alert.id, observed=2.0, at=1_700_000_000.0)
        assert fired is not None
        box.runtime.store.finish_delivery(fired.id, status="delivered", attempts=1)
        alerts_before = box.runtime.store.list_alerts(me[0].id)
        history_before = box.runtime.store.alert_history(me[0].id)
    finally:
        box.stop()
    with open_store(data) as store:
        highest_user = store.sequence_floor("users")

    copied = run(data, "store", "copy", "--to", pg_url)
    assert copied.returncode == 0, copied.stderr
    assert ("Copied 2 users, 1 API token, 2 positions, 3 watchlist items, 1 alert and 1 alert delivery record"
            in copied.stderr)
    assert "JWT signing key" in copied.stderr and DB_PASSWORD not in copied.stdout + copied.stderr

    moved = start_service(upstream_settings(tmp_path / "instance", upstream, database_url=pg_url))
    try:
        again = moved.api.as_user(jwt)  # the same JWT: the key went along
        assert again.get("/api/me").json()["username"] == "alice"
        assert again.get("/api/portfolio").json()["positions"] == positions
        assert [item["symbol"] for item in again.get("/api/watchlist").json()["items"]] == watched
        assert moved.api.as_user(token).get("/api/me").status_code == 200  # the API token too
        relogin = moved.api.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
        assert relogin.status_code == 200
        new = moved.runtime.store.create_user("carol", "h")
        assert new.id > highest_user  # past every id the box handed out, the removed one's too
        assert moved.runtime.store.add_position(new.id, "X", 1, 1).id > max(p["id"] for p in positions)
        assert moved.runtime.store.list_alerts(me[0].id) == alerts_before  # fired stays fired: no second firing
        assert moved.runtime.store.alert_history(me[0].id) == history_before
        assert moved.runtime.store.add_alert(new.id, "X", "below", 1, "phone").id > alert.id
    finally:
        moved.stop()

    refused = run(data, "store", "copy", "--to", pg_url)  # the target is no longer empty
    assert refused.returncode == 1 and "nothing copied" in refused.stderr and "already holds" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and DB_PASSWORD not in refused.stderr
    with open_postgres_store(pg_url) as target:
        assert [u.username for u in target.list_users()] == ["alice", "bob", "carol"]


def test_store_copy_without_a_store_or_a_target_says_so(tmp_path: Path) -> None:
    done = run(tmp_path / "empty", "store", "copy", "--to", "postgresql://u:pw-secret@127.0.0.1:1/db")
    assert done.returncode == 1 and "no store to copy" in done.stderr and "pw-secret" not in done.stderr
    assert not (tmp_path / "empty" / "store.sqlite").exists()
    assert run(tmp_path, "users", "add", "x", stdin=PASSWORD + "\n").returncode == 0
    done = run(tmp_path, "store", "copy")
    assert done.returncode == 2 and "--to" in done.stderr


def test_store_stats_show_the_database_masked(tmp_path: Path, pg_url: str, upstream: FakeUpstream) -> None:  # noqa: F811
    import json

    live = start_service(upstream_settings(tmp_path, upstream, database_url=pg_url))
    try:
        live.runtime.kpis.flush()  # the minute's snapshot, now
    finally:
        live.stop()
    env = {"STOCKCACHE_DATABASE_URL": pg_url}
    shown = run(tmp_path / "data", "stats", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["store"].startswith("postgresql://stockcache:***@")
    assert report["server"]["store"]["engine"] == "postgresql" and "***" in report["server"]["store"]["location"]
    table = run(tmp_path / "data", "stats", env=env)
    assert table.returncode == 0 and "stockcache:***@" in table.stdout
    for text in (shown.stdout, shown.stderr, table.stdout, table.stderr):
        assert DB_PASSWORD not in text
