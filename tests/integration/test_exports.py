"""``/api/quotes.csv``, ``/api/price/<symbol>`` and ``/metrics/quotes`` over real HTTP (issue 18, points 2-3, 5)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.fake_upstream import FakeUpstream
from tests.conftest import FakeClock
from tests.integration.conftest import Api, Live, start_service, upstream_settings

HEADER = "symbol,price,currency,change,change_percent,previous_close,timestamp,fetched_at,stale,source,error"
TTL_QUOTE = 300


@pytest.fixture
def fclock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def svc(tmp_path, upstream: FakeUpstream, fclock: FakeClock) -> Iterator[Live]:
    live = start_service(upstream_settings(tmp_path, upstream, ttl_quote=TTL_QUOTE, finnhub_per_second=0,
                                           finnhub_per_minute=0), clock=fclock)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def market(svc: Live) -> str:
    """A market-scoped token of a user holding AAPL (portfolio) and SAP.DE (watchlist)."""
    user = svc.runtime.store.create_user("sheet", "not-a-password-hash")
    svc.runtime.store.add_position(user.id, "AAPL", 2, 100)
    svc.runtime.store.add_watch(user.id, "SAP.DE")
    token, _ = svc.runtime.auth.create_api_token("sheet", scope="market")
    return token


@pytest.fixture
def full(svc: Live, market: str) -> Api:
    return svc.api.as_user(svc.runtime.auth.create_api_token("sheet")[0])


def rows(answer: requests.Response) -> list[list[str]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.reader(io.StringIO(answer.content.decode("utf-8"))))


def json_quote(svc: Live, token: str, symbol: str) -> dict:
    answer = svc.api.get(f"/api/quote/{symbol}", token=token)
    assert answer.status_code == 200, answer.text
    return answer.json()


# -- CSV -------------------------------------------------------------------------------


def test_exports_csv_one_row_per_symbol_in_order_with_the_json_values(svc: Live, market: str) -> None:
    answer = requests.get(f"{svc.url}/api/quotes.csv", params={"symbols": "sap.de,AAPL,ZZZZ1,MSFT,aapl",
                                                               "token": market}, timeout=10)
    table = rows(answer)
    assert answer.content.startswith(HEADER.encode() + b"\r\n")
    assert [row[0] for row in table[1:]] == ["SAP.DE", "AAPL", "ZZZZ1", "MSFT"]  # as asked, folded once
    header = table[0]
    for row in table[1:]:
        cells = dict(zip(header, row, strict=True))
        if cells["symbol"] == "ZZZZ1":
            assert cells["price"] == "" and cells["error"] == "symbol_not_found"
            continue
        quote = json_quote(svc, market, cells["symbol"])  # now cached: the same entry the CSV read
        assert float(cells["price"]) == quote["price"] and cells["currency"] == quote["currency"]
        assert float(cells["change"]) == quote["change"]
        assert float(cells["change_percent"]) == quote["change_percent"]
        assert float(cells["previous_close"]) == quote["previous_close"]
        assert int(cells["timestamp"]) == quote["timestamp"] and cells["fetched_at"] == quote["fetched_at"]
        assert cells["stale"] == "false" and cells["source"] == quote["source"] and cells["error"] == ""


def test_exports_csv_fields_pick_and_order_columns_and_header_0_drops_the_header(svc: Live, market: str) -> None:
    base = {"symbols": "AAPL,MSFT", "token": market}
    picked = rows(requests.get(f"{svc.url}/api/quotes.csv", params={**base, "fields": "price,symbol"}, timeout=10))
    assert picked[0] == ["price", "symbol"] and [r[1] for r in picked[1:]] == ["AAPL", "MSFT"]
    one = requests.get(f"{svc.url}/api/quotes.csv",
                       params={"symbols": "AAPL", "fields": "price", "header": "0", "token": market}, timeout=10)
    rows(one)
    assert float(one.text.strip()) == json_quote(svc, market, "AAPL")["price"]  # one cell: IMPORTDATA fills one
    assert one.text.count("\n") == 1
    for params, field in (({"fields": "price,secret"}, "fields"), ({"header": "yes"}, "header")):
        bad = requests.get(f"{svc.url}/api/quotes.csv", params={**base, **params}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
        assert field in bad.json()["error"]["message"]
    empty = requests.get(f"{svc.url}/api/quotes.csv", params={"token": market}, timeout=10)
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("symbol", ["=A1", "-X", '=HYPERLINK("http://x")', "+1", "@SUM(A1)", "=1+2"])
def test_exports_csv_symbol_can_never_inject_a_formula(svc: Live, market: str, symbol: str) -> None:
    answer = requests.get(f"{svc.url}/api/quotes.csv", params={"symbols": f"AAPL,{symbol}", "token": market},
                          timeout=10)
    table = rows(answer)
    cells = [cell for row in table for cell in row]
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells if cell and not _number(cell))
    assert table[2][0] in ("'" + symbol.upper(), "'" + symbol)  # the text as given, made inert


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_exports_csv_goes_through_the_cache_and_serves_stale_when_the_upstream_fails(
        svc: Live, market: str, upstream: FakeUpstream, fclock: FakeClock) -> None:
    url = f"{svc.url}/api/quotes.csv?symbols=AAPL,MSFT&fields=symbol,price,stale,error&token={market}"
    first = rows(requests.get(url, timeout=10))
    calls = upstream.calls()
    assert rows(requests.get(url, timeout=10)) == first and upstream.calls() == calls  # the cache answered
    assert svc.runtime.service.stats()["by_kind"]["quote"]["hits"] >= 2
    fclock.advance(TTL_QUOTE + 1)
    upstream.set_outage(True)
    stale = rows(requests.get(url, timeout=10))
    assert [(r[0], r[1], r[2]) for r in stale[1:]] == [(r[0], r[1], "true") for r in first[1:]]


# -- price -----------------------------------------------------------------------------


def test_exports_price_answers_the_smallest_json(svc: Live, market: str) -> None:
    answer = requests.get(f"{svc.url}/api/price/sap.de", params={"token": market}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    quote = json_quote(svc, market, "SAP.DE")
    assert answer.json() == {name: quote[name] for name in ("symbol", "price", "currency", "timestamp", "stale")}


@pytest.mark.parametrize("accept", ["text/plain", "text/plain, application/json;q=0.5", "text/*"])
def test_exports_price_answers_just_the_number_for_text_plain(svc: Live, market: str, accept: str) -> None:
    answer = svc.api.get("/api/price/AAPL", token=market, headers={"Accept": accept})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.text == repr(json_quote(svc, market, "AAPL")["price"])


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/json, text/plain;q=0.5", ""])
def test_exports_price_answers_json_otherwise(svc: Live, market: str, accept: str) -> None:
    answer = svc.api.get("/api/price/AAPL", token=market, headers={"Accept": accept})
    assert answer.status_code == 200 and answer.json()["symbol"] == "AAPL"


def test_exports_price_errors_keep_the_error_shape(svc: Live, market: str) -> None:
    for accept in ("text/plain", "application/json"):
        answer = svc.api.get("/api/price/ZZZZ1", token=market, headers={"Accept": accept})
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "symbol_not_found"
    assert svc.api.get("/api/price/A%20B", token=market).json()["error"]["code"] == "invalid_symbol"


# -- /metrics/quotes -------------------------------------------------------------------


def _gauges(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_exports_metrics_quotes_has_a_price_gauge_per_held_symbol(svc: Live, market: str) -> None:
    bob = svc.runtime.store.create_user("bob", "not-a-password-hash")
    svc.runtime.store.add_watch(bob.id, "MSFT")  # another user's symbol: not in the sheet user's gauges
    answer = svc.api.get("/metrics/quotes", token=market)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    gauges = _gauges(answer.text)
    prices = {dict(labels)["symbol"]: (dict(labels)["currency"], value)
              for labels, value in gauges["stockcache_quote_price"].items()}
    assert set(prices) == {"AAPL", "SAP.DE"}
    for symbol, (currency, value) in prices.items():
        quote = json_quote(svc, market, symbol)
        assert (currency, value) == (quote["currency"], quote["price"])
        assert gauges["stockcache_quote_stale"][(("symbol", symbol),)] == 0.0

    root = svc.runtime.store.create_user("root", "not-a-password-hash", is_admin=True)
    admin = svc.api.as_user(svc.runtime.auth.issue_jwt(root.id, root.username, True))
    every = _gauges(admin.get("/metrics/quotes").text)["stockcache_quote_price"]
    assert {dict(labels)["symbol"] for labels in every} == {"AAPL", "SAP.DE", "MSFT"}  # an admin sees all held


def test_exports_metrics_quotes_names_a_failed_symbol(svc: Live, market: str) -> None:
    user = svc.runtime.store.get_user_by_name("sheet")[0]
    svc.runtime.store.add_position(user.id, "ZZZZ1", 1, 1)
    gauges = _gauges(svc.api.get("/metrics/quotes", token=market).text)
    assert gauges["stockcache_quote_error"] == {(("code", "symbol_not_found"), ("symbol", "ZZZZ1")): 1.0}


def test_exports_metrics_quotes_needs_an_admin_or_a_market_token(svc: Live, market: str, full: Api) -> None:
    refused = full.get("/metrics/quotes")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert svc.api.get("/metrics/quotes").status_code == 401
    assert requests.get(f"{svc.url}/metrics/quotes?token={market}", timeout=10).status_code == 200
    assert svc.api.get("/metrics", token=market).status_code == 403  # the service's own metrics stay admin's


def test_exports_routes_count_in_the_kpis(svc: Live, market: str) -> None:
    for path in ("/api/quotes.csv?symbols=AAPL", "/api/price/AAPL", "/metrics/quotes"):
        assert svc.api.get(path, token=market).status_code == 200
    svc.runtime.kpis.flush()
    root = svc.runtime.store.create_user("root", "not-a-password-hash", is_admin=True)
    admin = svc.api.as_user(svc.runtime.auth.issue_jwt(root.id, root.username, True))
    today = admin.get("/api/kpis?days=1").json()["days"][0]
    assert today["requests"] >= 3 and today["hit_rate"] is not None and today["hit_rate"] > 0
