"""The fetcher against a misbehaving upstream on loopback: bounded answers, clean shutdown."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.budget import Budget, Limits
from stockcache.errors import UpstreamError, UpstreamTimeout
from stockcache.fetcher import Fetcher
from stockcache.metrics import Metrics
from stockcache.providers import FinnhubProvider
from stockcache.service import DEADLINE_MARGIN

from .conftest import FINNHUB_KEY, start_service, upstream_settings

TIMEOUT = 1.0
SLACK = 1.0  # scheduling noise on a loaded 2-core CI box


def _finnhub_fetcher(upstream: FakeUpstream, *, timeout: float = TIMEOUT) -> Fetcher:
    provider = FinnhubProvider(api_key=FINNHUB_KEY, base_url=upstream.finnhub_url)
    return Fetcher({"finnhub": provider}, {"finnhub": Budget("finnhub", Limits())}, workers=4, timeout=timeout,
                   metrics=Metrics())


def _eventually(condition, within: float) -> bool:
    """Poll ``condition`` until it holds or ``within`` seconds pass (no fixed sleeps)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.01)
    return True


def test_fetcher_limits_trickling_answer_times_out_on_the_whole_answer(upstream):
    upstream.set_fault("trickle")  # every socket read gets a byte, so no read timeout ever fires
    fetcher = _finnhub_fetcher(upstream)
    try:
        started = time.monotonic()
        flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ("finnhub",))
        assert flight.wait(TIMEOUT + SLACK), "the flight outlived the upstream timeout"
        assert isinstance(flight.error, UpstreamTimeout)
        assert time.monotonic() - started >= TIMEOUT * 0.9
        assert fetcher.in_flight() == 0
        # The connection was closed, not left trickling into a pool thread.
        assert _eventually(lambda: not upstream.wait_hanging(1, timeout=0), within=2.0)
    finally:
        fetcher.close()


def test_fetcher_limits_huge_answer_fails_as_too_large(upstream):
    upstream.set_fault("huge")  # a valid, parseable quote padded to 8 MB
    fetcher = _finnhub_fetcher(upstream, timeout=5.0)
    try:
        flight = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ("finnhub",))
        assert flight.wait(10)
        assert isinstance(flight.error, UpstreamError) and not isinstance(flight.error, UpstreamTimeout)
        assert "too large" in flight.error.message
        upstream.clear_faults()
        again = fetcher.fetch("quote:AAPL", "quote", "AAPL", {}, ("finnhub",))
        assert again.wait(10) and again.result is not None  # the provider is still usable
    finally:
        fetcher.close()


@pytest.fixture
def slow_live(tmp_path, upstream):
    service = start_service(upstream_settings(tmp_path, upstream, upstream_timeout=TIMEOUT))
    try:
        yield service
    finally:
        upstream.release_hangs()
        service.stop()


def test_fetcher_limits_trickling_upstream_answers_504_in_time_and_frees_the_flight(slow_live, upstream):
    user = slow_live.add_user("alice")
    upstream.set_fault("trickle")
    started = time.monotonic()
    answer = user.get("/api/quote/AAPL")
    elapsed = time.monotonic() - started
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "upstream_timeout"
    assert elapsed < TIMEOUT + DEADLINE_MARGIN + SLACK
    # Primary and fallback each end at the timeout, so nothing is left holding a pool thread.
    fetcher = slow_live.runtime.service.fetcher
    assert _eventually(lambda: fetcher.in_flight() == 0, within=2 * TIMEOUT + SLACK)


def test_fetcher_limits_huge_upstream_answer_is_a_502(slow_live, upstream):
    user = slow_live.add_user("alice")
    upstream.set_fault("huge")
    answer = user.get("/api/quote/AAPL")
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "upstream_error" and "too large" in error["message"]
    assert FINNHUB_KEY not in json.dumps(error)
