"""The background refresher, driven by a fake clock through run_once(): no thread, no sleeps.

The service path is the real one (SQLite cache in a temp dir, fetcher with
budgets and breakers, Finnhub/Alpha Vantage providers); only the network is
replaced by bench.replay.InProcessSession, which answers from the fake upstream
in-process and counts every call.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from bench.replay import InProcessSession, bench_settings
from stockcache.cache import open_cache
from stockcache.kinds import KINDS
from stockcache.metrics import Metrics
from stockcache.refresher import BACKOFF_CAP, Refresher, in_session
from stockcache.runtime import Runtime, build_service
from stockcache.settings import Settings
from stockcache.store import open_store
from stockcache.venues import BY_MIC, US


def ny(text: str) -> float:
    """Unix time of a New York wall-clock time, ``YYYY-MM-DD HH:MM[:SS]``."""
    return datetime.fromisoformat(text).replace(tzinfo=US.zone).timestamp()


def utc(text: str) -> float:
    return datetime.fromisoformat(text + "+00:00").timestamp()


@pytest.fixture
def make_world(tmp_path, clock):
    made: list[SimpleNamespace] = []

    def make(session: Any = None, **overrides: Any) -> SimpleNamespace:
        settings = bench_settings(tmp_path / f"data{len(made)}", **overrides)
        fake = FakeUpstream(clock=clock)
        session = session or InProcessSession(fake, clock)
        cache = open_cache(settings=settings, clock=clock, janitor_interval=None)
        store = open_store(settings.data_dir / "store.sqlite", clock=clock)
        service = build_service(settings, cache=cache, session=session, clock=clock)
        user = store.create_user("alice", "not-a-real-hash")
        world = SimpleNamespace(settings=settings, fake=fake, session=session, cache=cache, store=store,
                                service=service, user=user, metrics=service.metrics)
        made.append(world)
        return world

    yield make
    for world in made:
        world.service.close()
        world.cache.close()
        world.store.close()


def hold(world: SimpleNamespace, *symbols: str) -> None:
    for symbol in symbols:
        world.store.add_position(world.user.id, symbol, 1, 100.0)


def refresher(world: SimpleNamespace, clock, **options: Any) -> Refresher:
    options.setdefault("hours", "always")
    options.setdefault("kinds", ("quote",))
    return Refresher(world.service, world.store.held_symbol_counts, share=world.settings.refresh_budget_share,
                     lead=world.settings.refresh_lead, clock=clock, **options)


def quote_calls(world: SimpleNamespace) -> int:
    return world.session.calls("finnhub", "quote")


def test_refresher_keeps_held_symbols_fresh_before_they_expire(make_world, clock):
    world = make_world()
    hold(world, "AAPL", "MSFT")
    world.store.add_watch(world.user.id, "NVDA")
    worker = refresher(world, clock)

    # Nothing cached yet: all three are fetched at once. It looks again within a
    # minute (for newly held symbols); they are due 60 s before they expire.
    assert worker.run_once() == 60
    assert quote_calls(world) == 3
    clock.advance(224)  # 16 s before the refresh point: outside the 15 s batch window
    assert worker.run_once() == 1
    assert quote_calls(world) == 3
    clock.advance(1)
    worker.run_once()
    assert quote_calls(world) == 6

    # Past the first fetch's expiry, a user's page is still served from memory.
    clock.advance(100)
    page = world.service.fetch_multiple_quotes(["AAPL", "MSFT", "NVDA"])
    assert {q["cache"] for q in page["quotes"].values()} == {"memory"}
    assert {q["age"] for q in page["quotes"].values()} == {100}
    reads = world.metrics.by_label(Metrics.READS)
    assert reads == {("quote", "memory"): 3}
    assert world.metrics.get(Metrics.REFRESHED, "quote") == 6
    assert world.metrics.get(Metrics.REFRESH_RUNS) == 3


def test_refresher_refreshes_profiles_and_history_on_their_own_longer_tiers(make_world, clock):
    world = make_world(alphavantage_per_second=0)
    hold(world, "AAPL")
    worker = refresher(world, clock, kinds=("quote", "profile", "history"))
    worker.run_once()
    assert (quote_calls(world), world.session.calls("finnhub", "stock/profile2"),
            world.session.calls("alphavantage", "TIME_SERIES_DAILY")) == (1, 1, 1)
    for _ in range(15):  # an hour in quote refresh steps
        clock.advance(240)
        worker.run_once()
    assert quote_calls(world) == 16
    assert world.session.calls("alphavantage", "TIME_SERIES_DAILY") == 2  # history TTL is an hour
    assert world.session.calls("finnhub", "stock/profile2") == 1  # profiles last a day
    assert world.service.get_history("AAPL", days=5)["cache"] == "memory"


def test_refresher_uses_only_its_share_of_the_minute_budget(make_world, clock):
    world = make_world(finnhub_per_minute=10, finnhub_per_second=0)
    held = ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]
    hold(world, *held)
    worker = refresher(world, clock)  # share 0.5: 5 calls a minute

    worker.run_once()
    assert quote_calls(world) == 5
    assert world.metrics.get(Metrics.REFRESH_SKIPPED, "quote") == 3
    # Interactive requests still have the other half of the minute.
    page = world.service.fetch_multiple_quotes(["B1", "B2", "B3", "B4", "B5"])
    assert not page["errors"] and {q["cache"] for q in page["quotes"].values()} == {"upstream"}
    assert quote_calls(world) == 10

    clock.advance(5)  # the refresher looks again, finds no room, spends nothing
    worker.run_once()
    assert quote_calls(world) == 10
    clock.advance(56)  # the minute has passed: the three left over are fetched
    worker.run_once()
    assert quote_calls(world) == 13
    assert {s.symbol for s in world.session.sent[-3:]} == set(held) - {s.symbol for s in world.session.sent[:5]}
    assert world.session.busiest("finnhub", 60.0) <= 10
    assert world.session.calls("alphavantage") == 0  # never spilled onto the fallback's budget


def run_for(worker: Refresher, clock, seconds: int, watch: list[str], cache: Any,
            warm_up: int = 0) -> dict[str, float]:
    """Drive ``worker`` as its thread would (next round when run_once says) for ``seconds``;
    return the share of each second after ``warm_up`` in which each watched quote was fresh."""
    keys = {symbol: KINDS["quote"].key(symbol) for symbol in watch}
    fresh = dict.fromkeys(watch, 0)
    start = next_run = clock()
    for second in range(seconds):
        now = start + second
        clock.set(now)
        if now >= next_run:
            next_run = now + worker.run_once()
        if second >= warm_up:
            entries = cache.get_stale_many(keys.values())
            for symbol, key in keys.items():
                fresh[symbol] += key in entries and entries[key].expires_at > now
    return {symbol: count / (seconds - warm_up) for symbol, count in fresh.items()}


def test_refresher_keeps_the_most_held_symbols_fresh_when_its_share_covers_only_some(make_world, clock):
    # 2 calls a minute, the refresher's half is 1: a quote refreshed every 240 s
    # (TTL 300 s less the 60 s lead) means the share keeps exactly 4 symbols fresh.
    world = make_world(finnhub_per_minute=2, finnhub_per_second=0)
    users = [world.user] + [world.store.create_user(f"user{n}", "x") for n in range(1, 5)]
    holders = {"AAA1": 1, "BBB1": 1, "HLD2": 2, "HLD3": 3, "HLD4": 4, "HLD5": 5}  # A/B sort first by name
    for symbol, count in holders.items():
        for user in users[:count]:
            world.store.add_watch(user.id, symbol)
    worker = refresher(world, clock)

    fresh = run_for(worker, clock, 3600, list(holders), world.cache, warm_up=300)
    assert fresh == {"AAA1": 0.0, "BBB1": 0.0, "HLD2": 1.0, "HLD3": 1.0, "HLD4": 1.0, "HLD5": 1.0}
    assert {s.symbol for s in world.session.sent} == {"HLD2", "HLD3", "HLD4", "HLD5"}
    assert world.session.busiest("finnhub", 60.0) == 1  # never more than its share

    # Four more users take up AAA1: it now outranks HLD2, which falls out of the budget.
    for user in users[1:5]:
        world.store.add_watch(user.id, "AAA1")
    fresh = run_for(worker, clock, 3600, list(holders), world.cache, warm_up=600)
    assert fresh == {"AAA1": 1.0, "BBB1": 0.0, "HLD2": 0.0, "HLD3": 1.0, "HLD4": 1.0, "HLD5": 1.0}
    assert world.session.busiest("finnhub", 60.0) == 1


def test_refresher_uses_only_its_share_of_the_daily_budget(make_world, clock):
    world = make_world(alphavantage_per_day=4, alphavantage_per_second=0)
    hold(world, "AAPL", "MSFT", "NVDA")
    worker = refresher(world, clock, kinds=("history",))
    worker.run_once()
    assert world.session.calls("alphavantage") == 2  # half of 4 a day
    clock.advance(3700)  # those two have expired, but the day's share is spent
    worker.run_once()
    assert world.session.calls("alphavantage") == 2
    clock.set((clock() // 86400 + 1) * 86400 + 60)  # a new UTC day
    worker.run_once()
    assert world.session.calls("alphavantage") == 4


def test_refresher_stays_idle_outside_market_hours(make_world, clock):
    world = make_world()
    hold(world, "AAPL")
    worker = refresher(world, clock, hours="market")
    clock.set(ny("2026-01-03 12:00"))  # Saturday
    assert worker.run_once() == ny("2026-01-05 09:30") - clock()
    clock.set(ny("2026-01-05 09:29:59"))
    assert worker.run_once() == 1
    clock.set(ny("2026-01-05 16:00"))
    assert worker.run_once() == ny("2026-01-06 09:30") - clock()
    assert world.session.calls() == 0
    assert world.metrics.get(Metrics.REFRESH_RUNS) == 0
    clock.set(ny("2026-01-05 09:30"))
    worker.run_once()
    assert quote_calls(world) == 1


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        ("2026-03-06T14:29:59+00:00", False),  # Friday 09:29:59 EST
        ("2026-03-06T14:30:00+00:00", True),
        ("2026-03-06T20:59:59+00:00", True),
        ("2026-03-06T21:00:00+00:00", False),  # 16:00 EST
        ("2026-03-09T13:30:00+00:00", True),  # Monday after the switch to EDT: 09:30
        ("2026-03-09T14:30:00+00:00", True),
        ("2026-03-09T20:00:00+00:00", False),  # 16:00 EDT
        ("2026-03-07T15:00:00+00:00", False),  # Saturday
    ],
)
def test_market_hours_follow_new_york_time_across_daylight_saving(utc, open_):
    assert US.is_open(datetime.fromisoformat(utc).timestamp()) is open_


def test_market_hours_next_open_skips_the_weekend_and_holidays():
    friday_evening = ny("2026-03-06 17:00")
    assert US.next_open(friday_evening) == ny("2026-03-09 09:30")
    assert US.next_open(ny("2026-11-25 17:00")) == ny("2026-11-27 09:30")  # Thanksgiving is closed


def test_refresher_refreshes_each_listing_only_in_its_own_venues_session(make_world, clock):
    world = make_world()
    hold(world, "AAPL", "SAP.DE")
    worker = refresher(world, clock, hours="market")
    xetra_calls = lambda: world.session.calls("alphavantage", "GLOBAL_QUOTE")  # noqa: E731

    clock.set(utc("2026-01-05 09:00"))  # Monday: Xetra opened at 09:00 Berlin time, New York is asleep
    assert worker.run_once() <= ny("2026-01-05 09:30") - clock()
    assert (quote_calls(world), xetra_calls()) == (0, 1)

    clock.set(utc("2026-12-24 15:00"))  # Christmas Eve: Xetra is closed for the day, New York trades
    worker.run_once()
    assert (quote_calls(world), xetra_calls()) == (1, 1)

    clock.set(utc("2026-12-26 12:00"))  # a Saturday: it sleeps until the first of the two opens
    assert worker.run_once() == min(US.next_open(clock()), BY_MIC["XETR"].next_open(clock())) - clock()
    assert (quote_calls(world), xetra_calls()) == (1, 1)


def test_refresher_session_of_a_crypto_pair_never_closes():
    saturday = utc("2026-12-26 12:00")
    assert in_session({"BTC-USD": 2, "AAPL": 1, "VOD.L": 1}, saturday) == (
        {"BTC-USD": 2}, min(US.next_open(saturday), BY_MIC["XLON"].next_open(saturday)) - saturday)


def test_refresher_symbol_no_provider_covers_is_no_reason_to_back_off(make_world, clock):
    world = make_world()
    hold(world, "AAPL", "ENEL.MI")  # Milan: neither Finnhub's free plan nor Alpha Vantage serves it
    worker = refresher(world, clock)
    worker.run_once()
    assert quote_calls(world) == 1 and worker.backoff() == {}
    assert world.metrics.get(Metrics.REFRESH_FAILED, "quote") == 0


def test_refresher_backs_off_exponentially_when_the_upstream_fails(make_world, clock):
    world = make_world()
    hold(world, "AAPL")
    world.fake.set_fault("500")  # both providers
    worker = refresher(world, clock)
    assert worker.run_once() == 15
    assert world.session.calls() == 2  # Finnhub, then the Alpha Vantage fallback
    clock.advance(14)
    worker.run_once()
    assert world.session.calls() == 2
    waits = []
    for _ in range(7):
        clock.advance(worker.backoff()["quote"])
        worker.run_once()  # it may look again sooner (for newly held symbols); the kind stays backed off
        waits.append(worker.backoff()["quote"])
    assert waits == [30, 60, 120, 240, 480, 900, 900] and BACKOFF_CAP == 900
    assert world.metrics.get(Metrics.REFRESH_FAILED, "quote") == 8

    world.fake.clear_faults()
    clock.advance(900)
    worker.run_once()
    assert worker.backoff() == {}
    assert world.service.get_quote("AAPL")["cache"] == "memory"


def test_refresher_waits_at_least_as_long_as_a_rate_limit_asks(make_world, clock):
    world = make_world(alphavantage_api_key="")
    hold(world, "AAPL")
    world.fake.set_fault("429", provider="finnhub", retry_after=120)
    worker = refresher(world, clock)
    worker.run_once()
    assert worker.backoff() == {"quote": 120}
    clock.advance(119)
    worker.run_once()
    assert world.session.calls() == 1
    assert world.metrics.get(Metrics.REFRESH_SKIPPED, "quote") == 1
    assert world.metrics.get(Metrics.REFRESH_FAILED, "quote") == 0


def test_service_refresh_fetches_a_fresh_entry_again_without_counting_a_read(make_world, clock):
    world = make_world()
    world.service.get_quote("AAPL")
    clock.advance(10)
    found, errors = world.service.refresh("quote", ["AAPL"])
    assert not errors and found["AAPL"]["cache"] == "upstream"
    assert quote_calls(world) == 2
    clock.advance(10)
    assert world.service.get_quote("AAPL")["age"] == 10  # the refreshed copy was written through
    assert world.metrics.by_label(Metrics.READS) == {("quote", "miss"): 1, ("quote", "memory"): 1}


class HeldSession:
    """A session whose answers wait until the test releases them (futures completed by hand)."""

    def __init__(self, fake: FakeUpstream, clock) -> None:
        self._inner = InProcessSession(fake, clock)
        self.executor = self
        self.pending: list[tuple[Future[Any], str, dict[str, Any]]] = []
        self.arrived = threading.Condition()

    def request(self, method: str, url: str, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self.arrived:
            self.pending.append((future, url, kwargs))
            self.arrived.notify_all()
        return future

    def wait_for(self, count: int) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.pending) >= count, timeout=5)

    def release(self) -> None:
        for future, url, kwargs in self.pending:
            future.set_result(self._inner.request("GET", url, **kwargs))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


def test_service_refresh_shares_one_upstream_call_with_a_users_miss(make_world, clock):
    world = make_world()
    world.session = session = HeldSession(world.fake, clock)
    world.service.close()
    world.service = build_service(world.settings, cache=world.cache, session=session, clock=clock)
    answers: dict[str, Any] = {}
    user = threading.Thread(target=lambda: answers.update(user=world.service.get_quote("AAPL")))
    user.start()
    assert session.wait_for(1)
    background = threading.Thread(target=lambda: answers.update(refresh=world.service.refresh("quote", ["AAPL"])))
    background.start()
    deadline = time.monotonic() + 5
    while world.service.metrics.total(Metrics.COALESCED) < 1 and time.monotonic() < deadline:
        time.sleep(0.005)  # polling a condition with a deadline: the join happens inside fetch()
    session.release()
    user.join(5)
    background.join(5)
    assert len(session.pending) == 1
    assert answers["user"]["price"] == answers["refresh"][0]["AAPL"]["price"]


def test_refresher_stops_promptly_while_a_refresh_waits_on_the_upstream(make_world, clock):
    world = make_world(upstream_timeout=30.0)
    world.session = session = HeldSession(world.fake, clock)
    world.service.close()
    world.service = build_service(world.settings, cache=world.cache, session=session, clock=clock)
    hold(world, "AAPL")
    worker = refresher(world, clock)
    worker.start()
    assert session.wait_for(1)  # the refresh is now waiting for an answer that never comes
    started = time.monotonic()
    worker.stop()
    assert not worker.running and time.monotonic() - started < 1.0


def test_refresher_thread_starts_and_stops_with_the_runtime(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", refresh=True, refresh_hours="always")
    runtime = Runtime(settings, janitor_interval=None, kpi_interval=None)
    assert runtime.refresher is not None and runtime.refresher.running
    started = time.monotonic()
    runtime.close()
    assert not runtime.refresher.running and time.monotonic() - started < 2.0


def test_refresh_off_means_no_refresher_thread(tmp_path):
    runtime = Runtime(Settings(data_dir=tmp_path / "data", refresh=False), janitor_interval=None,
                      kpi_interval=None)
    try:
        assert runtime.refresher is None
        assert not [t for t in threading.enumerate() if t.name == "stockcache-refresher"]
    finally:
        runtime.close()
