"""Bad input over real HTTP: hypothesis drives requests at the live service, plus a table of known tricks.

Whatever a client sends, the answer is never a 5xx other than the documented
upstream ones (502/503/504), and every error is JSON
``{"error": {"code": <snake_case>, "message": ...}}``, including what waitress
refuses before the app sees it. The fake upstream fails now and then
(seeded), so upstream errors are in the mix too.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fake_upstream import FakeUpstream
from tests.integration.conftest import Api, Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)

CODE_RE = re.compile(r"[a-z][a-z0-9_]*")
UPSTREAM_STATUSES = {502, 503, 504}
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Service:
    """One live service for the whole module, with a user and an admin."""

    def __init__(self, live: Live, user: Api, admin: Api) -> None:
        self.live, self.user, self.admin = live, user, admin

    @property
    def port(self) -> int:
        return self.live.server.port


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    upstream = FakeUpstream(error_rate=0.1, error_faults=("500", "badjson", "wrongshape", "429"), seed=3)
    upstream.start()
    settings_ = upstream_settings(tmp_path_factory.mktemp("fuzz"), upstream, upstream_timeout=1.0,
                                  finnhub_per_second=0, finnhub_per_minute=0)
    live = start_service(settings_)
    store, auth = live.runtime.store, live.runtime.auth
    alice = store.create_user("alice", auth.hash_password("alice password"))
    root = store.create_user("root", "not-a-password-hash", is_admin=True)
    user = live.api.as_user(auth.issue_jwt(alice.id, alice.username, False))
    admin = live.api.as_user(auth.issue_jwt(root.id, root.username, True))
    try:
        yield Service(live, user, admin)
    finally:
        live.stop()
        upstream.stop()


def check(status: int, content_type: str, body: bytes) -> None:
    """What every answer must be, whatever was asked."""
    assert status < 500 or status in UPSTREAM_STATUSES, (status, body[:300])
    if status == 204:
        assert body == b""
        return
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, body[:200])
        error = json.loads(body)["error"]
        assert CODE_RE.fullmatch(error["code"]), error
        assert isinstance(error["message"], str) and error["message"]
        assert b"Traceback" not in body and b"<html" not in body.lower()


def checked(answer: requests.Response) -> requests.Response:
    check(answer.status_code, answer.headers.get("Content-Type", ""), answer.content)
    return answer


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client-side URL cleaning) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer and close before it has read everything
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def raw_checked(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    status, headers, body = raw(port, request)
    check(status, headers.get("content-type", ""), body)
    return status, json.loads(body) if body else {}


# -- strategies ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
symbols_like = st.sampled_from(["AAPL", "msft", "BRK.B", "^GSPC", "BINANCE:BTCUSDT", "ZZZZ1", "", " ", "A" * 21])
junk_text = st.text(max_size=60) | symbols_like
plausible_bodies = st.fixed_dictionaries(
    {}, optional={"symbol": junk_text | json_values, "shares": json_values, "cost_basis": json_values,
                  "tickers": st.lists(junk_text, max_size=8) | json_values, "username": junk_text,
                  "password": junk_text})
bodies = plausible_bodies | json_values

CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "application/xml"]
BODY_ROUTES = [("POST", "/api/batch-quotes"), ("POST", "/api/batch-profiles"), ("POST", "/api/portfolio"),
               ("PUT", "/api/portfolio/1"), ("POST", "/api/watchlist"), ("POST", "/api/auth/login")]
SYMBOL_ROUTES = ["/api/quote/{}", "/api/profile/{}", "/api/history/{}", "/api/news/{}"]


# -- hypothesis over the routes ------------------------------------------------------------


@FUZZ
@given(route=st.sampled_from(SYMBOL_ROUTES + ["/api/watchlist/{}"]), symbol=junk_text,
       method=st.sampled_from(["GET", "DELETE"]))
def test_fuzz_symbols_in_paths_answer_json(svc, route, symbol, method):
    path = route.format(quote(symbol, safe=""))
    if not symbol:
        path += "%20"
    answer = checked(svc.user.request(method, path))
    if answer.status_code == 400:
        assert answer.json()["error"]["code"] == "invalid_symbol"


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), body=bodies, ctype=st.sampled_from(CONTENT_TYPES))
def test_fuzz_json_bodies_answer_json(svc, route, body, ctype):
    method, path = route
    data = json.dumps(body).encode()  # allow_nan: NaN and Infinity go out as bare literals
    checked(svc.user.request(method, path, data=data, headers={"Content-Type": ctype}))


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), data=st.binary(max_size=200), ctype=st.sampled_from(CONTENT_TYPES))
def test_fuzz_raw_bytes_bodies_answer_json(svc, route, data, ctype):
    method, path = route
    checked(svc.user.request(method, path, data=data, headers={"Content-Type": ctype}))


@FUZZ
@given(days=st.text(max_size=12) | st.integers().map(str) | st.floats().map(repr),
       symbols=st.lists(junk_text, max_size=6).map(",".join) | st.text(max_size=40),
       pattern=st.text(max_size=40))
def test_fuzz_query_parameters_answer_json(svc, days, symbols, pattern):
    checked(svc.user.get("/api/history/AAPL", params={"days": days}))
    checked(svc.user.get("/api/news/AAPL", params={"days": days}))
    checked(svc.user.get("/api/quotes", params={"symbols": symbols}))
    checked(svc.admin.delete("/api/cache", params={"pattern": pattern}))


@FUZZ
@given(ident=st.integers() | st.text(max_size=30), method=st.sampled_from(["PUT", "DELETE", "GET", "PATCH"]))
def test_fuzz_position_ids_answer_json(svc, ident, method):
    path = "/api/portfolio/" + quote(str(ident), safe="")
    answer = checked(svc.user.request(method, path, json={"shares": 1}))
    assert answer.status_code in (400, 404, 405), answer.text


@FUZZ
@given(segments=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
def test_fuzz_unknown_paths_and_methods_answer_json(svc, segments, method):
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    checked(svc.user.request(method, path))
    checked(svc.user.request(method, "/api/" + path.lstrip("/")))


# -- the known tricks, one by one ------------------------------------------------------------

BIG = 1_048_576


@pytest.mark.parametrize(("body", "status", "code"), [
    pytest.param(b'{"tickers": ["' + b"A" * BIG + b'"]}', 413, "payload_too_large", id="over-1MB"),
    pytest.param(b"[" * 100_000, 400, "invalid_request", id="deeply-nested-unclosed"),
    pytest.param(b'{"tickers": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 400, "invalid_request",
                 id="deeply-nested-valid"),
    pytest.param(b"", 400, "invalid_request", id="empty"),
    pytest.param(b"null", 400, "invalid_request", id="null"),
    pytest.param(b'{"tickers": "AAPL"}', 400, "invalid_request", id="tickers-not-a-list"),
    pytest.param(b'{"tickers": []}', 400, "invalid_request", id="no-tickers"),
    pytest.param(json.dumps({"tickers": [f"S{i}" for i in range(101)]}).encode(), 400, "too_many_symbols",
                 id="101-symbols"),
    pytest.param(json.dumps({"tickers": [f"S{i}" for i in range(100_000)]}).encode(), 400, "too_many_symbols",
                 id="100k-symbols"),
    pytest.param(b'{"tickers": ["AAPL", NaN]}', 400, "invalid_request", id="NaN-literal"),
    pytest.param(b'{"tickers": ["\xff\xfe"]}', 400, "invalid_request", id="not-utf8"),
    pytest.param(b'{"tickers": ["AAPL"], "tickers": 1}', 400, "invalid_request", id="duplicate-key"),
])
def test_fuzz_batch_tricks_answer_the_right_error(svc, body, status, code):
    answer = checked(svc.user.post("/api/batch-quotes", data=body, headers={"Content-Type": "application/json"}))
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize("ticker", ["\u0410\u0410PL", "\u0000AAPL", "../etc", 42, None, ["AAPL"]])
def test_fuzz_batch_invalid_symbol_is_its_own_error_and_the_rest_answer(svc, ticker):
    answer = checked(svc.user.post("/api/batch-quotes", json={"tickers": ["AAPL", ticker]}))
    body = answer.json()
    assert answer.status_code == 200 and set(body["quotes"]) == {"AAPL"}
    assert [e["code"] for e in body["errors"].values()] == ["invalid_symbol"], body


def test_fuzz_batch_duplicates_fold_into_one_answer(svc):
    answer = checked(svc.user.post("/api/batch-quotes", json={"tickers": ["aapl", "AAPL", " AAPL "] * 1000}))
    body = answer.json()
    assert answer.status_code == 200 and len(body["quotes"]) + len(body["errors"]) == 1


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1", "-0.5", "0", "true",
                                     '"12"', "null", "[1]", "1e16"])
def test_fuzz_position_numbers_refused_cleanly(svc, literal):
    for name in ("shares", "cost_basis"):
        values = {"symbol": '"AAPL"', "shares": "1", "cost_basis": "1", name: literal}
        if name == "cost_basis" and literal in ("0",):
            continue  # a gift: cost basis 0 is allowed
        data = "{" + ", ".join(f'"{k}": {v}' for k, v in values.items()) + "}"
        answer = checked(svc.user.post("/api/portfolio", data=data, headers={"Content-Type": "application/json"}))
        assert answer.status_code == 400, (name, literal, answer.text)
        error = answer.json()["error"]
        # NaN and Infinity are not JSON: the whole body is refused; other values name their field.
        assert error["code"] == "invalid_request" and error.get("field", name) == name
    assert all(math.isfinite(p["shares"]) for p in svc.user.get("/api/portfolio").json()["positions"])


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None, "application/jsonx"])
def test_fuzz_wrong_content_type_is_400(svc, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    answer = checked(svc.user.post("/api/watchlist", data=b'{"symbol": "AAPL"}', headers=headers))
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("path", [
    "/api/quote/..%2F..%2Fetc%2Fpasswd", "/api/quote/..%2f", "/api/quote/%2e%2e", "/api/quote/AAPL%00",
    "/api/quote/%00", "/api/quote/%ff%fe", "/api/quote/%E2%80%AEAAPL", "/api/quote/" + "A" * 10_000,
    "/api/quote/AAPL%2FMSFT", "/api/watchlist/..%2F..%2Fportfolio", "/api/history/AAPL?days=%00",
    "/api/quote/AAPL/../../metrics", "/api/../metrics", "/api/quote/%", "/api/quote/%zz",
    "/api/quotes?symbols=AAPL%00,MSFT", "/api/portfolio/1%00", "/api/portfolio/-1",
    "/api/portfolio/99999999999999999999999999",
])
def test_fuzz_path_tricks_answer_json_never_5xx(svc, path):
    method = "DELETE" if path.startswith(("/api/watchlist/", "/api/portfolio/")) else "GET"
    request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.user.token}\r\n"
    status, body = raw_checked(svc.port, (request + "Connection: close\r\n\r\n").encode())
    if status == 200 and path.startswith("/api/quotes?"):  # a batch: the bad symbol is its own error
        assert [e["code"] for e in body["errors"].values()] == ["invalid_symbol"] and set(body["quotes"]) == {"MSFT"}
    elif status == 200:  # ".." is a valid symbol by the contract's alphabet; it names no file
        assert path.endswith("%2e%2e") and body["symbol"] == ".."
    else:
        assert status in (400, 404), body


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    pytest.param(b"POST /api/batch-quotes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 50000000\r\nConnection: close\r\n\r\n", 413, "payload_too_large",
                 id="body-past-waitress-limit"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
                 "invalid_request", id="huge-header"),
    pytest.param(b"NONSENSE\r\n\r\n", 400, "invalid_request", id="bad-request-line"),
    pytest.param(b"POST /api/portfolio HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n", 400, "invalid_request",
                 id="bad-chunk"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "invalid_request",
                 id="negative-content-length"),
    pytest.param(b"POST /api/portfolio HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
                 "invalid_request", id="unsupported-transfer-encoding"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
                 "invalid_request", id="two-content-lengths"),
])
def test_fuzz_what_waitress_refuses_is_json_too(svc, request_bytes, status, code):
    got, body = raw_checked(svc.port, request_bytes)
    assert (got, body["error"]["code"]) == (status, code)


def test_fuzz_service_still_healthy_afterwards(svc):
    assert checked(svc.live.api.get("/healthz")).json()["status"] in ("ok", "degraded")
    answer = checked(svc.user.post("/api/portfolio", json={"symbol": "AAPL", "shares": 2, "cost_basis": 10}))
    assert answer.status_code == 201
    assert svc.live.runtime.store.integrity_check() == "ok"
