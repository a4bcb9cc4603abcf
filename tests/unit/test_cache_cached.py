"""The ``cached`` decorator: its own key namespace, unambiguous keys, one computation for concurrent callers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stockcache.cache import TieredCache
from tests.unit.conftest_cache import TTLS, make_cache


@pytest.fixture
def cache(tmp_path: Path, clock: Any) -> Iterator[TieredCache]:
    made = make_cache(tmp_path, clock)
    yield made
    made.close()


def test_cache_cached_computes_once_per_ttl(cache: TieredCache, clock: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    @cache.cached("fundamentals", key_prefix="profile")
    def load_profile(symbol: str, *, full: bool = False) -> dict[str, Any]:
        calls.append((symbol, full))
        return {"symbol": symbol, "peers": ["X"]}

    assert load_profile("AAPL") == {"symbol": "AAPL", "peers": ("X",)}
    assert load_profile("AAPL") == {"symbol": "AAPL", "peers": ("X",)}
    load_profile("AAPL", full=True)
    load_profile("MSFT")
    assert calls == [("AAPL", False), ("AAPL", True), ("MSFT", False)]
    clock.advance(TTLS["fundamentals"])
    load_profile("AAPL")
    assert len(calls) == 4


def test_cache_cached_keys_live_in_their_own_namespace(cache: TieredCache) -> None:
    # The README's example: key_prefix="profile" beside the service's own profile:AAPL.
    service_entry = {"data": {"symbol": "AAPL", "name": "Apple Inc"}, "source": "finnhub", "fetched_at": 1.0}
    cache.set("profile:AAPL", service_entry, ttl_level="fundamentals")

    @cache.cached(ttl_level="fundamentals", key_prefix="profile")
    def load_profile(symbol: str) -> dict[str, Any]:
        return {"symbol": symbol, "mine": True}

    assert load_profile("AAPL") == {"symbol": "AAPL", "mine": True}  # not the service's record
    assert cache.get("profile:AAPL") == service_entry  # and the service's record is untouched
    key = load_profile.cache_key("AAPL")  # type: ignore[attr-defined]
    assert key == 'fn:profile:["AAPL"]' and cache.get(key) == {"symbol": "AAPL", "mine": True}
    assert cache.clear_pattern("fn:profile:*") == 1 and cache.get("profile:AAPL") == service_entry


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ((("a:b",), {}), (("a", "b"), {})),  # the old ":"-joined key made these one
        ((("a",), {"b": 1}), (("a", {"b": 1}), {})),
        ((("a=1",), {}), ((), {"a": 1})),
        (((1,), {}), (("1",), {})),
        (((None,), {}), (("None",), {})),
        (((True,), {}), ((1,), {})),
        (((["a", "b"],), {}), (("a", "b"), {})),
        ((("x",), {"k": "v", "j": 1}), (("x",), {"k": "v", "j": "1"})),
    ],
    ids=["colon", "kwargs-vs-dict", "kw-like-text", "int-vs-text", "none-vs-text", "true-vs-1", "list-vs-args",
         "kwarg-types"],
)
def test_cache_cached_key_encodes_arguments_unambiguously(
    cache: TieredCache, one: tuple[tuple[Any, ...], dict[str, Any]], other: tuple[tuple[Any, ...], dict[str, Any]]
) -> None:
    calls: list[Any] = []

    @cache.cached("quote", key_prefix="f")
    def f(*args: Any, **kwargs: Any) -> list[Any]:
        calls.append((args, kwargs))
        return [len(calls)]

    first = f(*one[0], **one[1])
    second = f(*other[0], **other[1])
    assert first != second and len(calls) == 2
    assert f(*one[0], **one[1]) == first and f(*other[0], **other[1]) == second and len(calls) == 2


def test_cache_cached_keyword_order_does_not_matter(cache: TieredCache) -> None:
    calls: list[int] = []

    @cache.cached("quote", key_prefix="g")
    def g(**kwargs: Any) -> int:
        calls.append(1)
        return len(calls)

    assert g(a=1, b=2) == g(b=2, a=1) == 1
    assert g.cache_key(a=1, b=2) == 'fn:g:[]{"a":1,"b":2}'  # type: ignore[attr-defined]


def test_cache_cached_default_prefix_is_module_and_name(cache: TieredCache) -> None:
    @cache.cached("quote")
    def lookup(symbol: str) -> str:
        return symbol

    assert lookup.cache_key("X") == (  # type: ignore[attr-defined]
        f'fn:{__name__}.test_cache_cached_default_prefix_is_module_and_name.<locals>.lookup:["X"]')


@pytest.mark.parametrize("prefix", ["quote:x", "", ":"])
def test_cache_cached_refuses_prefix_with_colon_or_empty(cache: TieredCache, prefix: str) -> None:
    with pytest.raises(ValueError):
        cache.cached("quote", key_prefix=prefix)


def test_cache_cached_refuses_arguments_json_cannot_carry(cache: TieredCache) -> None:
    calls: list[Any] = []

    @cache.cached("quote", key_prefix="h")
    def h(value: Any) -> int:
        calls.append(value)
        return 1

    for bad in (object(), {1, 2}, float("nan"), b"bytes"):
        with pytest.raises(TypeError):
            h(bad)
    assert calls == []


def test_cache_cached_survives_reopen(tmp_path: Path, clock: Any) -> None:
    calls: list[str] = []

    def load(symbol: str) -> dict[str, str]:
        calls.append(symbol)
        return {"symbol": symbol}

    with make_cache(tmp_path, clock) as cache:
        assert cache.cached("fundamentals")(load)("AAPL") == {"symbol": "AAPL"}
    with make_cache(tmp_path, clock) as cache:
        assert cache.cached("fundamentals")(load)("AAPL") == {"symbol": "AAPL"}
    assert calls == ["AAPL"]


def test_cache_cached_caches_none_results(cache: TieredCache) -> None:
    calls: list[int] = []

    @cache.cached("quote", key_prefix="nothing")
    def nothing() -> None:
        calls.append(1)

    assert nothing() is None and nothing() is None
    assert calls == [1]


def test_cache_cached_refuses_non_json_results(cache: TieredCache) -> None:
    @cache.cached("quote", key_prefix="bad")
    def bad() -> object:
        return object()

    with pytest.raises(ValueError):
        bad()


def test_cache_cached_refuses_unknown_level(cache: TieredCache) -> None:
    with pytest.raises(ValueError):
        cache.cached("forever")


def test_cache_cached_concurrent_callers_compute_once(cache: TieredCache) -> None:
    release = threading.Event()
    calls: list[int] = []
    results: list[Any] = []

    @cache.cached("quote", key_prefix="slow")
    def slow(symbol: str) -> dict[str, str]:
        calls.append(1)
        release.wait(timeout=10)
        return {"symbol": symbol}

    threads = [threading.Thread(target=lambda: results.append(slow("AAPL"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1
    assert results == [{"symbol": "AAPL"}] * 6


def test_cache_cached_waiters_take_over_when_the_leader_fails(cache: TieredCache) -> None:
    from stockcache.cache.cached import Flights
    from stockcache.cache.cached import cached as cached_decorator

    waiters = 4
    joined = threading.Semaphore(0)
    flights = Flights(on_join=joined.release)
    leading = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def compute(symbol: str) -> dict[str, Any]:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            leading.set()
            release.wait(timeout=10)
            raise RuntimeError("upstream down")
        return {"symbol": symbol}

    load = cached_decorator(cache, flights, "quote", "load")(compute)
    results: list[Any] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(load("AAPL"))
        except RuntimeError as exc:
            errors.append(exc)

    leader = threading.Thread(target=call, name="leader")
    leader.start()
    assert leading.wait(timeout=10)
    threads = [threading.Thread(target=call, name=f"waiter-{i}") for i in range(waiters)]
    for thread in threads:
        thread.start()
    for _ in range(waiters):
        assert joined.acquire(timeout=10)  # every waiter is on the leader's flight
    release.set()
    for thread in [leader, *threads]:
        thread.join(timeout=10)
    assert len(errors) == 1 and calls[0] == "leader"  # only the leader sees its own failure
    assert len(calls) == 2 and results == [{"symbol": "AAPL"}] * waiters  # one waiter computed for all
    assert len(flights) == 0


def test_cache_flights_lead_join_and_free_the_key() -> None:
    from stockcache.cache.cached import Flights

    joins: list[int] = []
    flights = Flights(on_join=lambda: joins.append(1))
    first, leads = flights.join_or_lead("k")
    second, second_leads = flights.join_or_lead("k")
    other, other_leads = flights.join_or_lead("other")
    assert (leads, second_leads, other_leads) == (True, False, True)
    assert second is first and other is not first and joins == [1] and len(flights) == 2
    assert not first.wait(0)
    flights.finish(first, 42, None)
    assert second.wait(0) and second.done and (second.result, second.error) == (42, None)
    again, leads_again = flights.join_or_lead("k")
    assert leads_again and again is not first  # a finished flight frees its key


def test_cache_cached_failure_is_not_cached(cache: TieredCache) -> None:
    calls: list[int] = []

    @cache.cached("quote", key_prefix="flaky")
    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("upstream down")
        return 7

    with pytest.raises(RuntimeError):
        flaky()
    assert flaky() == 7
    assert flaky() == 7
    assert len(calls) == 2
