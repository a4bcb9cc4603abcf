"""Upstream resilience through the real HTTP service: one deadline per exchange, per-provider lanes,
per-symbol refusals that never switch a provider off.

Like ``test_faults.py``: waitress on loopback, the fake upstream, a 1 s upstream
timeout and an injected clock (TTLs and the refusal memory are crossed by
advancing it). Waits for the fake are on its own events (``wait_hanging``) or
polls with a deadline, never sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.guard import CircuitBreaker
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 1.0
BOUND = TIMEOUT + 1.5  # every answer, whatever the upstream does
SLACK = 1.0  # scheduling noise on a loaded 2-core box
WORKERS = 8  # each provider's lane; small, so saturating it is cheap
TTL_QUOTE = 300
REFUSAL_TTL = 86400  # STOCKCACHE_REFUSAL_TTL's default
THRESHOLD = CircuitBreaker()._threshold
# Listings Finnhub's free plan refuses and Alpha Vantage serves.
NON_US = ["SAP.DE", "VOD.L", "MC.PA", "ASML.AS", "RY.TO", "SAP.F", "0700.HK"]


def _settings(tmp_path, upstream: FakeUpstream, **overrides: Any):
    values: dict[str, Any] = {"upstream_timeout": TIMEOUT, "finnhub_per_second": 0, "finnhub_per_minute": 0,
                              "ttl_quote": TTL_QUOTE, "workers": WORKERS}
    values.update(overrides)
    return upstream_settings(tmp_path, upstream, **values)


@pytest.fixture
def fclock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(tmp_path, upstream: FakeUpstream, fclock: FakeClock) -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def make(**overrides: Any) -> Live:
        live = start_service(_settings(tmp_path, upstream, **overrides), clock=fclock)
        started.append(live)
        return live

    yield make
    upstream.release_hangs()
    for live in started:
        live.stop()


@pytest.fixture
def svc(make_service: Callable[..., Live]) -> Live:
    return make_service()


def user_of(live: Live) -> Api:
    """A client with a token issued directly (logging in costs argon2 time these tests do not need)."""
    found = live.runtime.store.get_user_by_name("alice")
    alice = found[0] if found else live.runtime.store.create_user("alice", "not-a-password-hash", is_admin=True)
    return live.api.as_user(live.runtime.auth.issue_jwt(alice.id, alice.username, alice.is_admin))


def timed(api: Api, method: str, path: str, **kwargs: Any) -> requests.Response:
    started = time.monotonic()
    answer = api.request(method, path, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"{method} {path} took {elapsed:.2f} s"
    assert answer.status_code != 500, answer.text
    return answer


def eventually(condition: Callable[[], bool], within: float) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


def health(live: Live) -> dict[str, Any]:
    return live.api.get("/healthz").json()


# -- fault 4: one deadline for the whole exchange, and lanes --------------------------------------


def test_upstream_header_trickle_answers_504_at_the_deadline_and_lets_go_of_the_connection(svc, upstream):
    # Status line and headers a byte every 0.2 s: every socket read succeeds, so only a
    # deadline that covers the headers ends it.
    upstream.set_fault("trickle_headers")
    answer = timed(user_of(svc), "GET", "/api/quote/AAPL")
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "upstream_timeout"
    # Both providers' exchanges were cut off at their deadline: the fake has nobody left to trickle to.
    assert eventually(lambda: not upstream.wait_hanging(1, timeout=0), within=2 * TIMEOUT + SLACK)
    assert eventually(lambda: svc.runtime.service.router.transport.pool()["finnhub"]["in_flight"] == 0, within=SLACK)


def test_upstream_header_trickle_of_a_big_batch_leaves_other_symbols_and_providers_served(svc, upstream):
    user = user_of(svc)
    trickling = [f"TRK{i}" for i in range(40)]
    for symbol in trickling:
        upstream.set_fault("trickle_headers", symbol=symbol, provider="finnhub")
    answers: dict[str, requests.Response] = {}
    batch = threading.Thread(target=lambda: answers.update(
        batch=user.post("/api/batch-quotes", json={"tickers": trickling})))
    batch.start()
    try:
        assert upstream.wait_hanging(WORKERS, timeout=5)  # every Finnhub connection is held

        # Another provider keeps its own lane and threads: history (Alpha Vantage) does not wait.
        started = time.monotonic()
        history = timed(user, "GET", "/api/history/IBM?days=5")
        assert history.status_code == 200 and history.json()["source"] == "alphavantage"
        assert time.monotonic() - started < TIMEOUT / 2

        # /healthz says Finnhub's lane is full, from counters (no I/O).
        body = health(svc)
        assert body["status"] == "degraded"
        assert any("finnhub is saturated" in reason for reason in body["reasons"]), body
        assert body["upstream_pool"]["finnhub"]["in_flight"] == WORKERS
        assert body["upstream_pool"]["finnhub"]["waiting"] > 0

        # A healthy symbol asked meanwhile is answered in time (Finnhub's lane frees at the deadline).
        quote = timed(user, "GET", "/api/quote/MSFT")
        assert quote.status_code == 200 and quote.json()["symbol"] == "MSFT"
    finally:
        batch.join(timeout=BOUND + SLACK)
    assert not batch.is_alive()
    assert answers["batch"].status_code == 200
    assert set(answers["batch"].json()["quotes"]) | set(answers["batch"].json()["errors"]) == set(trickling)
    # Saturation ends with the deadline: the reason goes away by itself.
    assert eventually(lambda: not any("saturated" in r for r in health(svc).get("reasons", ())),
                      within=2 * TIMEOUT + SLACK)


# -- fault 5: per-symbol refusals -------------------------------------------------------------------


# On the free plan (the default) Finnhub is never asked for a listing outside the US. These tests
# set STOCKCACHE_FINNHUB_PLAN=paid against the fake's free plan: a plan that does not serve every
# listing it is asked for (a mistaken setting, or a paid plan without some market) refuses them.


@pytest.mark.parametrize("status", [403, 401])
def test_upstream_finnhub_refusing_non_us_listings_never_opens_its_circuit(make_service, upstream, status):
    svc = make_service(finnhub_plan="paid")
    upstream.set_no_access_status(status)  # the real API says it with 403, and sometimes 401
    user = user_of(svc)
    for symbol in NON_US:  # more than the breaker's threshold, one after another
        answer = timed(user, "GET", f"/api/quote/{symbol}")
        assert answer.status_code == 200 and answer.json()["source"] == "alphavantage", answer.text
    assert len(NON_US) > THRESHOLD
    assert upstream.calls("finnhub", "quote") == len(NON_US)
    assert svc.runtime.service.router.breakers["finnhub"].state == "closed"
    assert health(svc)["status"] == "ok"
    # Every user's US symbols still come from Finnhub.
    answer = timed(user, "GET", "/api/quote/AAPL")
    assert answer.status_code == 200 and answer.json()["source"] == "finnhub"


def test_upstream_refusal_is_remembered_across_restarts_so_retries_spend_no_quota(make_service, upstream, fclock):
    live = make_service(finnhub_plan="paid")
    user = user_of(live)
    assert timed(user, "GET", "/api/quote/SAP.DE").json()["source"] == "alphavantage"
    assert upstream.calls("finnhub", symbol="SAP.DE") == 1

    fclock.advance(TTL_QUOTE + 1)  # the quote expired; the refusal did not
    answer = timed(user, "GET", "/api/quote/SAP.DE")
    assert answer.status_code == 200 and answer.json()["cache"] == "upstream"
    assert answer.json()["source"] == "alphavantage"
    assert upstream.calls("finnhub", symbol="SAP.DE") == 1  # straight to the next provider
    finnhub = user.get("/api/cache/stats").json()["upstream"]["finnhub"]
    assert (finnhub["refused"], finnhub["refusals_skipped"]) == (1, 1)
    assert finnhub["errors"] == 0 and finnhub["circuit"] == "closed"

    live.stop()
    live = make_service(finnhub_plan="paid")  # the same data dir: the refusal is in cache.sqlite
    user = user_of(live)
    fclock.advance(TTL_QUOTE + 1)
    assert timed(user, "GET", "/api/quote/SAP.DE").json()["source"] == "alphavantage"
    assert upstream.calls("finnhub", symbol="SAP.DE") == 1

    fclock.advance(REFUSAL_TTL)  # remembered for a day, then asked again
    assert timed(user_of(live), "GET", "/api/quote/SAP.DE").status_code == 200
    assert upstream.calls("finnhub", symbol="SAP.DE") == 2


def test_upstream_refusal_with_no_other_provider_is_a_clear_error_that_costs_one_call(make_service, upstream):
    live = make_service(alphavantage_api_key="", finnhub_plan="paid")
    user = user_of(live)
    for _ in range(3):
        answer = timed(user, "GET", "/api/quote/VOD.L")
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "upstream_error" and error["symbol"] == "VOD.L"
        assert "VOD.L is not available from finnhub" in error["message"]
        assert "key" not in error["message"].lower()  # not a key problem
    assert upstream.calls("finnhub", symbol="VOD.L") == 1
    batch = timed(user, "POST", "/api/batch-quotes", json={"tickers": ["VOD.L", "AAPL"]}).json()
    assert set(batch["quotes"]) == {"AAPL"} and set(batch["errors"]) == {"VOD.L"}
    assert upstream.calls("finnhub", symbol="VOD.L") == 1
    assert health(live)["status"] == "ok"


def test_upstream_malformed_bodies_for_one_symbol_do_not_open_the_circuit(svc, upstream):
    upstream.set_fault("badjson", symbol="BROKEN")  # both providers choke on this one symbol
    user = user_of(svc)
    for _ in range(2 * THRESHOLD):
        assert timed(user, "GET", "/api/quote/BROKEN").status_code == 502
    assert upstream.calls("finnhub", symbol="BROKEN") == 2 * THRESHOLD  # not cached: each retry asks again
    assert svc.runtime.service.router.breakers["finnhub"].state == "closed"
    assert health(svc)["status"] == "ok"
    answer = timed(user, "GET", "/api/quote/AAPL")
    assert answer.status_code == 200 and answer.json()["source"] == "finnhub"


def test_upstream_malformed_bodies_across_symbols_still_open_the_circuit(svc, upstream):
    upstream.set_fault("badjson", provider="finnhub")  # a broken provider fails every symbol
    user = user_of(svc)
    for i in range(2 * THRESHOLD):
        assert timed(user, "GET", f"/api/quote/BAD{i}").json()["source"] == "alphavantage"
    assert upstream.calls("finnhub") == THRESHOLD
    assert svc.runtime.service.router.breakers["finnhub"].state == "open"


def test_upstream_bad_key_is_still_a_provider_failure_even_for_one_symbol(make_service, upstream):
    upstream.set_expected_key("finnhub", "another-key")  # 401 {"error": "Invalid API key"}
    live = make_service(alphavantage_api_key="")
    user = user_of(live)
    for _ in range(2 * THRESHOLD):
        assert timed(user, "GET", "/api/quote/AAPL").status_code == 502
    assert upstream.calls("finnhub") == THRESHOLD  # then the circuit is open, for everyone
    body = health(live)
    assert body["status"] == "degraded" and any("finnhub is failing" in r for r in body["reasons"])
