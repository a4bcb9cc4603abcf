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

from bench.fake_upstream import FakeUpstream
from stockcache.cache import open_cache
from stockcache.metrics import Metrics
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings
from tests.redis_server import redis_url  # noqa: F401 (fixture)

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


# -- fault 2: amounts a client sends ------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "bounds"), [
    ("cost_basis", 1e-320, "0 or a number from 1e-08 to 1e+09"),  # the trial's subnormal
    ("cost_basis", 5e-324, "0 or a number from 1e-08 to 1e+09"),
    ("cost_basis", 1e-9, "0 or a number from 1e-08 to 1e+09"),
    ("cost_basis", 2e9, "0 or a number from 1e-08 to 1e+09"),
    ("shares", 1e-320, "a number from 1e-08 to 1e+15"),
    ("shares", 1e-9, "a number from 1e-08 to 1e+15"),
    ("shares", 2e15, "a number from 1e-08 to 1e+15"),
])
def test_portfolio_refuses_amounts_out_of_bounds_and_names_the_bounds(alice, field, value, bounds):
    body = {"symbol": "AAPL", "shares": 1, "cost_basis": 1, field: value}
    answer = alice.post("/api/portfolio", json=body)
    error = strict(answer)["error"]
    assert answer.status_code == 400 and error["code"] == "invalid_request" and error["field"] == field
    assert bounds in error["message"]
    created = strict(alice.post("/api/portfolio", json={"symbol": "AAPL", "shares": 1, "cost_basis": 1}))
    assert created.pop("verified") is True
    answer = alice.put(f"/api/portfolio/{created['id']}", json={field: value})
    assert answer.status_code == 400 and strict(answer)["error"]["field"] == field
    assert strict(alice.get("/api/portfolio"))["positions"] == [created]  # nothing changed
    assert strict(alice.get("/api/portfolio/performance"))["totals"]["gain_percent"] is not None


def _legacy_position(store, user_id: int, symbol: str, shares: float, cost: float) -> int:
    """A row only an old SQLite store took (infinite shares), written straight into its file."""
    import sqlite3

    conn = sqlite3.connect(store.path, isolation_level=None)
    try:
        cur = conn.execute("INSERT INTO positions (user_id, symbol, shares, cost_basis, created_at, updated_at)"
                           " VALUES (?, ?, ?, ?, 'x', 'x')", (user_id, symbol, shares, cost))
        return int(cur.lastrowid or 0)
    finally:
        conn.close()


def test_portfolio_performance_is_finite_for_rows_stored_before_the_bounds(live, alice):
    # Rows written before the input bounds existed, straight into the store as the old code let them in.
    store = live.runtime.store
    user = store.get_user_by_name("alice")[0]
    rows = {
        store.add_position(user.id, "AAPL", 1, 1e-320).id: "AAPL",  # the trial's position: gain % was inf
        store.add_position(user.id, "MSFT", 1e-320, 100).id: "MSFT",
        store.add_position(user.id, "IBM", 1e300, 1e300).id: "IBM",  # cost overflows
        _legacy_position(store, user.id, "NVDA", math.inf, 1): "NVDA",  # the store refuses this one now
        store.add_position(user.id, "KO", 10, 50).id: "KO",  # a sane one, for the totals
    }
    for _ in range(2):  # from the upstream, then from the cache
        answer = alice.get("/api/portfolio/performance")
        body = strict(answer)
        assert answer.status_code == 200 and body["errors"] == {}
        by_id = {p["id"]: p for p in body["positions"]}
        assert set(by_id) == set(rows)
        assert all(p["price"] > 0 for p in by_id.values())
        aapl, ko = by_id[next(i for i, s in rows.items() if s == "AAPL")], by_id[next(
            i for i, s in rows.items() if s == "KO")]
        assert aapl["gain_percent"] is None and aapl["value"] == round(aapl["price"], 4)
        assert ko["gain_percent"] is not None
        # The totals keep what is finite: KO, AAPL and MSFT have a finite value, cost and day change.
        assert body["totals"]["value"] is not None and body["totals"]["gain_percent"] is not None


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


# -- fault 9: bad cache entries -----------------------------------------------------------------


