"""Two service instances sharing one redis-server, as behind a load balancer.

Each instance is a full Runtime with its own data dir (memory, SQLite, user
store) and a real waitress server, both pointed at the same fake upstream and
the same Redis. The fake upstream's call counters are the proof.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from tests.integration.conftest import Api, Live, start_service, upstream_settings
from tests.redis_server import RedisServer, own_redis, redis_url  # noqa: F401 (fixtures)


class Pair:
    """Two running instances and a logged-in client for each (users are per instance)."""

    def __init__(self, tmp_path: Path, upstream: FakeUpstream, url: str, **overrides: Any) -> None:
        self.lives: list[Live] = []
        self.apis: list[Api] = []
        for name in ("a", "b"):
            live = start_service(upstream_settings(tmp_path / name, upstream, redis_url=url, **overrides))
            self.lives.append(live)
            # A JWT issued directly: logging in would spend seconds on argon2 for nothing here.
            user = live.runtime.store.create_user("alice", "unused-hash", is_admin=True)
            self.apis.append(live.api.as_user(live.runtime.auth.issue_jwt(user.id, user.username, True)))

    def stop(self) -> None:
        for live in self.lives:
            live.stop()


@pytest.fixture
def make_pair(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def make(url: str, **overrides: Any) -> Pair:
        pair = Pair(tmp_path, upstream, url, **overrides)
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.stop()


def test_two_instances_symbol_requested_on_both_costs_one_upstream_call(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, redis_url: str  # noqa: F811
) -> None:
    a, b = make_pair(redis_url).apis
    first = a.get("/api/quote/AAPL")
    second = b.get("/api/quote/AAPL")
    assert first.status_code == second.status_code == 200
    assert (first.json()["cache"], second.json()["cache"]) == ("upstream", "redis")
    assert first.json()["price"] == second.json()["price"]
    assert first.json()["fetched_at"] == second.json()["fetched_at"]
    assert upstream.calls(symbol="AAPL") == 1
    assert b.get("/api/quote/AAPL").json()["cache"] == "memory"  # promoted into B's own tiers


def test_two_instances_share_not_found_answers(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, redis_url: str  # noqa: F811
) -> None:
    a, b = make_pair(redis_url).apis
    assert a.get("/api/quote/ZZZZ1").status_code == 404
    answer = b.get("/api/quote/ZZZZ1")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_found"
    assert upstream.calls(symbol="ZZZZ1") == 1


@pytest.mark.parametrize(("symbol", "status"), [("NVDA", 200), ("ZZZZ2", 404)])
def test_two_instances_thirty_concurrent_requests_cost_one_upstream_call(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, redis_url: str,  # noqa: F811
    symbol: str, status: int,
) -> None:
    pair = make_pair(redis_url)
    upstream.latency = 0.3  # long enough that every request arrives while the first is in flight
    start = threading.Barrier(30)
    answers: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def ask(api: Api) -> None:
        client = api.as_user(api.token or "")  # a session of its own per thread
        start.wait(timeout=10)
        answer = client.get(f"/api/quote/{symbol}")
        with lock:
            answers.append((answer.status_code, answer.json().get("price")))

    threads = [threading.Thread(target=ask, args=(pair.apis[i % 2],)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 30 and {code for code, _ in answers} == {status}
    assert len({price for _, price in answers}) == 1  # everyone got the one fetch's answer
    assert upstream.calls(symbol=symbol) == 1


def test_two_instances_stay_within_one_budget_together(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, redis_url: str  # noqa: F811
) -> None:
    pair = make_pair(redis_url, finnhub_per_minute=4, finnhub_per_second=0, alphavantage_per_minute=2)
    a, b = pair.apis
    symbols = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AMD", "INTC", "ORCL", "IBM", "SAP"]
    answers: list[dict[str, Any]] = []

    def batch(api: Api, tickers: list[str]) -> None:
        answers.append(api.post("/api/batch-quotes", json={"tickers": tickers}).json())

    threads = [threading.Thread(target=batch, args=(a, symbols[:6])),
               threading.Thread(target=batch, args=(b, symbols[6:]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Each instance alone would have spent 4 + 2 calls; together they spent that once.
    assert (upstream.calls("finnhub"), upstream.calls("alphavantage")) == (4, 2)
    served = sum(len(answer["quotes"]) for answer in answers)
    refused = [e for answer in answers for e in answer["errors"].values()]
    assert served == 6 and len(refused) == 6
    assert {e["code"] for e in refused} == {"rate_limited"} and all(e["retry_after"] >= 1 for e in refused)
    for api in (a, b):  # both see the shared count
        finnhub = api.get("/api/cache/stats").json()["upstream"]["finnhub"]
        assert finnhub["budget_left"]["minute"] == 0 and finnhub["calls_today"] == 4


def test_instance_waits_for_a_crashed_peer_only_until_the_upstream_timeout(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, redis_url: str  # noqa: F811
) -> None:
    from stockcache.cache.redis import RedisLink
    from stockcache.upstream.shared import PeerLocks

    a, _ = make_pair(redis_url, upstream_timeout=0.5).apis
    link = RedisLink(redis_url)
    try:
        assert PeerLocks(link, ttl=60).acquire("quote:AAPL") is not None  # a peer took it, then died
        started = time.monotonic()
        answer = a.get("/api/quote/AAPL")
        waited = time.monotonic() - started
    finally:
        link.close()
    assert answer.status_code == 200 and answer.json()["cache"] == "upstream"
    assert 0.5 <= waited < 1.0  # waited for the peer's entry, then fetched itself within the deadline
    assert upstream.calls(symbol="AAPL") == 1


def wait_for_health(api: Api, status: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll /healthz until it says ``status`` (the link retries Redis on its own schedule)."""
    deadline = time.monotonic() + timeout
    while True:
        body = api.get("/healthz").json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_two_instances_keep_serving_while_redis_is_killed_and_reconnect_when_it_returns(
    make_pair: Callable[..., Pair], upstream: FakeUpstream, own_redis: RedisServer  # noqa: F811
) -> None:
    a, b = make_pair(own_redis.url).apis
    assert a.get("/api/quote/AAPL").json()["cache"] == "upstream"
    assert b.get("/api/quote/AAPL").json()["cache"] == "redis"
    assert a.get("/healthz").json()["status"] == "ok"

    own_redis.kill()
    for api in (a, b):
        started = time.monotonic()
        fresh = api.get("/api/quote/MSFT")
        cached = api.get("/api/quote/AAPL")
        assert time.monotonic() - started < 2.0  # a dead Redis never stalls a request
        assert fresh.status_code == cached.status_code == 200
        assert cached.json()["cache"] == "memory"
    assert upstream.calls(symbol="MSFT") == 2  # no sharing while Redis is away: each fetched its own
    for api in (a, b):
        health = wait_for_health(api, "degraded")
        assert health["status"] == "degraded"
        assert any("redis is unreachable" in reason for reason in health["reasons"])
        redis_stats = api.get("/api/cache/stats").json()["redis"]
        assert redis_stats["status"] == "down" and redis_stats["errors"] >= 1

    own_redis.start()  # same port, empty
    for api in (a, b):
        assert wait_for_health(api, "ok")["status"] == "ok"
    assert a.get("/api/quote/NVDA").json()["cache"] == "upstream"
    assert b.get("/api/quote/NVDA").json()["cache"] == "redis"  # shared again
    assert upstream.calls(symbol="NVDA") == 1
    assert b.get("/api/cache/stats").json()["redis"]["status"] == "ok"


