"""Twelve Data adapter: recorded-shape payloads through build_request -> requests (mocked) -> parse."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from stockcache.errors import (
    NoData,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    SymbolRefused,
    UpstreamAuthError,
    UpstreamError,
)
from stockcache.kinds import KINDS
from stockcache.models import Candle, History, ListingInfo, Profile, Quote
from stockcache.symbols import listing
from stockcache.upstream.providers.twelvedata import TwelveDataConfig, TwelveDataProvider

BASE = "https://api.twelvedata.com"
KEY = "TESTKEY_twelvedata_0c1d2e"
PAYLOADS = Path(__file__).parent / "payloads"
# Wednesday 2025-12-03 12:00 UTC: London and Xetra are trading, New York has not opened.
LONDON_OPEN = datetime(2025, 12, 3, 12, 0, tzinfo=UTC).timestamp()
LONDON_CLOSED = datetime(2025, 12, 3, 17, 0, tzinfo=UTC).timestamp()

BAD_KEY = ("apikey parameter is incorrect or not specified. You can get your free API key instantly following "
           "this link: https://twelvedata.com/pricing")
MINUTE = ("You have run out of API credits for the current minute. 9 API credits were used, with the current limit "
          "being 8. Wait for the next minute or consider switching to a higher tier plan at "
          "https://twelvedata.com/pricing")
DAY = ("You have run out of API credits for the day. 1249 API credits were used, with the current limit being 800. "
       "Wait for the next day or consider switching to a higher tier plan at https://twelvedata.com/pricing")
NOT_FOUND = "**symbol** not found: {}. Please specify it correctly according to API Documentation."
OFF_PLAN = ("**symbol** {} is not available with your plan. You may select the appropriate plan at "
            "https://twelvedata.com/pricing")
PROFILE_PLAN = ("/profile is available exclusively with grow or pro or ultra or enterprise plans. Consider upgrading "
                "your API Key now at https://twelvedata.com/pricing")
MISSING = "**symbol** parameter is missing or invalid"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def make(now: float = LONDON_OPEN, plan: str = "basic") -> TwelveDataProvider:
    return TwelveDataProvider(TwelveDataConfig(api_key=KEY, url=BASE, plan=plan), clock=lambda: now)


@pytest.fixture
def provider() -> TwelveDataProvider:
    return make()


def send(request: Any, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> requests.Response:
    """Send a built request with requests against a mocked Twelve Data; the key must travel in the header only."""
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, request.url, body=body, status=status, content_type="application/json",
                 headers=headers or {})
        response = requests.request(request.method, request.url, params=request.params, headers=request.headers)
        sent = mock.calls[0].request
    assert KEY not in sent.url and "apikey" not in sent.url, "the key must never be in the URL"
    assert sent.headers["Authorization"] == f"apikey {KEY}"
    return response


def fetch(provider: TwelveDataProvider, kind: str, symbol: str, body: bytes, status: int = 200,
          params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
    params = params or {}
    response = send(provider.build_request(kind, symbol, params), body, status, headers)
    return provider.parse(kind, symbol, params, response.status_code, response.headers, response.content)


def error_body(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "status": "error"}).encode()


# -- requests ------------------------------------------------------------------------------------


def test_twelvedata_request_names_a_us_listing_bare_and_others_by_mic_code(provider):
    assert provider.build_request("quote", "AAPL", {}).params == {"symbol": "AAPL"}
    assert provider.build_request("quote", "BRK.B", {}).params == {"symbol": "BRK.B"}
    assert provider.build_request("quote", "SAP.DE", {}).params == {"symbol": "SAP", "mic_code": "XETR"}
    assert provider.build_request("quote", "VOD.L", {}).params == {"symbol": "VOD", "mic_code": "XLON"}
    assert provider.build_request("quote", "ASML.AS", {}).url == BASE + "/quote"
    history = provider.build_request("history", "MC.PA", {"days": 5})
    assert history.url == BASE + "/time_series"
    # One bar more than asked: today's unfinished bar is dropped when there is one.
    assert history.params == {"symbol": "MC", "mic_code": "XPAR", "interval": "1day", "outputsize": "6"}
    search = provider.build_request("search", "SAP", {"q": "sap se"})
    assert (search.url, search.params) == (BASE + "/symbol_search", {"symbol": "sap se"})
    assert provider.build_request("listing", "VOD.L", {}).params == {"symbol": "VOD", "outputsize": "120"}
    assert provider.build_request("profile", "SAP.DE", {}).url == BASE + "/profile"


def test_twelvedata_request_never_shows_the_key_in_its_repr_or_logged_url(provider, caplog):
    request = provider.build_request("quote", "SAP.DE", {})
    assert request.headers["Authorization"] == f"apikey {KEY}"
    assert KEY not in request.params.values()
    assert KEY not in repr(request) and KEY not in str(request) and KEY not in request.safe_url()
    assert "Authorization" in repr(request)  # masked, not dropped
    with pytest.raises(UpstreamError) as info:
        provider.parse("quote", "SAP.DE", {}, 400, {}, error_body(400, f"odd key {KEY} in a message"))
    assert KEY not in str(info.value) and KEY not in info.value.message
    assert KEY not in caplog.text and "odd key" in caplog.text


def test_twelvedata_request_base_url_with_a_trailing_slash_is_normalised():
    provider = TwelveDataProvider(TwelveDataConfig(api_key=KEY, url=BASE + "/"), clock=lambda: LONDON_OPEN)
    assert provider.build_request("quote", "AAPL", {}).url == BASE + "/quote"


def test_twelvedata_history_rejects_bad_days(provider):
    with pytest.raises(StockcacheError):
        provider.build_request("history", "AAPL", {"days": 0})


# -- coverage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("symbol", "covered"), [
    ("AAPL", True), ("SPY", True), ("SAP.DE", True), ("SAP.F", True), ("VOD.L", True), ("MC.PA", True),
    ("ASML.AS", True), ("ENEL.MI", True), ("NESN.SW", True), ("ERIC-B.ST", True),
    ("RY.TO", False), ("0700.HK", False), ("7203.T", False), ("BTC-USD", False), ("^GSPC", False),
    ("BINANCE:BTCUSDT", False),
])
def test_twelvedata_covers_us_and_european_listings(provider, symbol, covered):
    target = listing(symbol)
    assert provider.covers("quote", target) is covered
    assert provider.covers("history", target) is covered
    assert provider.covers("listing", target) is (covered and not target.is_us)


def test_twelvedata_profile_only_on_a_plan_that_has_it(provider):
    assert provider.covers("search", None) and not provider.covers("quote", None)
    assert not provider.covers("profile", listing("AAPL"))
    assert provider.upgrade_hint("profile", listing("AAPL")) == "STOCKCACHE_TWELVEDATA_PLAN=grow with a Grow plan key"
    grow = make(plan="grow")
    assert grow.covers("profile", listing("SAP.DE")) and grow.upgrade_hint("profile", listing("AAPL")) is None
    assert TwelveDataProvider.plan_for("profile", listing("AAPL")) == "grow"
    assert TwelveDataProvider.plan_for("quote", listing("SAP.DE")) == ""


def test_twelvedata_units_are_credits_per_symbol(provider):
    assert [provider.units("quote", n) for n in (1, 2, 40)] == [1, 2, 40]
    assert provider.units("history", 3) == 3
    assert provider.units("profile", 1) == 10


# -- answers ---------------------------------------------------------------------------------------


def test_twelvedata_quote_parses_strings_into_numbers_with_currency_and_mic(provider):
    quote = fetch(provider, "quote", "AAPL", payload("td_quote.json"))
    assert quote == Quote(symbol="AAPL", price=284.14999, change=-2.040009, change_percent=-0.71281615,
                          high=288.61, low=283.54001, open=286.20001, previous_close=286.19,
                          timestamp=1764795600, currency="USD", exchange="XNGS")
    KINDS["quote"].check("AAPL", quote)


def _london_quote(currency: str, close: str) -> bytes:
    body = json.loads(payload("td_quote.json"))
    body.update(symbol="VOD", name="Vodafone Group Plc", exchange="LSE", mic_code="XLON", currency=currency,
                close=close, open=close, high=close, low=close, previous_close=close, change="0.50000")
    return json.dumps(body).encode()


@pytest.mark.parametrize(("currency", "close", "pounds"), [("GBp", "92.64000", 0.9264), ("GBX", "92.64000", 0.9264),
                                                           ("GBP", "0.92640", 0.9264)])
def test_twelvedata_london_quote_in_pence_or_pounds_is_served_in_pounds(provider, currency, close, pounds):
    quote = fetch(provider, "quote", "VOD.L", _london_quote(currency, close))
    assert quote.currency == "GBP" and quote.exchange == "XLON"
    assert quote.price == pytest.approx(pounds) and quote.previous_close == pytest.approx(pounds)
    assert quote.change == pytest.approx(0.5 if currency == "GBP" else 0.005)
    assert quote.change_percent == pytest.approx(-0.71281615)  # a percentage is not a price


def test_twelvedata_london_etf_priced_in_dollars_stays_in_dollars(provider):
    quote = fetch(provider, "quote", "VWRA.L", _london_quote("USD", "120.50000"))
    assert (quote.currency, quote.price) == ("USD", 120.5)


def test_twelvedata_quote_without_a_currency_leaves_it_to_the_read_through_path(provider):
    body = json.loads(payload("td_quote.json"))
    del body["currency"], body["mic_code"]
    quote = fetch(provider, "quote", "AAPL", json.dumps(body).encode())
    assert (quote.currency, quote.exchange) == (None, None)


def test_twelvedata_answer_for_another_venue_is_refused_not_served(provider):
    # A bare ticker Twelve Data took for the London line would be priced in pence as if in dollars.
    with pytest.raises(UpstreamError, match="XLON"):
        fetch(provider, "quote", "VOD", _london_quote("GBp", "92.64000"))


def test_twelvedata_history_oldest_first_in_pounds_without_todays_unfinished_bar(provider):
    history = fetch(provider, "history", "VOD.L", payload("td_time_series.json"), params={"days": 2})
    assert isinstance(history, History) and history.currency == "GBP"
    assert history.candles == (
        Candle(date="2025-12-01", open=0.908, high=0.919, low=0.905, close=0.9148, volume=38800000),
        Candle(date="2025-12-02", open=0.915, high=0.924, low=0.9102, close=0.921, volume=41250000),
    )
    KINDS["history"].check("VOD.L", history)


def test_twelvedata_history_keeps_todays_bar_once_the_venue_has_closed():
    history = fetch(make(now=LONDON_CLOSED), "history", "VOD.L", payload("td_time_series.json"), params={"days": 2})
    assert [c.date for c in history.candles] == ["2025-12-02", "2025-12-03"]


def test_twelvedata_history_without_bars_is_no_data_so_the_next_provider_is_asked(provider):
    body = json.loads(payload("td_time_series.json"))
    body["values"] = body["values"][:1]  # only today's unfinished bar
    with pytest.raises(NoData):
        fetch(provider, "history", "VOD.L", json.dumps(body).encode())


def test_twelvedata_search_writes_listings_the_way_stockcache_takes_them(provider):
    results = fetch(provider, "search", "SAP", payload("td_symbol_search.json"), params={"q": "SAP"})
    # Xetra's line twice (XETR and XETRA names) is one result; the index and the Bombay line have no suffix here.
    assert results == [
        {"symbol": "SAP.DE", "name": "SAP SE", "type": "Common Stock"},
        {"symbol": "SAP", "name": "SAP SE", "type": "Depositary Receipt"},
        {"symbol": "SAP.F", "name": "SAP SE", "type": "Common Stock"},
    ]
    KINDS["search"].check("SAP", results)


def test_twelvedata_listing_is_the_search_row_on_the_listings_own_venue(provider):
    info = fetch(provider, "listing", "SAP.F", payload("td_symbol_search.json"))
    assert info == ListingInfo(symbol="SAP.F", name="SAP SE", currency="EUR", exchange="XFRA", type="Common Stock")
    with pytest.raises(NoData):
        fetch(provider, "listing", "SAP.AS", payload("td_symbol_search.json"))


def test_twelvedata_profile_on_the_grow_plan():
    profile = fetch(make(plan="grow"), "profile", "SAP.DE", payload("td_profile.json"))
    assert profile == Profile(symbol="SAP.DE", name="SAP SE", exchange="XETR", currency="EUR", country="Germany",
                              industry="Software - Application", weburl="https://www.sap.com",
                              phone="49 6227 74 7474",
                              description="SAP SE provides enterprise application software.")
    KINDS["profile"].check("SAP.DE", profile)


# -- errors, in both status styles -----------------------------------------------------------------

STYLES = pytest.mark.parametrize("style", ["real", "200"], ids=["real-status", "http-200"])


def answer_error(provider: TwelveDataProvider, kind: str, symbol: str, code: int, message: str, style: str,
                 headers: dict[str, str] | None = None) -> StockcacheError:
    status = code if style == "real" else 200
    with pytest.raises(StockcacheError) as info:
        fetch(provider, kind, symbol, error_body(code, message), status=status, headers=headers)
    return info.value


@STYLES
def test_twelvedata_error_bad_key_is_the_keys_fault(provider, style):
    error = answer_error(provider, "quote", "AAPL", 401, BAD_KEY, style)
    assert type(error) is UpstreamAuthError and "API key" in error.message


@STYLES
def test_twelvedata_error_minute_limit_waits_for_the_next_clock_minute(style):
    now = LONDON_OPEN + 42.5
    error = answer_error(make(now=now), "quote", "AAPL", 429, MINUTE, style)
    assert type(error) is RateLimited and "per-minute" in error.message
    assert error.retry_after == math.ceil(60 - now % 60) == 18


@STYLES
def test_twelvedata_error_minute_limit_prefers_a_retry_after_header(style):
    error = answer_error(make(), "quote", "AAPL", 429, MINUTE, style, headers={"Retry-After": "7"})
    assert error.retry_after == 7


@STYLES
def test_twelvedata_error_day_limit_waits_until_the_utc_day_ends(style):
    error = answer_error(make(now=LONDON_OPEN), "history", "SAP.DE", 429, DAY, style)
    midnight = datetime(2025, 12, 4, tzinfo=UTC).timestamp()
    assert type(error) is RateLimited and "daily" in error.message
    assert error.retry_after == midnight - LONDON_OPEN == 12 * 3600


@STYLES
@pytest.mark.parametrize("message", [NOT_FOUND.format("NESN"), OFF_PLAN.format("NESN")], ids=["not-found", "off-plan"])
@pytest.mark.parametrize("kind", ["quote", "history", "listing"])
def test_twelvedata_error_404_refuses_the_symbol_not_the_key(provider, style, message, kind):
    # Twelve Data says 404 both for an unknown symbol and for one the plan does not include.
    error = answer_error(provider, kind, "NESN.SW", 404, message, style)
    assert type(error) is SymbolRefused and not isinstance(error, SymbolNotFound)
    assert error.fields == {"symbol": "NESN.SW", "provider": "twelvedata"}


@STYLES
def test_twelvedata_error_403_naming_a_symbol_refuses_the_symbol(provider, style):
    error = answer_error(provider, "quote", "NESN.SW", 403, OFF_PLAN.format("NESN"), style)
    assert type(error) is SymbolRefused


@STYLES
def test_twelvedata_error_403_for_an_endpoint_is_the_plan_not_the_symbol(style):
    error = answer_error(make(plan="grow"), "profile", "SAP.DE", 403, PROFILE_PLAN, style)
    assert type(error) is UpstreamAuthError and "plan" in error.message


@STYLES
@pytest.mark.parametrize(("code", "message"), [(400, MISSING), (414, "**symbol** parameter is too long"),
                                               (500, "Internal server error"), (404, NOT_FOUND.format("SAP"))])
def test_twelvedata_error_other_codes_are_upstream_errors(provider, style, code, message):
    # 404 on a search names no symbol to refuse.
    kind, subject = ("search", "SAP") if code == 404 else ("quote", "AAPL")
    error = answer_error(provider, kind, subject, code, message, style)
    assert type(error) is UpstreamError and str(code) in error.message


@pytest.mark.parametrize(("status", "expected"), [(404, UpstreamError), (502, UpstreamError),
                                                  (429, RateLimited), (401, UpstreamAuthError)])
def test_twelvedata_error_without_twelve_datas_body_reads_only_the_status(provider, status, expected):
    # A proxy's HTML page: a 404 there is a wrong URL, never a verdict on the symbol.
    with pytest.raises(StockcacheError) as info:
        fetch(provider, "quote", "SAP.DE", b"<html><body>Not Found</body></html>", status=status)
    assert type(info.value) is expected
    if status == 429:
        assert info.value.retry_after == 60


# -- many symbols per request ----------------------------------------------------------------------


def test_twelvedata_batch_request_of_one_venue_shares_its_mic_code(provider):
    request = provider.build_batch_request("quote", ["SAP.DE", "SIE.DE", "ALV.DE"], {})
    assert (request.url, request.params) == (BASE + "/quote", {"symbol": "SAP,SIE,ALV", "mic_code": "XETR"})
    us = provider.build_batch_request("history", ["AAPL", "MSFT"], {"days": 3})
    assert us.params == {"symbol": "AAPL,MSFT", "interval": "1day", "outputsize": "4"}
    assert us.url == BASE + "/time_series" and us.headers["Authorization"] == f"apikey {KEY}"


def test_twelvedata_batch_request_across_venues_writes_each_listing_with_its_mic(provider):
    request = provider.build_batch_request("quote", ["SAP.DE", "VOD.L", "SAP", "AAPL"], {})
    assert request.params == {"symbol": "SAP:XETR,VOD:XLON,SAP,AAPL"}
    assert KEY not in repr(request)


def test_twelvedata_batch_request_sizes_and_kinds(provider):
    assert provider.batch == {"quote": 120, "history": 120}
    symbols = [f"S{i}" for i in range(121)]
    provider.build_batch_request("quote", symbols[:120], {})
    for wrong in (symbols, symbols[:1]):
        with pytest.raises(ValueError):
            provider.build_batch_request("quote", wrong, {})
    with pytest.raises(ValueError):
        provider.build_batch_request("search", ["A", "B"], {})


def test_twelvedata_batch_answer_with_good_and_bad_symbols_gives_each_its_own(provider):
    symbols = ["SAP.DE", "VOD.L", "ZZZZ1", "MSFT"]
    request = provider.build_batch_request("quote", symbols, {})
    response = send(request, payload("td_quote_batch.json"))
    out = provider.parse_batch("quote", symbols, {}, response.status_code, response.headers, response.content)
    assert set(out) == set(symbols)
    assert (out["SAP.DE"].price, out["SAP.DE"].currency, out["SAP.DE"].exchange) == (213.8, "EUR", "XETR")
    # Keyed "vod:XLON" where "VOD:XLON" was sent: the case is not promised. Pence become pounds.
    assert (out["VOD.L"].price, out["VOD.L"].currency, out["VOD.L"].change) == (0.9264, "GBP", 0.0054)
    assert type(out["ZZZZ1"]) is SymbolRefused and out["ZZZZ1"].fields["symbol"] == "ZZZZ1"
    assert type(out["MSFT"]) is UpstreamError and "MSFT" in out["MSFT"].message  # left out of the answer
    for symbol in ("SAP.DE", "VOD.L"):
        KINDS["quote"].check(symbol, out[symbol])


def test_twelvedata_batch_history_values_are_full_series(provider):
    one = json.loads(payload("td_time_series.json"))
    body = {"VOD": one, "BP": {**one, "meta": {**one["meta"], "symbol": "BP", "currency": "GBP"},
                               "values": [{**v, "close": "4.10000", "low": "4.00000", "high": "4.20000",
                                           "open": "4.05000"} for v in one["values"]]},
            "HSBA": {"code": 404, "message": NOT_FOUND.format("HSBA"), "status": "error"}}
    out = provider.parse_batch("history", ["VOD.L", "BP.L", "HSBA.L"], {"days": 3}, 200, {},
                               json.dumps(body).encode())
    assert [c.close for c in out["VOD.L"].candles] == [0.9082, 0.9148, 0.921]
    assert out["BP.L"].currency == "GBP" and [c.close for c in out["BP.L"].candles] == [4.1, 4.1, 4.1]
    assert type(out["HSBA.L"]) is SymbolRefused


@STYLES
@pytest.mark.parametrize(("code", "message", "expected"), [
    (429, MINUTE, RateLimited), (401, BAD_KEY, UpstreamAuthError), (404, NOT_FOUND.format("SAP,SIE"), UpstreamError)])
def test_twelvedata_batch_error_of_the_whole_answer_is_every_symbols(provider, style, code, message, expected):
    # One error for the whole request names no one symbol: a 404 then refuses none of them.
    with pytest.raises(StockcacheError) as info:
        provider.parse_batch("quote", ["SAP.DE", "SIE.DE"], {}, code if style == "real" else 200, {},
                             error_body(code, message))
    assert type(info.value) is expected


def test_twelvedata_batch_of_one_symbol_reads_the_flat_shape(provider):
    out = provider.parse_batch("quote", ["AAPL"], {}, 200, {}, payload("td_quote.json"))
    assert out["AAPL"].price == 284.14999


def test_twelvedata_batch_symbol_with_a_malformed_value_fails_alone(provider):
    body = json.loads(payload("td_quote_batch.json"))
    body["SAP:XETR"]["close"] = "n/a"
    out = provider.parse_batch("quote", ["SAP.DE", "VOD.L"], {}, 200, {}, json.dumps(body).encode())
    assert type(out["SAP.DE"]) is UpstreamError and out["VOD.L"].currency == "GBP"


# -- malformed bodies: an UpstreamError, never a crash ----------------------------------------------

MALFORMED = [
    b"<html>Bad gateway</html>", b"not json", b"[]", b"null", b"{}", b'"text"',
    b'{"close": "abc"}', b'{"close": null}', b'{"close": true}', b'{"close": "1e999"}',
    b'{"close": "10", "currency": "pounds"}', b'{"close": "10", "mic_code": 7, "currency": 5}',
    b'{"status": "error"}', b'{"status": "error", "code": "x", "message": 3}',
    b'{"meta": {}, "values": "x", "status": "ok"}', b'{"meta": [], "values": [], "status": "ok"}',
    b'{"meta": {}, "values": [{"datetime": "yesterday", "open": "1", "high": "1", "low": "1", "close": "1"}]}',
    b'{"meta": {}, "values": [{"datetime": 20251201}]}', b'{"meta": {}, "values": [[1, 2]]}',
    b'{"data": "x", "status": "ok"}', b'{"data": [{"symbol": 3}], "status": "ok"}', b'{"data": [1]}',
    b'{"name": 5}', b'{"meta": {}, "values": [], "status": "no"}',
]


@pytest.mark.parametrize("body", MALFORMED)
@pytest.mark.parametrize("kind", ["quote", "history", "search", "listing", "profile"])
def test_twelvedata_malformed_body_is_an_upstream_error(body, kind):
    subject = "SAP" if kind == "search" else "SAP.DE"
    with pytest.raises(StockcacheError) as info:
        make(plan="grow").parse(kind, subject, {"q": "SAP"}, 200, {}, body)
    # NoData only for a well-formed empty answer (a {} profile, no matching search row).
    assert type(info.value) in (UpstreamError, NoData), info.value


BATCH_MALFORMED = [b'{"SAP": 1, "SIE": []}', b'{"SAP": {"close": "x"}}', b'{"1": 2, "3": 4}']


@pytest.mark.parametrize("body", MALFORMED + BATCH_MALFORMED)
def test_twelvedata_malformed_batch_body_is_an_upstream_error(provider, body):
    try:
        out = provider.parse_batch("quote", ["SAP.DE", "SIE.DE"], {}, 200, {}, body)
    except StockcacheError as exc:
        assert type(exc) is UpstreamError, exc
        return
    assert set(out) == {"SAP.DE", "SIE.DE"}  # a body that reads as keyed fails each symbol on its own
    assert all(type(value) is UpstreamError for value in out.values()), out


def test_twelvedata_payload_files_are_json():
    for path in PAYLOADS.glob("td_*.json"):
        json.loads(path.read_bytes())
