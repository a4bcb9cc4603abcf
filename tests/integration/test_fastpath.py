"""Cached quotes and profiles answered past Bottle (web.fastpath): the same answers, errors and counts as the routes."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.conftest import Live, start_service, upstream_settings

NOW = 1_796_000_000.0  # a frozen clock: a cached answer's "age" is the same on both paths


@pytest.fixture
def frozen(tmp_path, upstream) -> Iterator[Live]:
    service = start_service(upstream_settings(tmp_path, upstream), clock=lambda: NOW)
    try:
        yield service
    finally:
        service.stop()


def _bottle_requests(live: Live) -> list[str]:
    """The paths Bottle itself handles from now on (the fast path never reaches it)."""
    seen: list[str] = []
    live.server.app.add_hook("before_request", lambda: seen.append(__import__("bottle").request.path))
    return seen


def _without_date(headers: requests.structures.CaseInsensitiveDict[str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items() if name.lower() != "date"}


@pytest.mark.parametrize("path", ["/api/quote/AAPL", "/api/profile/AAPL"])
def test_fastpath_answers_a_cached_read_exactly_as_the_route_does(frozen: Live, path: str) -> None:
    api = frozen.add_user("alice")
    first = api.get(path)  # a miss: Bottle's route fetches it
    assert first.status_code == 200 and first.json()["cache"] == "upstream"
    bottle_saw = _bottle_requests(frozen)
    fast = api.get(path)
    routed = api.get(path + "?via=route")  # a query string always goes to the route
    assert bottle_saw == [path]  # the first of the two never reached Bottle, the second did
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert fast.json()["cache"] == "memory" and fast.json()["symbol"] == "AAPL"
    assert _without_date(fast.headers) == _without_date(routed.headers)
    assert fast.headers["X-Frame-Options"] == "DENY" and fast.headers["Cache-Control"] == "no-store"


def test_fastpath_lowercase_symbol_is_the_same_cached_answer(frozen: Live) -> None:
    api = frozen.add_user("alice")
    api.get("/api/quote/MSFT")
    bottle_saw = _bottle_requests(frozen)
    lower = api.get("/api/quote/msft")
    assert bottle_saw == []
    assert lower.status_code == 200 and lower.json()["symbol"] == "MSFT"


def test_fastpath_leaves_every_failure_to_the_route(frozen: Live) -> None:
    api = frozen.add_user("alice")
    api.get("/api/quote/AAPL")
    token, _ = frozen.runtime.auth.create_api_token("alice", "script")
    assert api.get("/api/quote/AAPL", token=token).status_code == 200
    bottle_saw = _bottle_requests(frozen)
    # A revoked token, no token, a bad symbol, an unknown one (remembered as not found), HEAD.
    assert frozen.runtime.auth.revoke_api_token(token)
    revoked = api.get("/api/quote/AAPL", token=token)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthorized"
    assert requests.get(frozen.url + "/api/quote/AAPL", timeout=10).status_code == 401
    bad = api.get("/api/quote/A%20B")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_symbol"
    for _ in range(2):
        unknown = api.get("/api/quote/ZZZZ1")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "symbol_not_found"
    assert api.request("HEAD", "/api/quote/AAPL").status_code == 200
    assert bottle_saw == ["/api/quote/AAPL", "/api/quote/AAPL", "/api/quote/A B", "/api/quote/ZZZZ1",
                          "/api/quote/ZZZZ1", "/api/quote/AAPL"]


def test_fastpath_warm_batch_is_the_routes_answer(frozen: Live) -> None:
    api = frozen.add_user("alice")
    body = {"tickers": ["AAPL", "msft", "MSFT", "SAP.DE"]}
    assert api.post("/api/batch-quotes", json=body).json()["errors"] == {}  # warms all three
    bottle_saw = _bottle_requests(frozen)
    fast = api.post("/api/batch-quotes", json=body)
    routed = api.post("/api/batch-quotes?via=route", json=body)
    assert bottle_saw == ["/api/batch-quotes"]
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert list(fast.json()["quotes"]) == ["AAPL", "MSFT", "SAP.DE"] and fast.json()["errors"] == {}
    assert _without_date(fast.headers) == _without_date(routed.headers)


def test_fastpath_batch_with_a_miss_or_a_bad_symbol_is_the_routes(frozen: Live) -> None:
    api = frozen.add_user("alice")
    api.post("/api/batch-quotes", json={"tickers": ["AAPL"]})
    bottle_saw = _bottle_requests(frozen)
    cold = api.post("/api/batch-quotes", json={"tickers": ["AAPL", "NVDA"]})
    assert cold.status_code == 200 and set(cold.json()["quotes"]) == {"AAPL", "NVDA"}
    bad = api.post("/api/batch-quotes", json={"tickers": ["AAPL", "not a symbol"]})
    assert bad.status_code == 200 and bad.json()["errors"]["not a symbol"]["code"] == "invalid_symbol"
    nan = api.post("/api/batch-quotes", data=b'{"tickers": ["AAPL"], "x": NaN}',
                   headers={"Content-Type": "application/json"})
    assert nan.status_code == 400 and nan.json()["error"]["code"] == "invalid_request"
    assert bottle_saw == ["/api/batch-quotes"] * 3


def test_fastpath_reads_are_counted_once_each(frozen: Live) -> None:
    admin = frozen.add_user("root", admin=True)
    for path in ["/api/quote/AAPL", "/api/quote/AAPL", "/api/quote/AAPL", "/api/quote/ZZZZ2", "/api/quote/ZZZZ2"]:
        admin.get(path)
    quotes = admin.get("/api/cache/stats").json()["by_kind"]["quote"]
    # AAPL: a miss, then two memory hits past Bottle; ZZZZ2: a miss, then its remembered error.
    assert (quotes["hits"], quotes["misses"]) == (3, 2)


def test_fastpath_raw_bytes_in_the_path_go_to_the_route(frozen: Live) -> None:
    api = frozen.add_user("alice")
    api.get("/api/quote/AAPL")
    url = urlsplit(frozen.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("GET", "/api/quote/AAPL%C5%BF", skip_accept_encoding=True)  # a trailing long s
        conn.putheader("Authorization", f"Bearer {api.token}")
        conn.endheaders()
        answer = conn.getresponse()
        body = answer.read()
    finally:
        conn.close()
    assert answer.status == 400 and b'"invalid_symbol"' in body


def test_fastpath_cached_read_answers_while_every_worker_waits_on_the_upstream(tmp_path, upstream) -> None:
    # Two worker threads, both held by a hanging upstream: a cached quote and a warm batch are still
    # answered, on the I/O thread, where they used to queue behind them (until the upstream timed out).
    live = start_service(upstream_settings(tmp_path, upstream, threads=2, upstream_timeout=30.0))
    held: list[threading.Thread] = []
    try:
        api = live.add_user("alice")
        assert api.get("/api/quote/AAPL").status_code == 200  # cached, and the token verified once
        batch = {"tickers": ["AAPL", "MSFT"]}
        assert api.post("/api/batch-quotes", json=batch).json()["errors"] == {}
        for symbol in ("HANGA", "HANGB"):
            upstream.set_fault("hang", symbol=symbol)
            held.append(threading.Thread(target=api.as_user(api.token).get, args=(f"/api/quote/{symbol}",)))
            held[-1].start()
        assert upstream.wait_hanging(2, timeout=10)
        cached = requests.get(live.url + "/api/quote/AAPL", headers={"Authorization": f"Bearer {api.token}"},
                              timeout=10)
        assert cached.status_code == 200 and cached.json()["cache"] == "memory"
        warm = requests.post(live.url + "/api/batch-quotes", json=batch,
                             headers={"Authorization": f"Bearer {api.token}"}, timeout=10)
        assert warm.status_code == 200 and set(warm.json()["quotes"]) == {"AAPL", "MSFT"}
    finally:
        upstream.release_hangs()
        for thread in held:
            thread.join(timeout=30)
        live.stop()
