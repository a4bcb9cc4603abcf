"""Budgets and the circuit breaker, with a fake clock."""

from __future__ import annotations

import threading

import pytest

from stockcache.clock import seconds_to_utc_midnight
from stockcache.errors import RateLimited
from stockcache.upstream.guard import Budget, CircuitBreaker, Limits, share_cap
from stockcache.usage import UsageLedger


def test_budget_minute_limit_refuses_at_once_with_retry_after(clock):
    budget = Budget("finnhub", Limits(per_minute=3), clock=clock)
    assert [budget.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.advance(20)
    with pytest.raises(RateLimited) as info:
        budget.acquire()
    assert info.value.retry_after == 40
    clock.advance(40)
    assert budget.acquire() == 0.0


def test_budget_per_second_limit_smooths_with_a_short_wait(clock):
    budget = Budget("alphavantage", Limits(per_second=1), clock=clock, max_wait=2.0)
    assert budget.acquire() == 0.0
    assert budget.acquire() == pytest.approx(1.0)
    assert budget.acquire() == pytest.approx(2.0)
    with pytest.raises(RateLimited):
        budget.acquire()  # a third second of queueing is refused instead


def test_budget_day_limit_counts_survive_a_restart(tmp_path, clock):
    ledger = UsageLedger(tmp_path / "usage.sqlite", clock=clock)
    budget = Budget("alphavantage", Limits(per_day=2), ledger=ledger, clock=clock)
    budget.acquire()
    budget.acquire()
    ledger.close()
    reopened = Budget("alphavantage", Limits(per_day=2),
                      ledger=UsageLedger(tmp_path / "usage.sqlite", clock=clock), clock=clock)
    with pytest.raises(RateLimited) as info:
        reopened.acquire()
    assert 0 < info.value.retry_after <= 86400
    clock.advance(info.value.retry_after)
    assert reopened.acquire() == 0.0  # a new UTC day


def test_budget_share_leaves_room_for_interactive_calls(clock):
    budget = Budget("finnhub", Limits(per_minute=10), clock=clock)
    for _ in range(5):
        budget.acquire(share=0.5)
    with pytest.raises(RateLimited):
        budget.acquire(share=0.5)
    assert budget.acquire() == 0.0


def test_budget_pause_after_429(clock):
    budget = Budget("finnhub", Limits(), clock=clock)
    budget.pause(30)
    with pytest.raises(RateLimited) as info:
        budget.acquire()
    assert info.value.retry_after == 30
    clock.advance(30)
    assert budget.acquire() == 0.0


def test_budget_is_never_exceeded_by_concurrent_callers(clock):
    budget = Budget("finnhub", Limits(per_minute=50), clock=clock)
    granted = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(20):
            try:
                budget.acquire()
                granted.append(1)
            except RateLimited:
                pass

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50
    assert budget.remaining()["minute"] == 0


def test_breaker_opens_after_failures_and_probes_once(clock):
    breaker = CircuitBreaker(threshold=3, reset_after=10, clock=clock)
    for _ in range(3):
        assert breaker.allow() is None
        breaker.failure()
    assert breaker.state == "open"
    assert breaker.allow() == pytest.approx(10)
    clock.advance(10)
    assert breaker.allow() is None  # the probe
    assert breaker.allow() is not None  # only one probe at a time
    breaker.failure()
    clock.advance(10)
    assert breaker.allow() is not None  # the reset doubled to 20 s
    clock.advance(10)
    assert breaker.allow() is None
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() is None


def test_breaker_counts_one_failing_symbol_once_and_distinct_symbols_each(clock):
    breaker = CircuitBreaker(threshold=3, reset_after=10, clock=clock)
    for _ in range(10):
        breaker.failure("BAD")  # one symbol the provider keeps choking on
    assert breaker.state == "closed"
    breaker.failure("A")
    breaker.failure("B")  # three distinct symbols: the provider itself is failing
    assert breaker.state == "open"
    clock.advance(10)
    assert breaker.allow() is None
    breaker.failure("BAD")  # a failed probe re-opens, whatever symbol it was for
    assert breaker.state == "open" and breaker.allow() == pytest.approx(20)
    clock.advance(20)
    assert breaker.allow() is None
    breaker.success()  # a success forgets the failed symbols
    breaker.failure("BAD")
    breaker.failure("A")
    assert breaker.state == "closed"


def test_breaker_failures_without_a_symbol_always_count(clock):
    breaker = CircuitBreaker(threshold=3, reset_after=10, clock=clock)
    breaker.failure("BAD")
    breaker.failure()
    breaker.failure()  # a refused key or connection: the same cause for every symbol
    assert breaker.state == "open"


def test_breaker_release_frees_an_unused_probe(clock):
    breaker = CircuitBreaker(threshold=1, reset_after=5, clock=clock)
    breaker.failure()
    clock.advance(5)
    assert breaker.allow() is None
    breaker.release()
    assert breaker.allow() is None


def test_budget_day_limit_counts_the_calls_of_another_process(tmp_path, clock):
    path = tmp_path / "usage.sqlite"
    server_ledger = UsageLedger(path, clock=clock, flush_interval=None)
    server = Budget("alphavantage", Limits(per_day=3), ledger=server_ledger, clock=clock)
    warm_ledger = UsageLedger(path, clock=clock, flush_interval=None)  # e.g. a cron'd `warm`
    warm = Budget("alphavantage", Limits(per_day=3), ledger=warm_ledger, clock=clock)
    for _ in range(3):
        warm.acquire()
    warm_ledger.flush()
    server_ledger.flush()  # the server's flusher runs about once a second
    assert server.remaining()["day"] == 0 and server.calls_today() == 3
    with pytest.raises(RateLimited) as info:
        server.acquire()
    assert "daily budget spent" in str(info.value)
    server_ledger.close()
    warm_ledger.close()


def test_budget_day_limit_shared_calls_add_up_across_processes(tmp_path, clock):
    path = tmp_path / "usage.sqlite"
    ledgers = [UsageLedger(path, clock=clock, flush_interval=None) for _ in range(2)]
    budgets = [Budget("alphavantage", Limits(per_day=3), ledger=ledger, clock=clock) for ledger in ledgers]
    budgets[0].acquire()
    budgets[1].acquire()
    for ledger in ledgers:
        ledger.flush()
    assert budgets[0].acquire() == 0.0  # 3 of 3 used between the two
    ledgers[0].flush()
    ledgers[1].flush()
    with pytest.raises(RateLimited):
        budgets[1].acquire()
    for ledger in ledgers:
        ledger.close()


@pytest.mark.parametrize(("limit", "share", "cap"), [(25, 1.0, 25), (25, 0.5, 12), (3, 0.2, 1), (60, 0.25, 15)])
def test_budget_share_cap_is_what_a_background_caller_may_spend(limit, share, cap):
    assert share_cap(limit, share) == cap


def test_budget_daily_refusal_retries_at_the_next_utc_midnight(clock):
    clock.set(86400 * 20_000 + 86400 - 90.5)  # 90.5 s before a UTC midnight
    budget = Budget("alphavantage", Limits(per_day=1), clock=clock)
    budget.acquire()
    with pytest.raises(RateLimited) as info:
        budget.acquire()
    assert info.value.retry_after == 91
    assert seconds_to_utc_midnight(clock()) == pytest.approx(90.5)


def test_budget_counts_units_in_the_minute_and_day_windows_and_calls_in_the_second(clock):
    budget = Budget("twelvedata", Limits(per_second=1, per_minute=8, per_day=10), clock=clock)
    assert budget.acquire(units=5) == 0.0  # one request for five symbols: five credits
    with pytest.raises(RateLimited):
        budget.acquire(units=4)  # 9 > 8 credits this minute
    assert budget.acquire(units=3) == pytest.approx(1.0)  # the second window counts requests
    assert budget.remaining()["minute"] == 0 and budget.calls_today() == 8
    clock.advance(61)
    with pytest.raises(RateLimited) as refused:
        budget.acquire(units=3)  # 11 > 10 credits today
    assert "daily" in refused.value.message
