"""Shared budgets and cross-instance locks against a real redis-server, on a fake clock.

Each "instance" is its own local Budget (and usage ledger) wrapped in a
SharedBudget on the same Redis, as two processes would have.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache.redis import RedisLink
from stockcache.errors import RateLimited
from stockcache.upstream.guard import Budget, Limits
from stockcache.upstream.shared import PeerLocks, SharedBudget
from stockcache.usage import UsageLedger
from tests.redis_server import RedisServer, own_redis, redis_url  # noqa: F401 (fixtures)


@pytest.fixture
def link(redis_url: str) -> Iterator[RedisLink]:  # noqa: F811
    made = RedisLink(redis_url)
    yield made
    made.close()


def instance(link: RedisLink, clock: Any, limits: Limits, ledger: UsageLedger | None = None) -> SharedBudget:
    return SharedBudget(Budget("finnhub", limits, ledger=ledger, clock=clock), link, clock=clock)


def acquired(budget: SharedBudget, **kwargs: Any) -> bool:
    try:
        budget.acquire(**kwargs)
    except RateLimited:
        return False
    return True


def test_shared_budget_minute_limit_holds_across_instances(link: RedisLink, clock: Any) -> None:
    a, b = (instance(link, clock, Limits(per_minute=5)) for _ in range(2))
    results = [acquired(budget) for budget in (a, b, a, b, a, b, a, b)]
    assert results.count(True) == 5
    with pytest.raises(RateLimited) as refused:
        b.acquire()
    assert 55 <= refused.value.retry_after <= 60 and "all instances" in refused.value.message
    assert a.remaining()["minute"] == b.remaining()["minute"] == 0
    clock.advance(60.1)  # the window slides for everyone
    assert acquired(b) and acquired(a)


def test_shared_budget_counts_units_across_instances(link: RedisLink, clock: Any) -> None:
    """A batch request of Twelve Data costs a credit per symbol: the minute and day windows count units."""
    a, b = (instance(link, clock, Limits(per_minute=8, per_day=20)) for _ in range(2))
    assert acquired(a, units=5)
    assert not acquired(b, units=4)  # 5 + 4 > 8 credits this minute, whichever instance asks
    assert acquired(b, units=3)
    assert a.remaining()["minute"] == 0 and b.remaining()["day"] == 12
    clock.advance(60.1)
    assert acquired(a, units=8)
    clock.advance(60.1)
    assert acquired(b, units=4)
    assert not acquired(a, units=1)  # the day's 20 credits are spent
    assert a.remaining()["day"] == b.remaining()["day"] == 0


def test_shared_budget_smooths_per_second_across_instances(link: RedisLink, clock: Any) -> None:
    a, b = (instance(link, clock, Limits(per_second=2)) for _ in range(2))
    assert a.acquire() == 0.0 and b.acquire() == 0.0
    assert b.acquire() == pytest.approx(1.0)  # the third call this second waits for the next one
    assert a.acquire() == pytest.approx(1.0)
    assert a.acquire() == pytest.approx(2.0) and b.acquire() == pytest.approx(2.0)
    with pytest.raises(RateLimited):
        b.acquire()  # more than max_wait (2 s) ahead: refused, not queued


def test_shared_budget_day_limit_and_share_count_every_instance(link: RedisLink, clock: Any, tmp_path: Path) -> None:
    ledgers = [UsageLedger(tmp_path / f"usage{i}.sqlite", clock=clock) for i in range(2)]
    a, b = (instance(link, clock, Limits(per_day=4), ledger) for ledger in ledgers)
    assert acquired(a) and acquired(b)
    assert not acquired(a, share=0.5)  # the background share (2 of 4) is spent by both together
    assert acquired(b) and acquired(a)
    assert not acquired(b)
    assert a.calls_today() == b.calls_today() == 4
    assert [ledger.today("finnhub") for ledger in ledgers] == [2, 2]  # each instance's own KPIs
    for ledger in ledgers:
        ledger.close()


def test_shared_budget_pause_after_429_stops_every_instance(link: RedisLink, clock: Any) -> None:
    a, b = (instance(link, clock, Limits(per_minute=100)) for _ in range(2))
    a.pause(10)
    with pytest.raises(RateLimited) as refused:
        b.acquire()
    assert refused.value.retry_after == 10
    clock.advance(10)
    assert acquired(b)


def test_shared_budget_keeps_the_local_limit_when_redis_lost_its_counts(
    link: RedisLink, clock: Any, redis_url: str  # noqa: F811
) -> None:
    a = instance(link, clock, Limits(per_minute=3))
    assert [acquired(a) for _ in range(3)] == [True, True, True]
    link.client.flushall()  # e.g. Redis restarted without persistence
    assert not acquired(a)  # this instance alone has already made 3 calls this minute
    assert link.client.zcard("stockcache:budget:{finnhub}:minute") == 0  # the refused slot was given back


def test_shared_budget_falls_back_to_the_local_budget_while_redis_is_down(
    own_redis: RedisServer, clock: Any  # noqa: F811
) -> None:
    link = RedisLink(own_redis.url)
    a = instance(link, clock, Limits(per_minute=2))
    assert acquired(a)
    own_redis.kill()
    assert acquired(a)  # Redis gone: the instance's own budget decides, at once
    assert not acquired(a)
    assert a.remaining()["minute"] == 0 and a.calls_today() == 2
    assert not link.up
    link.close()


def test_peer_locks_one_holder_until_released(link: RedisLink) -> None:
    a, b = PeerLocks(link, ttl=5), PeerLocks(link, ttl=5)
    token = a.acquire("quote:AAPL")
    assert token is not None
    assert b.acquire("quote:AAPL") is None
    assert b.acquire_many(["quote:AAPL", "quote:MSFT"])[0] is None
    b.release("quote:AAPL", "not-the-token")  # only the holder can release
    assert b.acquire("quote:AAPL") is None
    a.release("quote:AAPL", token)
    assert b.acquire("quote:AAPL") is not None


def test_peer_locks_expire_if_the_holder_dies(link: RedisLink) -> None:
    locks = PeerLocks(link, ttl=5)
    assert locks.acquire("quote:AAPL") is not None
    assert 4000 < link.client.pttl("stockcache:lock:quote:AAPL") <= 5000


def test_redis_link_to_a_closed_port_fails_fast_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = RedisLink(f"redis://:s3cret-pw@127.0.0.1:{port}/0")
    for _ in range(5):
        assert not link.probe()
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage
    assert "s3cret-pw" not in caplog.text and link.status()["status"] == "down"
    link.close()
