"""The HTTP edge over raw sockets: bytes that HTTP clients would clean up never reach a 500,
a look-alike, a smuggled request or a stalled connection.

Each test sends the bytes as they are to the real service on waitress and reads
what comes back on the same connection, to its end: how many answers, and
whether the server closed the connection. The service runs with a long
``channel_timeout`` (60 s), so an answer that only comes when waitress gives up
on an idle connection misses the read deadline (:data:`DEADLINE`) by far.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import finnhub_dropin
from tests.integration.conftest import Live, start_service, upstream_settings

pytestmark = pytest.mark.timeout(120)

CHANNEL_TIMEOUT = 60
DEADLINE = 10.0  # seconds to wait for answers and the close: far below CHANNEL_TIMEOUT
SECURITY_HEADER_NAMES = ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Exchange:
    """Every answer the server wrote on one connection, and whether it closed the connection."""

    answers: list[Answer]
    closed: bool

    @property
    def only(self) -> Answer:
        assert len(self.answers) == 1, [a.status for a in self.answers]
        return self.answers[0]


def exchange(port: int, request: bytes, *, deadline: float = DEADLINE) -> Exchange:
    """Send ``request`` as it is, then read until the server closes the connection or ``deadline`` passes."""
    data = bytearray()
    closed = False
    with socket.create_connection(("127.0.0.1", port), timeout=deadline) as sock:
        try:
            sock.sendall(request)
        except OSError:
            pass  # the server may answer and close before it has read everything
        ends = time.monotonic() + deadline
        try:
            while (left := ends - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except TimeoutError:
            pass  # still open at the deadline
        except ConnectionResetError:
            closed = True
    return Exchange(_answers(bytes(data)), closed)


def _answers(data: bytes) -> list[Answer]:
    """Split a stream of HTTP/1.x answers (each framed by Content-Length, or none for no body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"an unterminated answer head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append(Answer(int(lines[0].split(" ")[1]), headers, rest[:length]))
        data = rest[length:]
    return out


def get(port: int, target: str, *headers: bytes) -> Answer:
    """One GET with raw header lines, on a connection of its own."""
    lines = [f"GET {target} HTTP/1.1".encode(), b"Host: x", *headers, b"Connection: close"]
    return exchange(port, b"\r\n".join(lines) + b"\r\n\r\n").only


def bearer(token: str) -> bytes:
    return b"Authorization: Bearer " + token.encode()


class Service:
    """One live service for the module: a user ``alice`` with a JWT and an API token."""

    def __init__(self, live: Live, jwt: str, api_token: str) -> None:
        self.live, self.jwt, self.api_token = live, jwt, api_token
        self.user = live.api.as_user(jwt)

    @property
    def port(self) -> int:
        return self.live.server.port


@pytest.fixture(scope="module")
def svc(tmp_path_factory) -> Iterator[Service]:
    upstream = FakeUpstream()
    upstream.start()
    live = start_service(upstream_settings(tmp_path_factory.mktemp("edge"), upstream,
                                           channel_timeout=CHANNEL_TIMEOUT))
    auth = live.runtime.auth
    alice = live.runtime.store.create_user("alice", auth.hash_password("alice password"))
    api_token, _ = auth.create_api_token("alice", label="edge")
    try:
        yield Service(live, auth.issue_jwt(alice.id, alice.username, False), api_token)
    finally:
        live.stop()
        upstream.stop()


def assert_json_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"]["code"] == code


# -- fault 1: header and query bytes that are not UTF-8 -----------------------------------------


def test_static_if_none_match_that_is_not_ascii_is_ignored(svc):
    plain = get(svc.port, "/static/dashboard.css")
    assert plain.status == 200 and plain.body
    for value in (b'"\xff\xfe"', plain.headers["etag"].encode() + b', "\xe9"', b'"caf\xc3\xa9"'):
        answer = get(svc.port, "/static/dashboard.css", b"If-None-Match: " + value)
        assert (answer.status, answer.body) == (200, plain.body), value
    assert get(svc.port, "/static/dashboard.css", b"If-None-Match: " + plain.headers["etag"].encode()).status == 304


@pytest.mark.parametrize("credential", [
    pytest.param(lambda token: b"X-Finnhub-Token: \xff\xfe", id="x-finnhub-token-junk"),
    pytest.param(lambda token: b"X-Finnhub-Token: " + token.encode() + b"\xff", id="x-finnhub-token-valid-plus-byte"),
    pytest.param(lambda token: b"X-Finnhub-Token: caf\xc3\xa9", id="x-finnhub-token-utf8-non-ascii"),
    pytest.param(lambda token: b"Authorization: Bearer \xff\xfe", id="authorization-junk"),
    pytest.param(lambda token: bearer(token) + b"\xe9", id="authorization-valid-plus-byte"),
])
def test_finnhub_dropin_credential_headers_not_ascii_answer_401_like_a_wrong_token(svc, credential):
    wrong = get(svc.port, "/finnhub/api/v1/quote?symbol=AAPL", b"X-Finnhub-Token: wrong-token")
    assert wrong.status == 401
    answer = get(svc.port, "/finnhub/api/v1/quote?symbol=AAPL", credential(svc.api_token))
    assert (answer.status, answer.json()) == (401, wrong.json())
    assert answer.json() == {"error": finnhub_dropin.FINNHUB_BAD_TOKEN}


# The query-string credentials held already (bottle's getunicode() gives None for bytes that are
# not UTF-8); kept so every way a drop-in client sends a token is covered here.
@pytest.mark.parametrize("token", ["%ff%fe", "caf%C3%A9", "{token}%ff"])
def test_finnhub_dropin_token_query_not_utf8_answers_401(svc, token):
    answer = get(svc.port, "/finnhub/api/v1/quote?symbol=AAPL&token=" + token.format(token=svc.api_token))
    assert answer.status == 401 and set(answer.json()) == {"error"}


@pytest.mark.parametrize("apikey", ["%ff%fe", "caf%C3%A9", "{token}%ff"])
def test_alphavantage_dropin_apikey_not_utf8_answers_like_a_wrong_key(svc, apikey):
    path = "/alphavantage/query?function=GLOBAL_QUOTE&symbol=AAPL&apikey="
    wrong = get(svc.port, path + "wrong-key")
    answer = get(svc.port, path + apikey.format(token=svc.api_token))
    assert (answer.status, answer.json()) == (200, wrong.json())
    assert "Global Quote" not in answer.json()


def test_dropin_credentials_still_work_over_raw_http(svc):
    """The positive control for the tests above: the same requests with the token as it is are served."""
    quote_path = "/finnhub/api/v1/quote?symbol=AAPL"
    assert get(svc.port, quote_path, b"X-Finnhub-Token: " + svc.api_token.encode()).status == 200
    assert get(svc.port, quote_path, bearer(svc.api_token)).status == 200
    answer = get(svc.port, "/alphavantage/query?function=GLOBAL_QUOTE&symbol=AAPL&apikey=" + svc.api_token)
    assert answer.json()["Global Quote"]["01. symbol"] == "AAPL"


# -- fault 6: Content-Length with Transfer-Encoding (request smuggling) --------------------------

SMUGGLED = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"


def _framed(version: bytes, headers: list[bytes], body: bytes) -> bytes:
    lines = [b"POST /api/watchlist HTTP/" + version, b"Host: x", b"Content-Type: application/json", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SMUGGLING = [
    # waitress reads the chunked body (an empty one) and then SMUGGLED as a request of its own;
    # a front end that goes by Content-Length sees one request.
    pytest.param(_framed(b"1.1", [b"Content-Length: %d" % (5 + len(SMUGGLED)), b"Transfer-Encoding: chunked"],
                         b"0\r\n\r\n" + SMUGGLED), id="cl-then-te"),
    pytest.param(_framed(b"1.1", [b"Transfer-Encoding: chunked", b"Content-Length: 4"],
                         b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"), id="te-then-cl"),
    pytest.param(_framed(b"1.1", [b"Content-Length: %d" % (5 + len(SMUGGLED)), b"Transfer-Encoding: gzip, chunked"],
                         b"0\r\n\r\n" + SMUGGLED), id="cl-and-te-list"),
    # HTTP/1.0 has no Transfer-Encoding: waitress goes by Content-Length, a front end may not.
    pytest.param(_framed(b"1.0", [b"Connection: keep-alive", b"Transfer-Encoding: chunked", b"Content-Length: 5"],
                         b"0\r\n\r\n" + SMUGGLED), id="http10-te-and-cl"),
    pytest.param(_framed(b"1.0", [b"Connection: keep-alive", b"Transfer-Encoding: chunked"],
                         b"0\r\n\r\n" + SMUGGLED), id="http10-te"),
]


@pytest.mark.parametrize("request_bytes", SMUGGLING)
def test_request_with_ambiguous_framing_is_refused_and_the_connection_closed(svc, request_bytes):
    got = exchange(svc.port, request_bytes)
    assert len(got.answers) == 1, [(a.status, a.body[:80]) for a in got.answers]  # SMUGGLED is never answered
    assert_json_error(got.only, 400, "invalid_request")
    assert got.closed


def test_pipelined_requests_with_clean_framing_are_still_served(svc):
    """The positive control: two well-framed requests on one connection both get their answers."""
    body = b'{"symbol": "MSFT"}'
    first = (b"POST /api/watchlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             + bearer(svc.jwt) + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    second = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got = exchange(svc.port, first + second)
    assert [a.status for a in got.answers] == [201, 200] and got.closed


# -- fault 13: only ASCII symbols and ids --------------------------------------------------------

LOOKALIKES = [
    pytest.param("ſpy", id="long-s"),          # "ſ".upper() == "S"
    pytest.param("ıbm", id="dotless-i"),       # "ı".upper() == "I"
    pytest.param("ﬀ", id="ff-ligature"),      # "ﬀ".upper() == "FF"
    pytest.param("ORCL\u00a0", id="trailing-nbsp"),
    pytest.param("\u00a0INTC", id="leading-nbsp"),
    pytest.param("\u3000AMD", id="ideographic-space"),
]


def folded(symbol: str) -> str:
    """The real ticker a look-alike used to become."""
    return symbol.strip().upper()


@pytest.mark.parametrize("symbol", LOOKALIKES)
def test_symbol_lookalike_is_invalid_symbol_in_paths(svc, symbol):
    for route in ("/api/quote/", "/api/profile/", "/api/history/", "/api/news/"):
        answer = svc.user.get(route + quote(symbol))
        assert answer.status_code == 400, (route, answer.text)
        assert answer.json()["error"]["code"] == "invalid_symbol"


@pytest.mark.parametrize("symbol", LOOKALIKES)
def test_symbol_lookalike_never_reaches_a_watchlist_portfolio_or_batch(svc, symbol):
    answer = svc.user.post("/api/watchlist", json={"symbol": symbol})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_symbol", answer.text
    answer = svc.user.post("/api/portfolio", json={"symbol": symbol, "shares": 1, "cost_basis": 1})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_symbol", answer.text
    for answer in (svc.user.post("/api/batch-quotes", json={"tickers": [symbol]}),
                   svc.user.get("/api/quotes?symbols=" + quote(symbol))):
        body = answer.json()
        assert not body.get("quotes"), body  # no real ticker's quote for the look-alike
        codes = [body["error"]["code"]] if "error" in body else [e["code"] for e in body["errors"].values()]
        assert codes == ["invalid_symbol"], body
    assert folded(symbol) not in {item["symbol"] for item in svc.user.get("/api/watchlist").json()["items"]}
    assert folded(symbol) not in {p["symbol"] for p in svc.user.get("/api/portfolio").json()["positions"]}


@pytest.mark.parametrize("symbol", LOOKALIKES)
def test_symbol_lookalike_in_the_dropins_answers_as_a_symbol_that_cannot_exist(svc, symbol):
    token = svc.api_token
    fh = f"/finnhub/api/v1/quote?token={token}&symbol="
    assert svc.live.api.get(fh + quote(symbol)).json() == svc.live.api.get(fh + "%24%24%24").json()
    av = f"/alphavantage/query?function=GLOBAL_QUOTE&apikey={token}&symbol="
    assert svc.live.api.get(av + quote(symbol)).json() == svc.live.api.get(av + "%24%24%24").json()
    news = f"/alphavantage/query?function=NEWS_SENTIMENT&apikey={token}&tickers="
    assert svc.live.api.get(news + quote(symbol)).json() == svc.live.api.get(news + "%24%24%24").json()


def test_alphavantage_function_lookalike_is_an_unknown_function(svc):
    answer = svc.live.api.get(f"/alphavantage/query?function={quote('newſ_sentiment')}&tickers=AAPL"
                              f"&apikey={svc.api_token}").json()
    assert "feed" not in answer and set(answer) <= {"Error Message", "Information"}, answer


def _unicode_digits(number: int, zero: int) -> str:
    return "".join(chr(zero + int(digit)) for digit in str(number))


@pytest.mark.parametrize("zero", [pytest.param(0x0660, id="arabic-indic"), pytest.param(0xFF10, id="fullwidth"),
                                  pytest.param(0x0966, id="devanagari")])
def test_position_id_in_unicode_digits_is_not_found(svc, zero):
    created = svc.user.post("/api/portfolio", json={"symbol": "AAPL", "shares": 3, "cost_basis": 10})
    assert created.status_code == 201
    position = {key: value for key, value in created.json().items() if key != "verified"}
    path = "/api/portfolio/" + quote(_unicode_digits(position["id"], zero))
    for answer in (svc.user.put(path, json={"shares": 5}), svc.user.delete(path)):
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", answer.text
    assert position in svc.user.get("/api/portfolio").json()["positions"]  # untouched
    assert svc.user.delete(f"/api/portfolio/{position['id']}").status_code == 204  # the ASCII id still works


@pytest.mark.parametrize("days", ["7%A0", "%A07", "%857", "%D9%A7", "%EF%BC%97"])
def test_days_query_that_is_not_ascii_is_invalid_request(svc, days):
    for route in ("/api/history/AAPL", "/api/news/AAPL"):
        answer = get(svc.port, f"{route}?days={days}", bearer(svc.jwt))
        assert_json_error(answer, 400, "invalid_request")
        assert answer.json()["error"]["field"] == "days"


def test_dropin_numbers_in_unicode_digits_are_malformed(svc):
    token = svc.api_token
    now = int(time.time())
    candle = f"/finnhub/api/v1/stock/candle?token={token}&symbol=AAPL&resolution=D&to={now}&from="
    bad = svc.live.api.get(candle + "abc")
    assert bad.status_code >= 400
    for text in (_unicode_digits(0, 0x0660), _unicode_digits(now - 30 * 86400, 0xFF10)):
        answer = svc.live.api.get(candle + quote(text))
        assert (answer.status_code, answer.json()) == (bad.status_code, bad.json())
    news = f"/alphavantage/query?function=NEWS_SENTIMENT&apikey={token}&tickers=AAPL"
    invalid = svc.live.api.get(news + "&limit=abc").json()
    assert "feed" not in invalid
    assert svc.live.api.get(news + "&limit=" + quote(_unicode_digits(5, 0x0660))).json() == invalid
    assert svc.live.api.get(news + "&time_from=" + quote(_unicode_digits(2024, 0x0660) + "0101T0000")).json() == \
        svc.live.api.get(news + "&time_from=2024x0101T0000").json() == invalid


# -- fault 15: waitress's own answers: security headers, and no waiting on hopeless requests ------

HUGE_CHUNK = (b"POST /api/watchlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n")
REFUSALS = [
    pytest.param(b"NONSENSE\r\n\r\n", 400, "invalid_request", id="bad-request-line"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
                 "invalid_request", id="huge-header"),
    pytest.param(b"POST /api/batch-quotes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 50000000\r\n\r\n", 413, "payload_too_large", id="body-past-waitress-limit"),
    pytest.param(b"POST /api/watchlist HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
                 "invalid_request", id="bad-chunk"),
    pytest.param(SMUGGLING[0].values[0], 400, "invalid_request", id="cl-and-te"),
    pytest.param(HUGE_CHUNK, 400, "invalid_request", id="huge-chunk-size"),
    pytest.param(HUGE_CHUNK.replace(b"ffffffffffffffff", b"ffffffffffffffffffffffff;x=y"), 400, "invalid_request",
                 id="huge-chunk-size-with-extension"),
    pytest.param(HUGE_CHUNK.replace(b"ffffffffffffffff", b"%x" % (50 * 2**20)), 413, "payload_too_large",
                 id="chunk-past-waitress-limit"),
    pytest.param(b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "invalid_request", id="bare-lf"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\n\r\n", 400, "invalid_request", id="bare-lf-in-a-header"),
    pytest.param(b"GET /healthz HTTP/1.1\rHost: x\r\r", 400, "invalid_request", id="bare-cr"),
]


@pytest.mark.parametrize(("request_bytes", "status", "code"), REFUSALS)
def test_waitress_refusal_is_immediate_json_with_the_app_security_headers_and_closes(svc, request_bytes, status,
                                                                                       code):
    app_answer = get(svc.port, "/healthz")
    expected = {name: app_answer.headers.get(name) for name in SECURITY_HEADER_NAMES}
    assert all(expected.values()), app_answer.headers
    started = time.monotonic()
    got = exchange(svc.port, request_bytes)
    assert got.answers, f"no answer within {DEADLINE} s (waitress waits up to {CHANNEL_TIMEOUT} s)"
    assert_json_error(got.only, status, code)
    assert {name: got.only.headers.get(name) for name in SECURITY_HEADER_NAMES} == expected
    assert got.closed and time.monotonic() - started < DEADLINE


def test_chunked_body_and_split_line_endings_are_still_served(svc):
    """The positive controls: a chunked body in pieces, and CR and LF arriving in different packets."""
    body = b'{"symbol": "NVDA"}'
    request = (b"POST /api/watchlist HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + bearer(svc.jwt)
               + b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               + b"5\r\n" + body[:5] + b"\r\n" + b"%x;name=value\r\n" % (len(body) - 5) + body[5:]
               + b"\r\n0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", svc.port), timeout=DEADLINE) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(request), 7):  # 7-byte pieces split most CR LF pairs somewhere
            sock.sendall(request[start:start + 7])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert [a.status for a in _answers(data)] == [201]
    assert any(item["symbol"] == "NVDA" for item in svc.user.get("/api/watchlist").json()["items"])
    svc.user.delete("/api/watchlist/NVDA")