def _quote(symbol: str = "AAPL", **changes: Any) -> dict[str, Any]:
    data = {"symbol": symbol, "price": 123.45, "change": 1.5, "change_percent": 1.23, "high": 124.0,
            "low": 122.0, "open": 122.5, "previous_close": 121.95, "timestamp": int(time.time()),
            "currency": "USD", "exchange": None}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def _envelope(data: Any, **changes: Any) -> dict[str, Any]:
    return {"data": data, "source": "finnhub", "fetched_at": time.time(), **changes}


# Values shaped like the service's own entries, with the bad fields the trial found.
BAD_ENTRIES = {
    "missing price": _envelope(_quote(price=_DROP)),
    "non-numeric price": _envelope(_quote(price="lots")),
    "negative price": _envelope(_quote(price=-5)),
    "zero price": _envelope(_quote(price=0)),
    "price 1e308": _envelope(_quote(price=1e308)),
    "another symbol": _envelope(_quote("OTHER")),
    # Written before quotes carried their currency (when London prices were pence shown as pounds).
    "no currency field": _envelope(_quote(currency=_DROP, exchange=_DROP)),
    "a minor unit": _envelope(_quote(currency="GBX")),
    "fetched_at 1e300": _envelope(_quote(), fetched_at=1e300),
    "an extra nested field": _envelope(_quote(extra={"a": [[[1]]]})),
    "a timestamp in 9999": _envelope(_quote(timestamp=253402214400)),
    "unknown error code": {"error": {"code": "teapot", "message": "short and stout"}, "source": "finnhub",
                           "fetched_at": time.time()},
    "an error the service never caches": {"error": {"code": "unauthorized", "message": "go away"},
                                          "source": "finnhub", "fetched_at": time.time()},
    "a not-found for another symbol": {"error": {"code": "symbol_not_found", "message": "no", "symbol": "OTHER"},
                                       "source": "finnhub", "fetched_at": time.time()},
}


def _check_served_fresh(live: Live, upstream: FakeUpstream, alice: Api) -> None:
    """AAPL is a miss (fetched, right symbol, sane price); MSFT's good entry serves; nothing 500s."""
    answer = alice.get("/api/quote/AAPL")
    quote = strict(answer)
    assert answer.status_code == 200, quote
    assert quote["symbol"] == "AAPL" and quote["cache"] == "upstream" and 0 < quote["price"] != 123.45
    assert upstream.calls(endpoint="quote", symbol="AAPL") == 1
    batch = strict(alice.post("/api/batch-quotes", json={"tickers": ["AAPL", "MSFT", "KO"]}))
    assert set(batch["quotes"]) == {"AAPL", "MSFT", "KO"} and batch["errors"] == {}
    assert batch["quotes"]["MSFT"]["price"] == 123.45  # a valid planted entry is served as it is
    for symbol in ("AAPL", "MSFT"):
        assert alice.post("/api/portfolio", json={"symbol": symbol, "shares": 2, "cost_basis": 100}).ok
    performance = strict(alice.get("/api/portfolio/performance"))
    assert performance["errors"] == {} and all(p["price"] > 0 for p in performance["positions"])


@pytest.mark.parametrize("case", list(BAD_ENTRIES))
def test_cache_entry_written_through_the_python_api_into_sqlite_is_a_miss_when_bad(tmp_path, upstream, case):
    settings = upstream_settings(tmp_path, upstream)
    with open_cache(settings=settings, janitor_interval=None) as cache:  # another program, same data dir
        cache.set("quote:AAPL", BAD_ENTRIES[case], ttl_level="quote")
        cache.set("quote:MSFT", _envelope(_quote("MSFT")), ttl_level="quote")
        cache.set("quote:KO", BAD_ENTRIES[case], ttl_level="quote")
    live = start_service(settings)
    try:
        _check_served_fresh(live, upstream, token_for(live, "alice"))
        assert upstream.calls(endpoint="quote", symbol="MSFT") == 0
    finally:
        live.stop()
    with open_cache(settings=settings, janitor_interval=None) as cache:  # dropped, then overwritten
        stored = cache.get("quote:AAPL")
        assert stored["data"]["symbol"] == "AAPL" and stored["data"]["price"] != 123.45


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


