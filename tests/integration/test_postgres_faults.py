"""The PostgreSQL store when things go wrong: the database stops, an instance is killed, the URL is bad.

- The database stopped while instances run: market data keeps serving the
  clients already signed in, /healthz says degraded, store routes answer a
  JSON 503 ``store_unavailable`` at once; when it is back, the instance
  reconnects by itself.
- SIGKILL during writes: every write a client saw acknowledged is in the database.
- Start-up with an unreachable database: one line, exit 2, no password shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.crash_kill import CrashRun
from bench.fake_upstream import FakeUpstream
from tests.integration.conftest import start_service, upstream_settings
from tests.integration.test_cli_users import run
from tests.postgres_server import PASSWORD, PostgresServer, own_postgres, pg_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(180)


def _within(check: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``check`` against a deadline: another process (the database) changed state."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_postgres_database_stopped_and_started_while_the_instance_runs(
        own_postgres: PostgresServer, tmp_path: Path, upstream: FakeUpstream) -> None:  # noqa: F811
    url = own_postgres.create_database()
    live = start_service(upstream_settings(tmp_path, upstream, database_url=url))
    try:
        admin = live.add_user("root", admin=True)
        token, _ = live.runtime.auth.create_api_token("root", "script")
        script = live.api.as_user(token)
        for client in (admin, script):
            assert client.get("/api/quote/AAPL").status_code == 200

        own_postgres.stop()
        _within(lambda: live.api.get("/healthz").json()["status"] == "degraded", 10, "health degraded")
        health = live.api.get("/healthz").json()
        assert health["store"] == {"engine": "postgresql", "status": "unavailable"}
        assert any("store" in reason for reason in health["reasons"]) and PASSWORD not in str(health)

        # Market data keeps serving the clients already signed in, from the caches and upstream.
        for client in (admin, script):
            assert client.get("/api/quote/AAPL").status_code == 200
            assert client.get("/api/quote/MSFT").status_code == 200
        # What needs the store is a JSON 503 at once, not a wait for a connect timeout.
        started = time.monotonic()
        for answer in (admin.post("/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 1}),
                       admin.get("/api/portfolio"),
                       live.api.post("/api/auth/login", json={"username": "root", "password": "whatever 123"})):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Content-Type"].startswith("application/json")
            assert answer.json()["error"]["code"] == "store_unavailable"
            assert int(answer.headers["Retry-After"]) > 0 and PASSWORD not in answer.text
        assert time.monotonic() - started < 2.0
        stranger = live.api.get("/api/quote/AAPL", token="sc_abcdefgh_" + "x" * 43)
        assert stranger.status_code == 503  # a token never verified cannot be checked now

        own_postgres.start()
        _within(lambda: live.api.get("/healthz").json()["status"] == "ok", 15, "health ok again")
        added = admin.post("/api/portfolio", json={"symbol": "AAPL", "shares": 2, "cost_basis": 3})
        assert added.status_code == 201, added.text
        kept = {key: value for key, value in added.json().items() if key != "verified"}
        assert admin.get("/api/portfolio").json()["positions"] == [kept]
    finally:
        live.stop()


def test_postgres_sigkill_during_writes_loses_no_acknowledged_write(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    report = CrashRun(tmp_path / "data", rounds=3, clients=3, seed=19, max_acks=30, database_url=pg_url).run()
    assert report.ok, "\n".join(report.problems)
    assert report.acknowledged >= 3 * 5 and len(report.restart_seconds) == 3
    assert "store.sqlite" not in report.files  # the users and their writes were in PostgreSQL


def test_postgres_unreachable_at_start_is_one_line_exit_2_without_the_password(tmp_path: Path) -> None:
    dead = PostgresServer()  # never started: nothing listens on its port
    try:
        url = dead.url("stockcache")
        done = run(tmp_path / "data", "serve", "--port", "0", env={"STOCKCACHE_DATABASE_URL": url})
    finally:
        dead.destroy()
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "STOCKCACHE_DATABASE_URL" in lines[0] and "cannot reach" in lines[0], done.stderr
    assert PASSWORD not in done.stderr and "stockcache:***@" in done.stderr
    assert not (tmp_path / "data" / "store.sqlite").exists()


@pytest.mark.parametrize("url", ["mysql://u:hunter22@h/db", "postgresql://u:hunter22@h:notaport/db"])
def test_postgres_bad_url_is_one_line_exit_2_without_the_password(tmp_path: Path, url: str) -> None:
    done = run(tmp_path / "data", "users", "list", env={"STOCKCACHE_DATABASE_URL": url})
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "STOCKCACHE_DATABASE_URL" in done.stderr
    assert "hunter22" not in done.stderr
