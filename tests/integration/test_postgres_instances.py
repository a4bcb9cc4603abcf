"""Several instances on one PostgreSQL store (and one Redis), as behind a load balancer (issue 19).

Each instance is a full Runtime with its own data dir (memory and SQLite
cache tiers, KPI file) and a real waitress server; users, tokens, portfolios,
watchlists and the JWT key live in one real PostgreSQL. What one instance
writes, the other serves; what one revokes, the other refuses within the
revocation bound; login limits are counted once for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.clock import utc_day
from tests.integration.conftest import Api, Live, start_service, upstream_settings
from tests.integration.test_revocation_bound import BOUND
from tests.postgres_server import PASSWORD, pg_url  # noqa: F401 (fixture)
from tests.redis_server import redis_url  # noqa: F401 (fixture)

SECRET = "correct horse battery"


class Pair:
    """Two running instances on one database; ``admin`` is a client of each, logged in once on A."""

    def __init__(self, tmp_path: Path, upstream: FakeUpstream, database_url: str, **overrides: Any) -> None:
        self.lives: list[Live] = []
        for name in ("a", "b"):
            settings = upstream_settings(tmp_path / name, upstream, database_url=database_url, **overrides)
            self.lives.append(start_service(settings))
        self.a, self.b = self.lives

    def add_user(self, name: str, *, admin: bool = False, on: int = 0) -> tuple[Api, Api]:
        """A user created and logged in on one instance; a client for each instance with that one JWT."""
        live = self.lives[on]
        live.runtime.store.create_user(name, live.runtime.auth.hash_password(SECRET), is_admin=admin)
        answer = live.api.post("/api/auth/login", json={"username": name, "password": SECRET})
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        return self.a.api.as_user(token), self.b.api.as_user(token)

    def stop(self) -> None:
        for live in self.lives:
            live.stop()


@pytest.fixture
def make_pair(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(database_url: str, **overrides: Any) -> Pair:
        pair = Pair(tmp_path, upstream, database_url, **overrides)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.stop()


def _eventually(check: Callable[[], bool], seconds: float) -> float:
    """Poll ``check`` (another instance's watcher acts) until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds + 2:
        if check():
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError("never happened")


def test_postgres_instances_share_users_tokens_and_holdings(
        pg_url: str, redis_url: str, make_pair: Callable[..., Pair]) -> None:  # noqa: F811
    pair = make_pair(pg_url, redis_url=redis_url)
    on_a, on_b = pair.add_user("alice")
    assert on_b.get("/api/me").json()["username"] == "alice"  # a JWT from A: one key for all
    login = pair.b.api.post("/api/auth/login", json={"username": "alice", "password": SECRET})
    assert login.status_code == 200  # the user made on A logs in on B
    created = on_a.post("/api/portfolio", json={"symbol": "AAPL", "shares": 3, "cost_basis": 100})
    assert created.status_code == 201 and created.json()["verified"] is True
    kept = {key: value for key, value in created.json().items() if key != "verified"}
    assert on_b.get("/api/portfolio").json()["positions"] == [kept]
    assert on_a.post("/api/watchlist", json={"symbol": "MSFT"}).status_code == 201
    assert [i["symbol"] for i in on_b.get("/api/watchlist").json()["items"]] == ["MSFT"]
    assert on_b.post("/api/watchlist", json={"symbol": "MSFT"}).status_code == 409  # one store: one watchlist

    token, record = pair.a.runtime.auth.create_api_token("alice", "sheet")
    via_b = pair.b.api.as_user(token)
    assert via_b.get("/api/quote/AAPL").status_code == 200
    assert pair.a.runtime.auth.revoke_api_token(record.id)
    assert _eventually(lambda: via_b.get("/api/quote/AAPL").status_code == 401, BOUND) <= BOUND

    for live in pair.lives:
        health = live.api.get("/healthz").json()
        assert health["status"] == "ok" and health["store"] == {"engine": "postgresql", "status": "ok"}
        assert PASSWORD not in live.api.get("/healthz").text


def test_postgres_instances_removal_and_password_change_reach_the_other_within_the_bound(
        pg_url: str, make_pair: Callable[..., Pair]) -> None:  # noqa: F811
    pair = make_pair(pg_url)
    carol_a, carol_b = pair.add_user("carol")
    dave_a, dave_b = pair.add_user("dave", on=1)
    for client in (carol_b, dave_a):
        assert client.get("/api/quote/AAPL").status_code == 200  # verified and remembered
    changed = carol_a.put("/api/me/password", json={"current": SECRET, "new": "a new passphrase 9"})
    assert changed.status_code == 200
    assert _eventually(lambda: carol_b.get("/api/quote/AAPL").status_code == 401, BOUND) <= BOUND
    assert pair.b.runtime.store.delete_user("dave")
    assert _eventually(lambda: dave_a.get("/api/quote/AAPL").status_code == 401, BOUND) <= BOUND


@pytest.mark.parametrize("with_redis", [True, False], ids=["redis", "database"])
def test_postgres_instances_login_limits_are_not_multiplied(
        pg_url: str, redis_url: str, make_pair: Callable[..., Pair], with_redis: bool) -> None:  # noqa: F811
    pair = make_pair(pg_url, **({"redis_url": redis_url} if with_redis else {}))
    counter = type(pair.a.runtime.auth.limiter.counter).__name__  # type: ignore[union-attr]
    assert counter == ("RedisLoginCounter" if with_redis else "PostgresStore")
    pair.a.runtime.store.create_user("erin", pair.a.runtime.auth.hash_password(SECRET))
    for n in range(5):  # the per-user limit, split over both instances
        live = pair.lives[n % 2]
        wrong = live.api.post("/api/auth/login", json={"username": "erin", "password": f"guess {n}"})
        assert wrong.status_code == 401, wrong.text
    for live in pair.lives:
        refused = live.api.post("/api/auth/login", json={"username": "erin", "password": SECRET})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_postgres_instances_kpis_are_the_sum_over_instances(
        pg_url: str, make_pair: Callable[..., Pair]) -> None:  # noqa: F811
    pair = make_pair(pg_url)
    admin_a, admin_b = pair.add_user("root", admin=True)
    for _ in range(3):
        assert admin_a.get("/api/quote/AAPL").status_code == 200
    for _ in range(5):
        assert admin_b.get("/api/quote/MSFT").status_code == 200
    for live in pair.lives:
        live.runtime.kpis.flush()  # each instance's minute flush, now: it publishes its day
    served = [sum(f.requests for f in live.runtime.kpis.store.rows("0000", "9999").values()) for live in pair.lives]
    calls = [sum(live.runtime.ledger.days(1).get(utc_day(time.time()), {}).values()) for live in pair.lives]
    assert served == [4, 5] and calls == [1, 1]  # A: the login and 3 quotes; AAPL fetched by A, MSFT by B
    today = admin_a.get("/api/kpis?days=1").json()["days"][0]
    assert today["requests"] == served[0] + served[1]  # A's own and B's, as B published them
    assert sum(today["upstream_calls"].values()) == 2  # each instance's ledger, added up
    # B shows A as A last published (at most a flush interval old): A's /api/kpis request not yet.
    assert admin_b.get("/api/kpis?days=1").json()["days"][0]["requests"] == today["requests"]
    pair.a.runtime.kpis.flush()
    assert admin_b.get("/api/kpis?days=1").json()["days"][0]["requests"] == today["requests"] + 2
