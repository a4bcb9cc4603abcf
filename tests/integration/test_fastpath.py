"""Cached quotes and profiles answered past Bottle (web.fastpath): the same answers, errors and counts as the routes."""

from __future__ import annotations

import http.client
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
