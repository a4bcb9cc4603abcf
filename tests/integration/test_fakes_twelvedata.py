"""The fake Twelve Data over real HTTP: listings by MIC, one-versus-many shapes, errors, credits, pence."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket

pytestmark = pytest.mark.timeout(60)

KEY = "TESTKEY_twelvedata_5e6f7a"
MONDAY = date(2025, 12, 29)
XETRA_OPEN = datetime(2025, 12, 29, 12, 0, tzinfo=UTC).timestamp()  # 13:00 in Frankfurt, 07:00 in New York
NOT_FOUND = "**symbol** not found: {}. Please specify it correctly according to API Documentation."
QUOTE_KEYS = {"symbol", "name", "exchange", "mic_code", "currency", "datetime", "timestamp", "last_quote_at", "open",
              "high", "low", "close", "volume", "previous_close", "change", "percent_change", "average_volume",
              "is_market_open", "fifty_two_week"}


@pytest.fixture
def fake(clock):
    clock.set(XETRA_OPEN)
    with FakeUpstream(clock=clock) as server:
        server.api("twelvedata").expected_key = KEY
        server.api("twelvedata").set_limits(per_minute=None, per_day=None)
        yield server


@pytest.fixture
def td(fake):
    return fake.api("twelvedata")


@pytest.fixture
def get(fake):
    session = requests.Session()

    def get(path: str, *, key: str | None = KEY, **params: str) -> requests.Response:
        if key is not None:
            params["apikey"] = key
        return session.get(fake.url("twelvedata") + path, params=params, timeout=10)

    yield get
    session.close()


def money(value: float, divisor: int = 1) -> str:
    return f"{value / divisor:.5f}"


def test_twelvedata_quotes_a_european_listing_by_mic_code(get, clock):
    body = get("/quote", symbol="SAP", mic_code="XETR").json()
    assert QUOTE_KEYS <= set(body)
    demo = DemoMarket(marked=False).quote("SAP.DE", clock())
    assert (body["symbol"], body["name"], body["mic_code"], body["exchange"], body["currency"]) == (
        "SAP", "SAP SE", "XETR", "XETR", "EUR")
    assert (body["close"], body["previous_close"], body["open"]) == (
        money(demo.price), money(demo.previous_close), money(demo.open))
    assert body["percent_change"] == f"{demo.change_percent:.5f}"
    assert isinstance(body["timestamp"], int) and body["is_market_open"] is True
    assert all(isinstance(body[k], str) for k in ("open", "high", "low", "close", "volume", "previous_close"))
    assert set(body["fifty_two_week"]) == {"low", "high", "low_change", "high_change", "low_change_percent",
                                           "high_change_percent", "range"}


def test_twelvedata_addresses_a_listing_by_mic_exchange_or_colon_and_bare_is_the_us_listing(get):
    by_mic = get("/quote", symbol="SAP", mic_code="XETR").json()
    assert get("/quote", symbol="SAP", exchange="XETR").json() == by_mic
    assert get("/quote", symbol="SAP:XETR").json() == by_mic
    assert get("/quote", symbol="sap:xetr").json() == by_mic  # parameter case is ignored
    assert get("/quote", symbol="SAP", exchange="XETRA").json() == by_mic  # the names drift
    bare = get("/quote", symbol="SAP").json()
    assert (bare["currency"], bare["mic_code"], bare["name"]) == ("USD", "XNYS", "SAP SE ADR")
    assert get("/quote", symbol="MC", exchange="Euronext", country="France").json()["mic_code"] == "XPAR"
    nowhere = get("/quote", symbol="SAP", mic_code="XXXX")
    assert nowhere.status_code == 404 and nowhere.json()["message"] == NOT_FOUND.format("SAP")


def test_twelvedata_batch_is_keyed_by_symbol_as_sent_with_a_failed_symbol_inside(get, td, clock):
    answer = get("/quote", symbol="SAP:XETR,vod:XLON,ZZZZ1,AAPL")
    assert answer.status_code == 200
    body = answer.json()
    assert list(body) == ["SAP:XETR", "vod:XLON", "ZZZZ1", "AAPL"]
    assert body["ZZZZ1"] == {"code": 404, "message": NOT_FOUND.format("ZZZZ1"), "status": "error"}
    market = DemoMarket(marked=False)
    assert body["vod:XLON"]["close"] == money(market.quote("VOD.L", clock()).price)
    assert body["AAPL"]["mic_code"] == "XNGS" and body["SAP:XETR"]["currency"] == "EUR"
    assert td.credits() == 4  # one per symbol sent, the failed one included
    series = get("/time_series", symbol="SAP,SIE", mic_code="XETR", interval="1day", outputsize="3").json()
    assert set(series) == {"SAP", "SIE"} and all(v["status"] == "ok" and len(v["values"]) == 3
                                                  for v in series.values())


@pytest.mark.parametrize("style", ["real", "200"])
def test_twelvedata_errors_carry_code_and_message_whatever_the_status(get, td, style):
    td.error_status = style
    cases = [({"symbol": "ZZZZ1"}, None, 404, NOT_FOUND.format("ZZZZ1")),
             ({"symbol": "AAPL"}, "wrong", 401, "apikey parameter is incorrect or not specified."),
             ({"symbol": "AAPL"}, "", 401, "apikey parameter is incorrect or not specified."),
             ({}, None, 400, "**symbol** parameter is missing or invalid")]
    for params, key, code, text in cases:
        answer = get("/quote", key=KEY if key is None else key, **params)
        assert answer.status_code == (code if style == "real" else 200)
        body = answer.json()
        assert set(body) == {"code", "message", "status"} and body["status"] == "error" and body["code"] == code
        assert body["message"].startswith(text)


@pytest.mark.parametrize("style", ["real", "200"])
def test_twelvedata_credits_per_symbol_against_the_minute_and_the_day(get, td, clock, style):
    td.error_status = style
    td.set_limits(per_minute=8, per_day=12)
    clock.set(XETRA_OPEN - XETRA_OPEN % 60)  # the start of a clock minute
    assert get("/quote", symbol="AAPL,MSFT,IBM,KO,V").status_code == 200
    refused = get("/quote", symbol="JPM,MA,WMT,XOM")  # 5 + 4 > 8
    assert refused.status_code == (429 if style == "real" else 200)
    assert refused.json()["code"] == 429
    assert refused.json()["message"].startswith("You have run out of API credits for the current minute. "
                                                "9 API credits were used, with the current limit being 8.")
    assert td.credits() == 5  # a refused request costs nothing
    assert get("/quote", symbol="JPM,MA,WMT").status_code == 200  # 8 of 8
    clock.advance(60)  # the next minute: the minute's credits are back, the day's are not
    assert get("/quote", symbol="AAPL,MSFT,IBM,KO").status_code == 200  # 12 of 12 today
    day = get("/quote", symbol="AAPL")
    assert day.json()["code"] == 429 and "for the day" in day.json()["message"]
    assert "13 API credits were used, with the current limit being 12" in day.json()["message"]
    assert td.credits() == 12
    clock.advance(86400)
    assert get("/quote", symbol="AAPL").status_code == 200


def test_twelvedata_time_series_is_newest_first_strings_with_todays_unfinished_bar(get, td, clock):
    market = DemoMarket(marked=False)
    body = get("/time_series", symbol="SAP", mic_code="XETR", interval="1day", outputsize="5").json()
    assert body["status"] == "ok"
    assert body["meta"] == {"symbol": "SAP", "interval": "1day", "currency": "EUR", "exchange": "XETR",
                            "exchange_timezone": "Europe/Berlin", "mic_code": "XETR", "type": "Common Stock"}
    values = body["values"]
    assert [v["datetime"] for v in values][0] == MONDAY.isoformat()  # Xetra is open: today's bar so far
    assert values[0]["close"] == money(market.quote("SAP.DE", clock()).price)
    history = market.history("SAP.DE", clock(), 4).candles
    assert [v["datetime"] for v in values[1:]] == [c.date for c in reversed(history)]
    assert [v["close"] for v in values[1:]] == [money(c.close) for c in reversed(history)]
    assert all(isinstance(v["open"], str) for v in values)
    assert len(get("/time_series", symbol="SAP:XETR", interval="1day").json()["values"]) == 30  # default size
    td.partial_bar = False
    assert get("/time_series", symbol="SAP:XETR", interval="1day", outputsize="1").json()["values"][0][
        "datetime"] == history[-1].date
    assert get("/time_series", symbol="SAP:XETR", interval="1week").json()["code"] == 400
    assert get("/time_series", symbol="SAP:XETR").json()["message"] == "**interval** parameter is missing or invalid"


@pytest.mark.parametrize(("setting", "currency", "divisor"), [("GBp", "GBp", 1), ("GBP", "GBP", 100)])
def test_twelvedata_london_prices_come_in_pence_or_in_pounds_as_labelled(get, td, clock, setting, currency, divisor):
    td.lse_currency = setting
    pence = DemoMarket(marked=False).quote("VOD.L", clock()).price
    body = get("/quote", symbol="VOD", mic_code="XLON").json()
    assert (body["currency"], body["close"]) == (currency, money(pence, divisor))
    assert get("/time_series", symbol="VOD:LSE", interval="1day").json()["meta"]["currency"] == currency
    # ETFs in London are priced in their own currency, whatever the shares are.
    assert get("/quote", symbol="VWRA", mic_code="XLON").json()["currency"] == "USD"
    assert get("/quote", symbol="VUSA", mic_code="XLON").json()["currency"] == "GBP"


def test_twelvedata_profile_needs_the_grow_plan(get, td):
    refused = get("/profile", symbol="SAP", mic_code="XETR")
    assert refused.status_code == 403 and "available exclusively with grow" in refused.json()["message"]
    assert td.credits() == 0
    td.plan = "grow"
    body = get("/profile", symbol="SAP", mic_code="XETR").json()
    assert (body["name"], body["mic_code"], body["country"]) == ("SAP SE", "XETR", "Germany") and "CEO" in body
    assert td.credits() == 10


def test_twelvedata_symbol_search_lists_every_listing(get, td):
    body = get("/symbol_search", symbol="SAP").json()
    assert body["status"] == "ok"
    rows = {(r["symbol"], r["mic_code"]): r for r in body["data"]}
    assert {("SAP", "XNYS"), ("SAP", "XETR"), ("SAP", "XFRA")} <= set(rows)
    assert rows[("SAP", "XETR")] == {"symbol": "SAP", "instrument_name": "SAP SE", "exchange": "XETR",
                                     "mic_code": "XETR", "exchange_timezone": "Europe/Berlin",
                                     "instrument_type": "Common Stock", "country": "Germany", "currency": "EUR"}
    assert get("/symbol_search", symbol="vodafone").json()["data"][0]["currency"] == "GBp"
    assert td.credits() == 2


def test_twelvedata_off_plan_symbols_are_404_like_unknown_ones(get, td):
    td.set_off_plan(["*.SW"])
    answer = get("/quote", symbol="NESN", mic_code="XSWX")
    assert answer.status_code == 404 and answer.json()["code"] == 404
    assert "not available with your plan" in answer.json()["message"]
    batch = get("/quote", symbol="NESN:XSWX,SAP:XETR").json()
    assert batch["NESN:XSWX"]["code"] == 404 and batch["SAP:XETR"]["currency"] == "EUR"


def test_twelvedata_key_in_the_authorization_header_is_never_recorded(fake, get):
    url = fake.url("twelvedata") + "/quote"
    assert requests.get(url, params={"symbol": "AAPL"}, headers={"Authorization": f"apikey {KEY}"},
                        timeout=10).status_code == 200
    get("/quote", symbol="AAPL")
    assert [c.key_in for c in fake.call_log()] == ["header", "query"]
    assert all("apikey" not in c.params and KEY not in str(c.params) for c in fake.call_log())
    assert fake.calls(provider="twelvedata", endpoint="quote", symbol="AAPL") == 2


def test_twelvedata_crypto_and_currency_pairs(get, clock):
    market = DemoMarket(marked=False)
    btc = get("/quote", symbol="BTC/EUR").json()
    assert (btc["currency_base"], btc["currency_quote"]) == ("BTC", "EUR") and "currency" not in btc
    assert btc["close"] == money(market.quote("BTC-EUR", clock()).price)
    rate = get("/exchange_rate", symbol="EUR/USD").json()
    assert rate["symbol"] == "EUR/USD" and isinstance(rate["rate"], float)
    assert rate["rate"] == market.quote("EURUSD=X", clock()).price
    assert get("/price", symbol="AAPL").json() == {"price": money(market.quote("AAPL", clock()).price)}
