"""The read-through path with `responses` standing in for the upstream APIs: routing, single-flight, budgets.

Each test builds the real parts by hand (a real cache in a temp dir, the
router, the transport, budgets and breakers) and reads through ``ReadThrough``.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
import requests
import responses

from stockcache.errors import RateLimited, StockcacheError, SymbolNotFound, UpstreamError, UpstreamTimeout
from stockcache.metrics import Metrics
from stockcache.upstream.guard import Limits
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig, AlphaVantageProvider
from stockcache.upstream.providers.demo import DemoProvider
from stockcache.upstream.providers.finnhub import FinnhubConfig, FinnhubProvider
from stockcache.upstream.transport import MAX_ANSWER_BYTES
from tests.unit.conftest import AV, AV_KEY, FH, FH_KEY

GOOD = {"c": 261.74, "d": 2.29, "dp": 0.8826, "h": 263.31, "l": 260.68, "o": 261.07, "pc": 259.45, "t": 1582641000}
ZERO = {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
AV_QUOTE = {"Global Quote": {"01. symbol": "MSFT", "02. open": "112.6300", "03. high": "113.1700",
                             "04. low": "110.6400", "05. price": "112.1300", "06. volume": "29062853",
                             "07. latest trading day": "2018-10-05", "08. previous close": "112.7900",
                             "09. change": "-0.6600", "10. change percent": "-0.5852%"}}


def _quote_callback(bodies):
    """A responses callback answering per symbol: (status, body) from ``bodies``."""

    def callback(request):
        symbol = request.params["symbol"]
        status, body = bodies[symbol]
        if isinstance(body, Exception):
            raise body
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return callback


def _one(rt, symbol, kind="quote"):
    """(answer, error) of one item."""
    found, errors = rt.many(kind, [symbol])
    return found.get(symbol), errors.get(symbol)


@responses.activate
def test_readthrough_batch_gives_one_result_per_item(build):
    responses.add_callback(responses.GET, f"{FH}/quote", callback=_quote_callback({
        "AAPL": (200, GOOD), "ZZZZ": (200, ZERO), "BAD": (500, {"error": "boom"}),
        "SLOW": (200, requests.exceptions.ReadTimeout("read timed out")),
    }))
    responses.add(responses.GET, AV, json={"Global Quote": {}})
    rt = build()
    found, errors = rt.many("quote", ["AAPL", "ZZZZ", "BAD", "SLOW"])
    assert found["AAPL"]["source"] == "finnhub" and found["AAPL"]["price"] == 261.74
    assert found["AAPL"]["cache"] == "upstream"
    assert isinstance(errors["ZZZZ"], SymbolNotFound)
    # BAD and SLOW fell back to Alpha Vantage, which does not know them either.
    assert isinstance(errors["BAD"], SymbolNotFound)
    assert isinstance(errors["SLOW"], SymbolNotFound)
    assert set(found) | set(errors) == {"AAPL", "ZZZZ", "BAD", "SLOW"}


@responses.activate
def test_readthrough_falls_back_to_alpha_vantage_when_finnhub_fails(build):
    responses.add(responses.GET, f"{FH}/quote", status=502, body="<html>bad gateway</html>")
    responses.add(responses.GET, AV, json=AV_QUOTE)
    rt = build()
    answer, _ = _one(rt, "MSFT")
    assert answer["source"] == "alphavantage" and answer["price"] == 112.13
    assert rt.metrics.get(Metrics.UPSTREAM_ERRORS, "finnhub") == 1


@responses.activate
def test_readthrough_reports_the_primary_error_when_every_provider_fails(build):
    responses.add(responses.GET, f"{FH}/quote", body=requests.exceptions.ReadTimeout("timed out"))
    responses.add(responses.GET, AV, status=503, body="unavailable")
    _, error = _one(build(), "MSFT")
    assert isinstance(error, UpstreamTimeout)
    assert error.fields["provider"] == "finnhub"


@responses.activate
def test_readthrough_collapses_concurrent_misses_into_one_call(build):
    release = threading.Event()
    calls = []

    def slow(request):
        calls.append(request.url)
        release.wait(10)
        return 200, {"Content-Type": "application/json"}, json.dumps(GOOD)

    responses.add_callback(responses.GET, f"{FH}/quote", callback=slow)
    rt = build()
    results = []

    def caller():
        results.append(_one(rt, "AAPL")[0])

    threads = [threading.Thread(target=caller) for _ in range(40)]
    for t in threads:
        t.start()
    # Every caller has joined before the one upstream call is allowed to finish.
    while rt.metrics.get(Metrics.COALESCED) < 39:
        threading.Event().wait(0.001)
    release.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(results) == 40 and all(r is not None and r["price"] == 261.74 for r in results)
    assert len(rt.flights) == 0


@responses.activate
def test_readthrough_over_budget_item_is_answered_at_once_without_a_call(build):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    rt = build([FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH))], fh_limits=Limits(per_minute=2))
    found, errors = rt.many("quote", ["S0", "S1", "S2"])
    assert len(found) == 2 and len(errors) == 1
    error = next(iter(errors.values()))
    assert isinstance(error, RateLimited) and 0 < error.retry_after <= 60
    assert len(responses.calls) == 2
    assert rt.metrics.get(Metrics.RATE_LIMITED, "finnhub") == 1


@responses.activate
def test_readthrough_429_pauses_the_provider_for_retry_after(build, clock):
    responses.add(responses.GET, f"{FH}/quote", status=429, headers={"Retry-After": "30"},
                  json={"error": "API limit reached. Please try again later. Remaining Limit: 0"})
    rt = build([FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)])
    _, first = _one(rt, "A")
    assert isinstance(first, RateLimited) and first.retry_after == 30
    _, second = _one(rt, "B")
    assert isinstance(second, RateLimited)
    assert len(responses.calls) == 1  # the paused provider was not called again
    clock.advance(30)
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    third, _ = _one(rt, "C")
    assert third is not None


@responses.activate
def test_readthrough_does_not_hammer_a_dead_provider(build, clock):
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    rt = build([FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)], threshold=3)
    for i in range(10):
        _one(rt, f"S{i}")
    assert len(responses.calls) == 3
    clock.advance(30)
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    recovered, _ = _one(rt, "OK")
    assert recovered is not None
    assert rt.router.breakers["finnhub"].state == "closed"


@responses.activate
def test_readthrough_errors_never_carry_a_key(build):
    # A connection error's text includes the URL, and Alpha Vantage puts its key in the URL.
    responses.add(responses.GET, f"{FH}/quote",
                  body=requests.exceptions.ConnectionError(f"failed: {FH}/quote?token={FH_KEY}"))
    responses.add(responses.GET, AV, json={"Information": f"We have detected your API key as {AV_KEY} and our "
                                           "standard API rate limit is 25 requests per day."})
    _, error = _one(build(), "MSFT")
    assert isinstance(error, UpstreamError)
    text = json.dumps(error.to_dict())
    assert FH_KEY not in text and AV_KEY not in text
    assert FH_KEY not in responses.calls[0].request.url  # Finnhub's key travels in a header


@pytest.mark.parametrize("status", [401, 403])
@responses.activate
def test_readthrough_refused_key_is_an_upstream_error_and_falls_back(build, status):
    responses.add(responses.GET, f"{FH}/quote", status=status, json={"error": "Invalid API key"})
    responses.add(responses.GET, AV, json=AV_QUOTE)
    answer, _ = _one(build(), "MSFT")
    assert answer["source"] == "alphavantage"


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


@pytest.mark.parametrize(("where", "exc"), [
    ("build_request", KeyError("c")), ("build_request", RuntimeError("bug")),
    ("parse", KeyError("c")), ("parse", RuntimeError("bug")),
    ("produce", KeyError("c")), ("produce", RuntimeError("bug")),
])
@responses.activate
def test_readthrough_provider_bug_fails_the_item_and_frees_the_key(build, clock, where, exc):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    if where == "produce":
        provider = _BuggyDemo(clock=clock)
    else:
        provider = _BuggyFinnhub(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)
    provider.fail_in, provider.exc = where, exc
    rt = build([provider])
    _, error = _one(rt, "AAPL")
    assert isinstance(error, UpstreamError)
    assert len(rt.flights) == 0
    provider.fail_in = None  # the next request for the key is a new attempt, not the dead flight
    again, _ = _one(rt, "AAPL")
    assert again is not None


@pytest.mark.parametrize("where", ["build_request", "parse"])
@responses.activate
def test_readthrough_provider_bug_during_a_probe_does_not_disable_the_provider(build, clock, where):
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    provider = _BuggyFinnhub(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)
    rt = build([provider], threshold=1)
    _one(rt, "A")
    assert rt.router.breakers["finnhub"].state == "open"
    clock.advance(30)
    provider.fail_in = where  # the half-open probe hits the bug
    _, probe = _one(rt, "B")
    assert isinstance(probe, UpstreamError)
    provider.fail_in = None
    responses.replace(responses.GET, f"{FH}/quote", json=GOOD)
    clock.advance(120)  # past any doubled reset: a new probe must be let through
    recovered, _ = _one(rt, "C")
    assert recovered is not None
    assert rt.router.breakers["finnhub"].state == "closed"


@responses.activate
def test_readthrough_lookup_bug_fails_the_item_and_frees_the_key(build, monkeypatch):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    rt = build()

    def broken_lookup(*args):
        raise LookupError("cache bug")

    monkeypatch.setattr(rt, "_cached_result", broken_lookup)
    _, error = _one(rt, "AAPL")
    assert isinstance(error, StockcacheError)
    assert len(rt.flights) == 0
    monkeypatch.undo()
    again, _ = _one(rt, "AAPL")
    assert again is not None


@responses.activate
def test_readthrough_bug_in_the_fallback_after_a_failed_answer_fails_the_item(build, clock):
    # The fallback starts from the primary's answer callback, on a pool thread.
    responses.add(responses.GET, f"{FH}/quote", status=500, json={"error": "down"})
    fallback = _BuggyAlphaVantage(AlphaVantageConfig(api_key=AV_KEY, url=AV), clock=clock)
    fallback.fail_in = "build_request"
    rt = build([FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock), fallback], budgets={})
    _, error = _one(rt, "MSFT")
    assert isinstance(error, UpstreamError)
    assert len(rt.flights) == 0


@responses.activate
def test_readthrough_answer_over_the_size_cap_is_an_upstream_error_and_falls_back(build):
    responses.add(responses.GET, f"{FH}/quote", status=200, content_type="application/json",
                  body=b'{"c": 1, "padding": "' + b"x" * MAX_ANSWER_BYTES + b'"}')
    responses.add(responses.GET, AV, json=AV_QUOTE)
    rt = build()
    answer, _ = _one(rt, "MSFT")
    assert answer["source"] == "alphavantage"
    assert rt.metrics.get(Metrics.UPSTREAM_ERRORS, "finnhub") == 1


# -- shutdown ----------------------------------------------------------------------------------


@responses.activate
def test_readthrough_after_close_fails_new_reads_at_once_without_a_call(build, caplog):
    responses.add(responses.GET, f"{FH}/quote", json=GOOD)
    rt = build()
    rt.close()
    rt.close()  # idempotent
    with caplog.at_level(logging.WARNING):
        _, error = _one(rt, "AAPL")
    assert isinstance(error, UpstreamError)
    assert "shutting down" in error.message
    assert len(rt.flights) == 0 and len(responses.calls) == 0
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


def test_readthrough_close_stops_the_peer_waiter_thread_and_fails_its_flights(build, clock):
    peers = _PeerHoldsEverything()
    rt = build([FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH), clock=clock)], peers=peers, timeout=30.0)
    answers = []
    reader = threading.Thread(target=lambda: answers.append(_one(rt, "AAPL")))
    reader.start()
    assert peers.polling.wait(5)
    rt.close()
    reader.join(10)
    assert not [t for t in threading.enumerate() if t.name == "stockcache-peer-wait"]
    assert answers and isinstance(answers[0][1], StockcacheError)
    assert len(rt.flights) == 0
