"""No bad number in, none out: client amounts, upstream answers and cache entries, over real HTTP.

The service runs on waitress against the fake upstream (``bench/fake_upstream.py``).
Out-of-range upstream values come from its "outofrange" fault; bad cache entries are
written the ways the issue's trial wrote them: through the Python API
(``open_cache(...).set``) into a real ``cache.sqlite`` before the service starts, and
as raw values into a real redis-server. Every answer is parsed strictly: a NaN or an
infinity anywhere fails the test, and so does a 500.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from stockcache.metrics import Metrics
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"the answer holds {name}, which is not JSON")


def strict(answer: requests.Response) -> Any:
    """The body as JSON, failing on NaN/Infinity or a float that overflows; never a 500."""
    assert answer.status_code != 500, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    body = json.loads(answer.text, parse_constant=_refuse_constant)
    for number in _numbers(body):
        assert math.isfinite(number), answer.text[:300]
    return body


def _numbers(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, float | int) and not isinstance(value, bool):
        yield float(value)


def token_for(live: Live, name: str) -> Api:
    """A client with a JWT issued directly (logging in costs argon2 time these tests do not need)."""
    user = live.runtime.store.create_user(name, "not-a-password-hash")
    return live.api.as_user(live.runtime.auth.issue_jwt(user.id, user.username, user.is_admin))


@pytest.fixture
def alice(live: Live) -> Api:
    return token_for(live, "alice")


# -- fault 3: out-of-range upstream answers --------------------------------------------------------


@pytest.mark.parametrize(("path", "provider", "variant", "expect"), [
    ("/api/quote/AAPL", None, "negative", "upstream_error"),  # {"c": -5}
    ("/api/quote/AAPL", None, "huge", "upstream_error"),  # {"c": 1e308}
    ("/api/quote/AAPL", None, "tiny", "upstream_error"),  # a subnormal price
    ("/api/quote/AAPL", "finnhub", "future", "alphavantage"),  # t in 9999: the fallback answers
    ("/api/profile/AAPL", None, "negative", "upstream_error"),
    ("/api/profile/AAPL", None, "huge", "upstream_error"),
    ("/api/profile/AAPL", None, "long", "upstream_error"),
    ("/api/profile/AAPL", "finnhub", "future", "alphavantage"),  # an IPO in 9999
    ("/api/history/AAPL", None, "negative", "upstream_error"),
    ("/api/history/AAPL", None, "future", "upstream_error"),  # a bar dated 9999-12-31
    ("/api/news/AAPL", None, "future", "upstream_error"),
    ("/api/news/AAPL", None, "long", "upstream_error"),
])
def test_upstream_out_of_range_answer_is_that_symbols_upstream_error_and_never_cached(
        live, upstream, alice, path, provider, variant, expect):
    service = live.runtime.service
    upstream.set_fault("outofrange", symbol="AAPL", provider=provider, variant=variant)
    answer = alice.get(path)
    body = strict(answer)
    if expect == "upstream_error":
        assert answer.status_code == 502 and body["error"]["code"] == "upstream_error", body
        assert body["error"]["symbol"] == "AAPL"
    else:
        assert answer.status_code == 200 and body["source"] == expect and body["symbol"] == "AAPL", body
    # Counted against the provider like any malformed answer.
    assert sum(service.metrics.get(Metrics.UPSTREAM_ERRORS, name) for name in ("finnhub", "alphavantage")) >= 1
    # Nothing bad was cached: once the upstream is sane, the next read goes to it.
    upstream.clear_faults()
    calls = upstream.calls()
    again = alice.get(path)
    fresh = strict(again)
    assert again.status_code == 200 and fresh["symbol"] == "AAPL"
    if expect == "upstream_error":
        assert fresh["cache"] == "upstream" and upstream.calls() > calls
    else:
        assert fresh["cache"] == "memory" and fresh["source"] == expect  # the fallback's sane answer


@pytest.mark.parametrize(("path", "variant"), [
    ("/finnhub/api/v1/stock/metric?symbol=AAPL&metric=all", "huge"),
    ("/finnhub/api/v1/search?q=apple", "long"),
])
def test_upstream_out_of_range_metric_or_search_is_an_upstream_error_on_the_dropin_route(
        live, upstream, path, variant):
    auth = live.runtime.auth
    live.runtime.store.create_user("script", "not-a-password-hash")
    secret, _ = auth.create_api_token("script", label="drop-in")
    upstream.set_fault("outofrange", variant=variant)
    answer = requests.get(live.url + path, headers={"X-Finnhub-Token": secret}, timeout=30)
    assert answer.status_code == 502 and strict(answer)["error"], answer.text
    upstream.clear_faults()
    answer = requests.get(live.url + path, headers={"X-Finnhub-Token": secret}, timeout=30)
    assert answer.status_code == 200 and strict(answer)


def test_upstream_price_of_1e308_leaves_batch_and_performance_answering(live, upstream, alice):
    upstream.set_fault("outofrange", symbol="AAPL", variant="huge")  # both providers say 1e308
    for symbol in ("AAPL", "MSFT"):
        assert alice.post("/api/portfolio", json={"symbol": symbol, "shares": 10, "cost_basis": 100}).ok
    answer = alice.get("/api/portfolio/performance")
    body = strict(answer)
    assert answer.status_code == 200
    by_symbol = {p["symbol"]: p for p in body["positions"]}
    assert by_symbol["AAPL"]["price"] is None and body["errors"]["AAPL"]["code"] == "upstream_error"
    assert by_symbol["MSFT"]["price"] > 0 and body["totals"]["value"] == by_symbol["MSFT"]["value"]
    batch = strict(alice.post("/api/batch-quotes", json={"tickers": ["AAPL", "MSFT"]}))
    assert set(batch["quotes"]) == {"MSFT"} and batch["errors"]["AAPL"]["code"] == "upstream_error"


def test_upstream_out_of_range_answer_leaves_the_stale_copy_served(tmp_path, upstream):
    clock = FakeClock(time.time())
    live = start_service(upstream_settings(tmp_path, upstream, ttl_quote=60), clock=clock)
    try:
        alice = token_for(live, "alice")
        good = strict(alice.get("/api/quote/AAPL"))
        clock.advance(61)
        upstream.set_fault("outofrange", symbol="AAPL", variant="negative")
        stale = strict(alice.get("/api/quote/AAPL"))
        assert stale["stale"] is True and stale["price"] == good["price"]
    finally:
        live.stop()
