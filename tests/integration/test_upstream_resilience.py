"""Upstream resilience through the real HTTP service: one deadline per exchange, per-provider lanes.

Like ``test_faults.py``: waitress on loopback, the fake upstream, a 1 s upstream
timeout and an injected clock. Waits for the fake are on its own events (``wait_hanging``) or
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
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(90)

TIMEOUT = 1.0
BOUND = TIMEOUT + 1.5  # every answer, whatever the upstream does
SLACK = 1.0  # scheduling noise on a loaded 2-core box
WORKERS = 8  # each provider's lane; small, so saturating it is cheap


def _settings(tmp_path, upstream: FakeUpstream, **overrides: Any):
    values: dict[str, Any] = {"upstream_timeout": TIMEOUT, "finnhub_per_second": 0, "finnhub_per_minute": 0,
                              "workers": WORKERS}
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
    assert eventually(lambda: svc.runtime.service.fetcher.pool()["finnhub"]["in_flight"] == 0, within=SLACK)


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
