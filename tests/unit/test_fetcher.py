"""The fetcher with `responses` standing in for the upstream APIs: routing, single-flight, budgets."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import requests
import responses

from stockcache.budget import Budget, CircuitBreaker, Limits
from stockcache.errors import RateLimited, SymbolNotFound, UpstreamError, UpstreamTimeout
from stockcache.fetcher import MAX_ANSWER_BYTES, Fetcher, wait_all
from stockcache.metrics import Metrics
from stockcache.models import Quote
from stockcache.providers import AlphaVantageProvider, FinnhubProvider
from stockcache.providers.demo import DemoProvider

FH = "https://fh.test/api/v1"
AV = "https://av.test/query"
FH_KEY = "TESTKEY_fh_5e5e5e"
AV_KEY = "TESTKEY_av_6f6f6f"
ROUTE = ("finnhub", "alphavantage")

GOOD = {"c": 261.74, "d": 2.29, "dp": 0.8826, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 259.45, "t": 1582641000}
ZERO = {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
AV_QUOTE = {"Global Quote": {"01. symbol": "MSFT", "02. open": "112.6300", "03. high": "113.1700",
                             "04. low": "110.6400", "05. price": "112.1300", "06. volume": "29062853",
                             "07. latest trading day": "2018-10-05", "08. previous close": "112.7900",
                             "09. change": "-0.6600", "10. change percent": "-0.5852%"}}


def _fetcher(clock, *, fh_limits=Limits(), av_limits=Limits(), threshold=5, workers=8):
    providers = {
        "finnhub": FinnhubProvider(api_key=FH_KEY, base_url=FH, clock=clock),
        "alphavantage": AlphaVantageProvider(api_key=AV_KEY, base_url=AV, clock=clock),
    }
    budgets = {"finnhub": Budget("finnhub", fh_limits, clock=clock),
               "alphavantage": Budget("alphavantage", av_limits, clock=clock)}
    breakers = {name: CircuitBreaker(threshold=threshold, reset_after=30, clock=clock) for name in providers}
    return Fetcher(providers, budgets, workers=workers, timeout=2.0, breakers=breakers, clock=clock,
                   metrics=Metrics())


def _quote_callback(bodies):
    """A responses callback answering per symbol: (status, body) from ``bodies``."""

    def callback(request):
        symbol = request.params["symbol"]
        status, body = bodies[symbol]
        if isinstance(body, Exception):
            raise body
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return callback


def _wait(flights):
    wait_all(flights, deadline=30.0, clock=lambda: 0.0)
    return flights


@responses.activate
def test_fetcher_batch_gives_one_result_per_item(clock):
    responses.add_callback(responses.GET, f"{FH}/quote", callback=_quote_callback({
        "AAPL": (200, GOOD), "ZZZZ": (200, ZERO), "BAD": (500, {"error": "boom"}),
        "SLOW": (200, requests.exceptions.ReadTimeout("read timed out")),
    }))
    responses.add(responses.GET, AV, json={"Global Quote": {}})
    fetcher = _fetcher(clock)
    flights = {s: fetcher.fetch(f"quote:{s}", "quote", s, {}, ROUTE) for s in ("AAPL", "ZZZZ", "BAD", "SLOW")}
    _wait(flights.values())
    assert isinstance(flights["AAPL"].result.model, Quote)
    assert flights["AAPL"].result.provider == "finnhub"
    assert flights["AAPL"].result.model.price == 261.74
    assert isinstance(flights["ZZZZ"].error, SymbolNotFound)
    # BAD and SLOW fell back to Alpha Vantage, which does not know them either.
    assert isinstance(flights["BAD"].error, SymbolNotFound)
    assert isinstance(flights["SLOW"].error, SymbolNotFound)
    fetcher.close()


@responses.activate
def test_fetcher_falls_back_to_alpha_vantage_when_finnhub_fails(clock):
    responses.add(responses.GET, f"{FH}/quote", status=502, body="<html>bad gateway</html>")
    responses.add(responses.GET, AV, json=AV_QUOTE)
    fetcher = _fetcher(clock)
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    _wait([flight])
    assert flight.result.provider == "alphavantage"
    assert flight.result.model.price == 112.13
    assert fetcher.metrics.get(Metrics.UPSTREAM_ERRORS, "finnhub") == 1


@responses.activate
def test_fetcher_reports_the_primary_error_when_every_provider_fails(clock):
    responses.add(responses.GET, f"{FH}/quote", body=requests.exceptions.ReadTimeout("timed out"))
    responses.add(responses.GET, AV, status=503, body="unavailable")
    fetcher = _fetcher(clock)
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    _wait([flight])
    assert isinstance(flight.error, UpstreamTimeout)
    assert flight.error.fields["provider"] == "finnhub"


@responses.activate
def test_fetcher_collapses_concurrent_misses_into_one_call(clock):
    release = threading.Event()
    calls = []

    def slow(request):
        calls.append(request.url)
        release.wait(10)
        return 200, {"Content-Type": "application/json"}, json.dumps(GOOD)

    responses.add_callback(responses.GET, f"{FH}/quote", callback=slow)
    fetcher = _fetcher(clock)
    results = []

    def caller():
        flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ROUTE)
        flight.wait(10)
        results.append(flight.result)

    threads = [threading.Thread(target=caller) for _ in range(40)]
    for t in threads:
        t.start()
    # Every caller has joined before the one upstream call is allowed to finish.
    while fetcher.metrics.get(Metrics.COALESCED) < 39:
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 40 and all(r is not None and r.model.price == 261.74 for r in results)
    assert fetcher.in_flight() == 0


@responses.activate
def test_fetcher_over_budget_item_is_answered_at_once_without_a_call(clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    fetcher = _fetcher(clock, fh_limits=Limits(per_minute=2))
    flights = [fetcher.fetch(f"quote:S{i}", "quote", f"S{i}", {}, ("finnhub",)) for i in range(3)]
    _wait(flights)
    assert [f.result is not None for f in flights] == [True, True, False]
    assert isinstance(flights[2].error, RateLimited)
    assert 0 < flights[2].error.retry_after <= 60
    assert len(responses.calls) == 2
    assert fetcher.metrics.get(Metrics.RATE_LIMITED, "finnhub") == 1


@responses.activate
def test_fetcher_429_pauses_the_provider_for_retry_after(clock):
    responses.add(responses.GET, f"{FH}/quote", status=429, headers={"Retry-After": "30"},
                  json={"error": "API limit reached. Please try again later. Remaining Limit: 0"})
    fetcher = _fetcher(clock)
    first = fetcher.fetch("quote:A", "quote", "A", {}, ("finnhub",))
    _wait([first])
    assert isinstance(first.error, RateLimited) and first.error.retry_after == 30
    second = fetcher.fetch("quote:B", "quote", "B", {}, ("finnhub",))
    _wait([second])
    assert isinstance(second.error, RateLimited)
    assert len(responses.calls) == 1  # the paused provider was not called again
    clock.advance(30)
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    third = fetcher.fetch("quote:C", "quote", "C", {}, ("finnhub",))
    _wait([third])
    assert third.result is not None


@responses.activate
def test_fetcher_does_not_hammer_a_dead_provider(clock):
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    fetcher = _fetcher(clock, threshold=3)
    for i in range(10):
        _wait([fetcher.fetch(f"quote:S{i}", "quote", f"S{i}", {}, ("finnhub",))])
    assert len(responses.calls) == 3
    clock.advance(30)
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    recovered = fetcher.fetch("quote:OK", "quote", "OK", {}, ("finnhub",))
    _wait([recovered])
    assert recovered.result is not None
    assert fetcher.breakers["finnhub"].state == "closed"


@responses.activate
def test_fetcher_errors_never_carry_a_key(clock):
    # A connection error's text includes the URL, and Alpha Vantage puts its key in the URL.
    responses.add(responses.GET, f"{FH}/quote",
                  body=requests.exceptions.ConnectionError(f"failed: {FH}/quote?token={FH_KEY}"))
    responses.add(responses.GET, AV, json={"Information": f"We have detected your API key as {AV_KEY} and our "
                                           "standard API rate limit is 25 requests per day."})
    fetcher = _fetcher(clock)
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    _wait([flight])
    assert isinstance(flight.error, UpstreamError)
    text = json.dumps(flight.error.to_dict())
    assert FH_KEY not in text and AV_KEY not in text
    assert FH_KEY not in responses.calls[0].request.url  # Finnhub's key travels in a header


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_fetcher_refused_key_is_an_upstream_error_and_falls_back(clock, status):
    responses.add(responses.GET, f"{FH}/quote", status=status, json={"error": "Invalid API key"})
    responses.add(responses.GET, AV, json=AV_QUOTE)
    fetcher = _fetcher(clock)
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    _wait([flight])
    assert flight.result.provider == "alphavantage"


# -- unexpected exceptions (a provider bug, a lookup bug) never strand a flight ------------------


class _Bug:
    """A provider mixin with a bug switched on in ``fail_in`` ("build_request" or "parse")."""

    fail_in: str | None = None
    exc: Exception = KeyError("c")

    def build_request(self, kind, symbol, params):
        if self.fail_in == "build_request":
            raise self.exc
        return super().build_request(kind, symbol, params)

    def parse(self, kind, symbol, params, status, headers, body):
        if self.fail_in == "parse":
            raise self.exc
        return super().parse(kind, symbol, params, status, headers, body)


class _BuggyFinnhub(_Bug, FinnhubProvider):
    pass


class _BuggyAlphaVantage(_Bug, AlphaVantageProvider):
    pass


class _BuggyDemo(DemoProvider):
    fail_in: str | None = None
    exc: Exception = KeyError("c")

    def produce(self, kind, symbol, params):
        if self.fail_in == "produce":
            raise self.exc
        return super().produce(kind, symbol, params)


def _buggy_fetcher(clock, provider, *, threshold=5):
    breakers = {provider.name: CircuitBreaker(threshold=threshold, reset_after=30, clock=clock)}
    budgets = {} if provider.local else {provider.name: Budget(provider.name, Limits(), clock=clock)}
    return Fetcher({provider.name: provider}, budgets, workers=4, timeout=2.0, breakers=breakers, clock=clock,
                   metrics=Metrics())


@pytest.mark.parametrize(("where", "exc"), [
    ("build_request", KeyError("c")), ("build_request", RuntimeError("bug")),
    ("parse", KeyError("c")), ("parse", RuntimeError("bug")),
    ("produce", KeyError("c")), ("produce", RuntimeError("bug")),
])
@responses.activate
def test_fetcher_provider_bug_fails_the_item_and_frees_the_key(clock, where, exc):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    if where == "produce":
        provider = _BuggyDemo(clock=clock)
    else:
        provider = _BuggyFinnhub(api_key=FH_KEY, base_url=FH, clock=clock)
    provider.fail_in, provider.exc = where, exc
    fetcher = _buggy_fetcher(clock, provider)
    route = (provider.name,)
    flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, route)
    _wait([flight])
    assert flight.done and isinstance(flight.error, UpstreamError)
    assert fetcher.in_flight() == 0
    provider.fail_in = None  # the next request for the key is a new attempt, not the dead flight
    again = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, route)
    _wait([again])
    assert again is not flight and again.result is not None
    fetcher.close()


@pytest.mark.parametrize("where", ["build_request", "parse"])
@responses.activate
def test_fetcher_provider_bug_during_a_probe_does_not_disable_the_provider(clock, where):
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    provider = _BuggyFinnhub(api_key=FH_KEY, base_url=FH, clock=clock)
    fetcher = _buggy_fetcher(clock, provider, threshold=1)
    _wait([fetcher.fetch("quote:A", "quote", "A", {}, ("finnhub",))])
    assert fetcher.breakers["finnhub"].state == "open"
    clock.advance(30)
    provider.fail_in = where  # the half-open probe hits the bug
    probe = fetcher.fetch("quote:B", "quote", "B", {}, ("finnhub",))
    _wait([probe])
    assert isinstance(probe.error, UpstreamError)
    provider.fail_in = None
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    clock.advance(120)  # past any doubled reset: a new probe must be let through
    recovered = fetcher.fetch("quote:C", "quote", "C", {}, ("finnhub",))
    _wait([recovered])
    assert recovered.result is not None
    assert fetcher.breakers["finnhub"].state == "closed"
    fetcher.close()


@responses.activate
def test_fetcher_lookup_bug_fails_the_item_and_frees_the_key(clock):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    fetcher = _fetcher(clock)

    def broken_lookup():
        raise LookupError("cache bug")

    flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ROUTE, lookup=broken_lookup)
    _wait([flight])
    assert isinstance(flight.error, UpstreamError)
    assert fetcher.in_flight() == 0
    again = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ROUTE, lookup=lambda: None)
    _wait([again])
    assert again.result is not None
    fetcher.close()


@responses.activate
def test_fetcher_bug_in_the_fallback_after_a_failed_answer_fails_the_item(clock):
    # The fallback starts from the primary's response callback, on a pool thread.
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    fallback = _BuggyAlphaVantage(api_key=AV_KEY, base_url=AV, clock=clock)
    fallback.fail_in = "build_request"
    providers = {"finnhub": FinnhubProvider(api_key=FH_KEY, base_url=FH, clock=clock), "alphavantage": fallback}
    fetcher = Fetcher(providers, {}, workers=4, timeout=2.0, clock=clock, metrics=Metrics())
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    assert flight.wait(10)
    assert isinstance(flight.error, UpstreamError)
    assert fetcher.in_flight() == 0
    fetcher.close()


@responses.activate
def test_fetcher_answer_over_the_size_cap_is_an_upstream_error_and_falls_back(clock):
    responses.add(responses.GET, f"{FH}/quote", status=200, content_type="application/json",
                  body=b'{"c": 1, "padding": "' + b"x" * MAX_ANSWER_BYTES + b'"}')
    responses.add(responses.GET, AV, json=AV_QUOTE)
    fetcher = _fetcher(clock)
    flight = fetcher.fetch("quote:MSFT", "quote", "MSFT", {}, ROUTE)
    _wait([flight])
    assert flight.result.provider == "alphavantage"
    assert fetcher.metrics.get(Metrics.UPSTREAM_ERRORS, "finnhub") == 1
    fetcher.close()


# -- shutdown ----------------------------------------------------------------------------------


@responses.activate
def test_fetcher_after_close_fails_new_flights_at_once_without_a_call(clock, caplog):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    fetcher = _fetcher(clock)
    fetcher.close()
    fetcher.close()  # idempotent
    with caplog.at_level(logging.WARNING):
        flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ROUTE)
    assert flight.done and isinstance(flight.error, UpstreamError)
    assert "shutting down" in flight.error.message
    assert fetcher.in_flight() == 0 and len(responses.calls) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class _PeerHoldsEverything:
    """Peer locks where another instance is always fetching; each poll is a slow Redis round trip."""

    def __init__(self) -> None:
        self.polling = threading.Event()

    def acquire(self, key):
        return None

    def acquire_many(self, keys):
        self.polling.set()
        threading.Event().wait(0.2)  # a round trip in progress when close() comes
        return [None] * len(keys)

    def release(self, key, token):
        pass


def test_fetcher_close_stops_the_peer_waiter_thread_and_fails_its_flights(clock):
    peers = _PeerHoldsEverything()
    fetcher = Fetcher({"finnhub": FinnhubProvider(api_key=FH_KEY, base_url=FH, clock=clock)}, {}, timeout=30.0,
                      clock=clock, metrics=Metrics(), peers=peers, peer_poll=0.01)
    flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ("finnhub",), lookup=lambda: None)
    assert peers.polling.wait(5)
    fetcher.close()
    assert not [t for t in threading.enumerate() if t.name == "stockcache-peer-wait"]
    assert flight.done and isinstance(flight.error, UpstreamError)
    assert fetcher.in_flight() == 0