# Raw Redis values: every bad entry above as the tier's JSON triple, plus nesting deeper than
# the JSON decoder's recursion limit (RecursionError in the trial) and nesting that decodes.
def _redis_values() -> dict[str, str]:
    now = time.time()
    values = {case: json.dumps([value, now, now + 300]) for case, value in BAD_ENTRIES.items()}
    values["nested past the decoder's limit"] = f"[{_nested(100_000)}, {now}, {now + 300}]"
    values["nested data that decodes"] = json.dumps([_envelope({"symbol": "AAPL", "price": 1.0}), now, now + 300]
                                                    ).replace('"price": 1.0', '"price": ' + _nested(400))
    return values


REDIS_VALUES = _redis_values()


@pytest.mark.parametrize("case", list(REDIS_VALUES))
def test_cache_entry_written_into_redis_is_a_miss_when_bad(tmp_path, upstream, redis_url, case):  # noqa: F811
    import redis

    settings = upstream_settings(tmp_path, upstream, redis_url=redis_url)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"{settings.redis_namespace}:cache:"
    now = time.time()
    client.set(prefix + "quote:AAPL", REDIS_VALUES[case], px=300_000)
    client.set(prefix + "quote:KO", REDIS_VALUES[case], px=300_000)
    client.set(prefix + "quote:MSFT", json.dumps([_envelope(_quote("MSFT")), now, now + 300]), px=300_000)
    live = start_service(settings)
    try:
        _check_served_fresh(live, upstream, token_for(live, "alice"))
        assert upstream.calls(endpoint="quote", symbol="MSFT") == 0
        value, _, _ = json.loads(client.get(prefix + "quote:AAPL"))  # the fetch wrote a good entry
        assert value["data"]["symbol"] == "AAPL" and value["data"]["price"] != 123.45
    finally:
        live.stop()
        client.close()


def test_cache_entry_bad_for_one_kind_is_a_miss_for_profile_history_and_news(tmp_path, upstream):
    settings = upstream_settings(tmp_path, upstream)
    now = time.time()
    with open_cache(settings=settings, janitor_interval=None) as cache:
        cache.set("profile:AAPL", _envelope({"symbol": "AAPL", "name": "x", "market_cap": -1.0}),
                  ttl_level="fundamentals")
        cache.set("history:AAPL", _envelope({"symbol": "AAPL", "interval": "1d", "candles": [
            {"date": "9999-12-31", "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1}]}),
            ttl_level="history")
        cache.set("news:AAPL:7", _envelope({"symbol": "AAPL", "articles": [
            {"headline": "h", "summary": "", "url": "u", "source": "s", "published_at": "9999-01-01T00:00:00Z",
             "image": None}]}, fetched_at=now), ttl_level="news")
    live = start_service(settings)
    try:
        alice = token_for(live, "alice")
        for path in ("/api/profile/AAPL", "/api/history/AAPL", "/api/news/AAPL"):
            answer = alice.get(path)
            body = strict(answer)
            assert answer.status_code == 200 and body["cache"] == "upstream", (path, body)
    finally:
        live.stop()


def test_cache_entry_checked_once_then_memory_hits_skip_the_check(tmp_path, upstream, monkeypatch):
    import stockcache.readthrough as readthrough_module

    checked: list[str] = []
    real = readthrough_module.check_envelope

    def counting(kind: Any, symbol: str, value: Any) -> None:
        checked.append(symbol)
        real(kind, symbol, value)

    monkeypatch.setattr(readthrough_module, "check_envelope", counting)
    settings = upstream_settings(tmp_path, upstream)
    with open_cache(settings=settings, janitor_interval=None) as cache:
        cache.set("quote:MSFT", _envelope(_quote("MSFT")), ttl_level="quote")
    live = start_service(settings)
    try:
        alice = token_for(live, "alice")
        first = strict(alice.get("/api/quote/MSFT"))
        assert first["cache"] == "sqlite" and checked == ["MSFT"]
        for _ in range(5):
            assert strict(alice.get("/api/quote/MSFT"))["cache"] == "memory"
        assert checked == ["MSFT"]  # promoted as the very value that was checked
        strict(alice.get("/api/quote/AAPL"))  # an upstream answer: checked by its provider
        strict(alice.get("/api/quote/AAPL"))  # its cache copy, made by this process, is known valid
        strict(alice.get("/api/quote/AAPL"))
        assert checked == ["MSFT"]
    finally:
        live.stop()