def test_instance_without_redis_url_never_connects_to_redis(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str  # noqa: F811
) -> None:
    import redis

    watcher = redis.Redis.from_url(redis_url)
    before = watcher.info("stats")["total_connections_received"]
    live = start_service(upstream_settings(tmp_path, upstream))
    try:
        user = live.runtime.store.create_user("alice", "unused-hash")
        api = live.api.as_user(live.runtime.auth.issue_jwt(user.id, user.username, False))
        assert api.get("/api/quote/AAPL").status_code == 200
        assert live.runtime.service.stats()["redis"] is None
    finally:
        live.stop()
    # The watcher reuses its one pooled connection: any new one would be the instance's.
    assert watcher.info("stats")["total_connections_received"] == before


@pytest.mark.parametrize(("value", "px"), [
    ("stuck", None),  # a foreign value with no expiry: the fault as found
    ("stuck", 60_000),  # a foreign value with an expiry: not a lock of ours either
    ("0123456789ab:7", None),  # our format, but no expiry: no instance of ours leaves that
])
def test_instance_heals_a_stale_or_foreign_lock_instead_of_waiting_on_it(
    tmp_path: Path, upstream: FakeUpstream, redis_url: str, value: str, px: int | None,  # noqa: F811
) -> None:
    import redis

    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    live = start_service(upstream_settings(tmp_path, upstream, redis_url=redis_url, upstream_timeout=2.0))
    try:
        user = live.runtime.store.create_user("alice", "unused-hash")
        api = live.api.as_user(live.runtime.auth.issue_jwt(user.id, user.username, False))
        for kind, path in (("quote", "/api/quote/AAPL"), ("profile", "/api/profile/AAPL")):
            raw.set(f"stockcache:lock:{kind}:AAPL", value, px=px)
            started = time.monotonic()
            answer = api.get(path)
            waited = time.monotonic() - started
            assert answer.status_code == 200 and answer.json()["cache"] == "upstream"
            assert waited < 1.0  # not the 2 s a live peer's lock would be waited for
            # Taken over and then released by this instance: the key is free again.
            assert raw.get(f"stockcache:lock:{kind}:AAPL") is None
        assert upstream.calls(symbol="AAPL") == 2
    finally:
        live.stop()
        raw.close()


def test_instance_health_notices_a_dead_redis_without_any_request_and_its_return(
    tmp_path: Path, upstream: FakeUpstream, own_redis: RedisServer  # noqa: F811
) -> None:
    live = start_service(upstream_settings(tmp_path, upstream, redis_url=own_redis.url))
    try:
        assert wait_for_health(live.api, "ok")["status"] == "ok"
        own_redis.kill()
        killed = time.monotonic()
        # Only /healthz is asked, and it does no I/O: the link's own PING has to notice.
        health = wait_for_health(live.api, "degraded", timeout=5.0)
        assert health["status"] == "degraded", health
        assert time.monotonic() - killed <= 5.0
        assert any("redis is unreachable" in reason for reason in health["reasons"])

        own_redis.start()
        back = time.monotonic()
        assert wait_for_health(live.api, "ok", timeout=5.0)["status"] == "ok"
        assert time.monotonic() - back <= 5.0
    finally:
        live.stop()
