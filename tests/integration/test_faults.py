"""Upstream faults through the real HTTP service: every request answered in time, never a 500.

The service runs on waitress over loopback against the fake upstream, with a
1 s upstream timeout and an injected clock, so TTLs, 429 pauses and the
circuit breaker's reset are crossed by advancing the clock, never by sleeping.
Each answer is timed with ``time.monotonic``: the bound (timeout + 1.5 s) is a
promise to the user, not a benchmark.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.guard import CircuitBreaker
from stockcache.upstream.router import DEFAULT_429_PAUSE
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 1.0
BOUND = TIMEOUT + 1.5  # every answer, whatever the upstream does
TTL_QUOTE = 300
# The breaker the fetcher builds for each provider (Fetcher's default CircuitBreaker()).
THRESHOLD = CircuitBreaker()._threshold
RESET = CircuitBreaker()._base_reset
CODE_RE = re.compile(r"[a-z][a-z0-9_]*")


@pytest.fixture
def fclock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def svc(tmp_path, upstream: FakeUpstream, fclock: FakeClock) -> Iterator[Live]:
    """The service with a 1 s upstream timeout, no per-second/minute budgets, and a fake clock."""
    settings = upstream_settings(tmp_path, upstream, upstream_timeout=TIMEOUT, finnhub_per_second=0,
                                 finnhub_per_minute=0, ttl_quote=TTL_QUOTE)
    live = start_service(settings, clock=fclock)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def user(svc: Live) -> Api:
    """A client with a token issued directly (logging in costs argon2 time these tests do not need)."""
    alice = svc.runtime.store.create_user("alice", "not-a-password-hash")
    return svc.api.as_user(svc.runtime.auth.issue_jwt(alice.id, alice.username, alice.is_admin))


def timed(api: Api, method: str, path: str, **kwargs: Any) -> requests.Response:
    """One request, checked against what every answer must be: in time, JSON, never a 500."""
    started = time.monotonic()
    answer = api.request(method, path, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"{method} {path} took {elapsed:.2f} s"
    assert answer.status_code in (200, 201, 204, 400, 404, 502, 503, 504), answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    if answer.status_code >= 400:
        assert CODE_RE.fullmatch(body["error"]["code"]) and body["error"]["message"]
    return answer


def quote(api: Api, symbol: str) -> requests.Response:
    return timed(api, "GET", f"/api/quote/{symbol}")


def error_code(answer: requests.Response) -> str:
    return answer.json()["error"]["code"]


def warm_then_expire(api: Api, clock: FakeClock, *symbols: str) -> None:
    """Cache fresh quotes, then move past their TTL (still inside the stale grace)."""
    for symbol in symbols:
        answer = quote(api, symbol)
        assert answer.status_code == 200 and answer.json()["stale"] is False
    clock.advance(TTL_QUOTE + 1)


# -- latency ----------------------------------------------------------------------------


def test_faults_latency_spike_below_timeout_still_answers_fresh(upstream, user):
    upstream.set_latency(0.6, symbol="AAPL")
    answer = quote(user, "AAPL")
    assert answer.status_code == 200
    assert answer.json()["cache"] == "upstream" and answer.json()["source"] == "finnhub"


def test_faults_latency_past_timeout_answers_504_in_time(upstream, user):
    upstream.set_latency(5.0, symbol="AAPL")
    answer = quote(user, "AAPL")
    assert answer.status_code == 504 and error_code(answer) == "upstream_timeout"


def test_faults_slow_primary_falls_back_to_secondary_within_deadline(upstream, user):
    upstream.set_latency(5.0, provider="finnhub")
    answer = quote(user, "AAPL")
    assert answer.status_code == 200 and answer.json()["source"] == "alphavantage"


def test_faults_latency_spike_serves_stale_data(upstream, user, fclock):
    warm_then_expire(user, fclock, "AAPL")
    upstream.set_latency(5.0)
    answer = quote(user, "AAPL")
    assert answer.status_code == 200
    assert answer.json()["stale"] is True and answer.json()["age"] > TTL_QUOTE


# -- HTTP errors, bad bodies, resets, hangs ----------------------------------------------

BROKEN = ["500", "502", "503", "html", "badjson", "wrongshape", "reset"]


@pytest.mark.parametrize("fault", BROKEN)
def test_faults_broken_primary_falls_back_to_secondary(upstream, user, fault):
    upstream.set_fault(fault, provider="finnhub")
    answer = quote(user, "AAPL")
    assert answer.status_code == 200 and answer.json()["source"] == "alphavantage"


@pytest.mark.parametrize("fault", BROKEN)
def test_faults_broken_everywhere_answers_json_502(upstream, user, fault):
    upstream.set_fault(fault)
    answer = quote(user, "AAPL")
    assert answer.status_code == 502 and error_code(answer) == "upstream_error"
    assert "TESTKEY" not in answer.text


@pytest.mark.parametrize("fault", BROKEN + ["hang"])
def test_faults_broken_everywhere_serves_stale_when_cached(upstream, user, fclock, fault):
    warm_then_expire(user, fclock, "AAPL")
    upstream.set_fault(fault)
    answer = quote(user, "AAPL")
    assert answer.status_code == 200 and answer.json()["stale"] is True
    assert answer.json()["symbol"] == "AAPL" and answer.json()["price"] > 0


def test_faults_hang_past_timeout_answers_504_in_time(upstream, user):
    upstream.set_fault("hang")
    answer = quote(user, "AAPL")
    assert answer.status_code == 504 and error_code(answer) == "upstream_timeout"


def test_faults_hang_does_not_hold_other_requests(upstream, user):
    """Hung upstream calls hold only their own items: other symbols are served meanwhile."""
    hung = [f"HUNG{i}" for i in range(3)]
    for symbol in hung:
        upstream.set_fault("hang", symbol=symbol)
    answer = timed(user, "POST", "/api/batch-quotes", json={"tickers": hung})
    assert set(answer.json()["errors"]) == set(hung)
    answer = quote(user, "MSFT")
    assert answer.status_code == 200 and answer.json()["cache"] == "upstream"


def test_faults_batch_reports_each_item_error(upstream, user):
    upstream.set_fault("500", symbol="MSFT")
    upstream.set_fault("hang", symbol="GOOG")
    upstream.set_fault("badjson", symbol="TSLA")
    tickers = ["AAPL", "MSFT", "GOOG", "TSLA", "ZZZZ1"]
    answer = timed(user, "POST", "/api/batch-quotes", json={"tickers": tickers})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body["quotes"]) == {"AAPL"}
    codes = {symbol: error["code"] for symbol, error in body["errors"].items()}
    assert codes == {"MSFT": "upstream_error", "GOOG": "upstream_timeout", "TSLA": "upstream_error",
                     "ZZZZ1": "symbol_not_found"}
    assert all(error["symbol"] == symbol for symbol, error in body["errors"].items())


def test_faults_batch_mixes_stale_and_fresh_and_errors(upstream, user, fclock):
    warm_then_expire(user, fclock, "AAPL")
    upstream.set_fault("503", symbol="AAPL")
    upstream.set_fault("503", symbol="MSFT")
    answer = timed(user, "GET", "/api/quotes?symbols=AAPL,MSFT,NVDA")
    body = answer.json()
    assert body["quotes"]["AAPL"]["stale"] is True
    assert body["quotes"]["NVDA"]["stale"] is False
    assert body["errors"]["MSFT"]["code"] == "upstream_error"


# -- 429 storms --------------------------------------------------------------------------


def test_faults_429_storm_with_retry_after_pauses_calls_and_says_when(upstream, user, fclock):
    upstream.set_fault("429", provider="finnhub", retry_after=30)
    upstream.set_fault("429", provider="alphavantage")
    first = quote(user, "AAPL")
    assert first.status_code == 503 and error_code(first) == "rate_limited"
    assert int(first.headers["Retry-After"]) >= 1
    assert first.json()["error"]["retry_after"] == int(first.headers["Retry-After"])
    assert upstream.calls("finnhub") == 1
    for symbol in ("MSFT", "GOOG", "NVDA", "AMZN", "META"):  # the storm: nobody calls finnhub again
        answer = quote(user, symbol)
        assert answer.status_code == 503 and "Retry-After" in answer.headers
    assert upstream.calls("finnhub") == 1
    fclock.advance(31)
    upstream.clear_faults()
    answer = quote(user, "AAPL")
    assert answer.status_code == 200 and answer.json()["source"] == "finnhub"


def test_faults_429_without_retry_after_pauses_the_default_and_says_so(upstream, user, fclock):
    upstream.set_fault("429", provider="finnhub")
    upstream.set_fault("429", provider="alphavantage")
    first = quote(user, "AAPL")
    assert first.status_code == 503 and error_code(first) == "rate_limited"
    assert int(first.headers["Retry-After"]) >= 1
    for symbol in ("MSFT", "GOOG", "NVDA"):
        assert quote(user, symbol).status_code == 503
    assert upstream.calls("finnhub") == 1
    fclock.advance(DEFAULT_429_PAUSE + 1)
    upstream.clear_faults()
    assert quote(user, "MSFT").status_code == 200
    assert upstream.calls("finnhub") == 2


def test_faults_429_at_primary_falls_back_and_serves_stale_when_both_limit(upstream, user, fclock):
    warm_then_expire(user, fclock, "AAPL")
    upstream.set_fault("429", provider="finnhub", retry_after=60)
    fallback = quote(user, "MSFT")
    assert fallback.status_code == 200 and fallback.json()["source"] == "alphavantage"
    upstream.set_fault("429", provider="alphavantage")
    fclock.advance(2)  # past Alpha Vantage's own one-second pause
    answer = quote(user, "AAPL")
    assert answer.status_code == 200 and answer.json()["stale"] is True


def test_faults_daily_cap_and_429_answer_503_with_retry_after_and_no_key(upstream, user):
    upstream.set_rate_limit("alphavantage", per_day=0)  # its answer quotes our key
    answer = timed(user, "GET", "/api/history/AAPL?days=5")
    # Only Alpha Vantage serves history (Finnhub candles are premium): its daily cap is a 503.
    assert answer.status_code == 503 and error_code(answer) == "rate_limited"
    assert int(answer.headers["Retry-After"]) >= 1 and "TESTKEY" not in answer.text
    upstream.set_fault("429", provider="finnhub")
    answer = quote(user, "MSFT")
    assert answer.status_code == 503 and error_code(answer) == "rate_limited"
    assert int(answer.headers["Retry-After"]) >= 1 and "TESTKEY" not in answer.text


# -- a total outage and the recovery ------------------------------------------------------


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_faults_outage_is_not_hammered_and_recovers_by_itself(svc, upstream, user, fclock, mode):
    warm_then_expire(user, fclock, "AAPL")
    before = {p: upstream.calls(p) for p in ("finnhub", "alphavantage")}
    upstream.set_outage(True, mode=mode)

    stale = quote(user, "AAPL")
    assert stale.status_code == 200 and stale.json()["stale"] is True
    symbols = [f"OUT{i}" for i in range(3 * THRESHOLD)]
    for symbol in symbols:
        answer = quote(user, symbol)
        assert answer.status_code == 502 and error_code(answer) == "upstream_error"
    batch = timed(user, "POST", "/api/batch-quotes", json={"tickers": symbols})
    assert batch.status_code == 200 and set(batch.json()["errors"]) == set(symbols)
    # Each provider got at most `threshold` calls, then its circuit opened.
    during = {p: upstream.calls(p) - before[p] for p in before}
    assert during == {"finnhub": THRESHOLD, "alphavantage": THRESHOLD}
    health = timed(svc.api, "GET", "/healthz").json()
    assert health["status"] == "degraded" and len(health["reasons"]) == 2

    # After the reset time one probe per provider goes through; it fails, the circuit re-opens.
    fclock.advance(RESET + 1)
    for symbol in symbols[:4]:
        assert quote(user, symbol).status_code == 502
    assert {p: upstream.calls(p) - before[p] for p in before} == {
        "finnhub": THRESHOLD + 1, "alphavantage": THRESHOLD + 1}

    # The provider is back; after the (doubled) reset time the next probe closes the circuit.
    upstream.set_outage(False)
    fclock.advance(2 * RESET + 1)
    recovered = quote(user, "AAPL")
    assert recovered.status_code == 200 and recovered.json()["stale"] is False
    assert recovered.json()["source"] == "finnhub"
    batch = timed(user, "POST", "/api/batch-quotes", json={"tickers": symbols})
    assert set(batch.json()["quotes"]) == set(symbols) and not batch.json()["errors"]
    # Alpha Vantage is only a fallback for quotes; history calls it first, and its probe closes it too.
    history = timed(user, "GET", "/api/history/AAPL?days=5")
    assert history.status_code == 200 and history.json()["source"] == "alphavantage"
    assert timed(svc.api, "GET", "/healthz").json()["status"] == "ok"


def test_faults_outage_of_primary_only_keeps_serving_from_secondary(upstream, user):
    upstream.set_fault("503", provider="finnhub")
    for i in range(2 * THRESHOLD):
        answer = quote(user, f"SEC{i}")
        assert answer.status_code == 200 and answer.json()["source"] == "alphavantage"
    assert upstream.calls("finnhub") == THRESHOLD  # open: later items go straight to the fallback


# -- a random mix -------------------------------------------------------------------------


def test_faults_random_mix_never_answers_500(upstream, user):
    upstream.set_error_rate(0.5, faults=("500", "502", "503", "429", "reset", "badjson", "wrongshape",
                                          "html"), seed=6)
    upstream.set_latency(0.3, symbol="SLOW1")
    upstream.set_latency(3.0, symbol="SLOW2")
    seen: set[int] = set()
    for i in range(12):
        seen.add(quote(user, f"MIX{i}").status_code)
        seen.add(timed(user, "GET", f"/api/profile/MIX{i}").status_code)
    for symbol in ("SLOW1", "SLOW2"):
        seen.add(quote(user, symbol).status_code)
    batch = timed(user, "POST", "/api/batch-quotes", json={"tickers": [f"MIXB{i}" for i in range(30)]})
    assert batch.status_code == 200
    assert len(batch.json()["quotes"]) + len(batch.json()["errors"]) == 30
    assert seen <= {200, 502, 503, 504}
