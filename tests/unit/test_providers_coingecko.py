"""CoinGecko adapter: payloads in the real API's shapes through build_request -> requests (mocked) -> parse."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from stockcache.errors import (
    ConfigError,
    InvalidRequest,
    NoData,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    UpstreamAuthError,
    UpstreamError,
)
from stockcache.models import History, ListingInfo, Quote
from stockcache.settings import Settings
from stockcache.symbols import listing
from stockcache.upstream.providers import build_providers
from stockcache.upstream.providers.coingecko import COIN_IDS, MAX_IDS, CoinGeckoConfig, CoinGeckoProvider

BASE = "https://api.coingecko.com/api/v3"
PRO = "https://pro-api.coingecko.com/api/v3"
KEY = "TESTKEY_coingecko_5e6f7a"
PAYLOADS = Path(__file__).parent / "payloads"
NOW = datetime(2024, 3, 25, 8, 45, 17, tzinfo=UTC).timestamp()
DAY_MS = 86_400_000
MIDNIGHT_MS = int(datetime(2024, 3, 25, tzinfo=UTC).timestamp()) * 1000
RATE_LIMIT = {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit. Please visit "
                         "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate "
                         "limits."}}


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def make(key: str = KEY, url: str = BASE, **config: Any) -> CoinGeckoProvider:
    return CoinGeckoProvider(CoinGeckoConfig(api_key=key, url=url, **config), clock=lambda: NOW)


@pytest.fixture
def provider() -> CoinGeckoProvider:
    return make()


def fetch(provider: CoinGeckoProvider, kind: str, symbol: str, params: dict[str, Any], path: str, body: Any,
          status: int = 200, headers: dict[str, str] | None = None) -> Any:
    """Mock the real URL, send the built request with requests, parse the response."""
    request = provider.build_request(kind, symbol, params)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, BASE + path, body=raw, status=status, content_type="application/json",
                 headers=headers or {})
        response = requests.request(request.method, request.url, params=request.params, headers=request.headers)
        sent = mock.calls[0].request
    assert KEY not in sent.url, "the key must never be in the URL"
    assert sent.headers["x-cg-demo-api-key"] == KEY
    return provider.parse(kind, symbol, params, response.status_code, response.headers, response.content)


# -- requests and the key ------------------------------------------------------------------------


def test_coingecko_quote_request_asks_simple_price_with_24hr_change_and_the_key_only_in_a_header(provider, caplog):
    request = provider.build_request("quote", "BTC-USD", {})
    assert request.url == BASE + "/simple/price"
    assert request.params == {"ids": "bitcoin", "vs_currencies": "usd", "include_24hr_change": "true",
                              "include_last_updated_at": "true"}
    assert request.headers["x-cg-demo-api-key"] == KEY
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").debug("sending %r to %s", request, request.safe_url())
        build_providers(Settings(coingecko_api_key=KEY))
    for text in (repr(request), str(request), request.safe_url(), caplog.text):
        assert KEY not in text
    assert "CoinGecko: with a Demo key (30 calls/minute)" in caplog.text


def test_coingecko_keyless_requests_carry_no_key_header_and_a_pro_key_goes_to_its_own_header():
    keyless = make(key="").build_request("quote", "ETH-EUR", {})
    assert not any("api-key" in name.lower() for name in keyless.headers)
    assert keyless.params["ids"] == "ethereum" and keyless.params["vs_currencies"] == "eur"
    pro = make(url=PRO).build_request("quote", "BTC-USD", {})
    assert pro.url == PRO + "/simple/price" and pro.headers == {"Accept": "application/json",
                                                                "x-cg-pro-api-key": KEY}
    assert KEY not in repr(pro)
    assert make(url=PRO).startup_note() == "CoinGecko: with a Pro key (30 calls/minute)"


def test_coingecko_history_request_asks_one_day_more_daily_in_the_pairs_currency(provider):
    request = provider.build_request("history", "ETH-EUR", {"days": 30})
    assert request.url == BASE + "/coins/ethereum/market_chart"
    assert request.params == {"vs_currency": "eur", "days": "31", "interval": "daily"}
    with pytest.raises(InvalidRequest):
        provider.build_request("history", "ETH-EUR", {"days": 0})


def test_coingecko_search_and_listing_requests_use_search(provider):
    assert provider.build_request("search", "", {"q": "doge"}).params == {"query": "doge"}
    request = provider.build_request("listing", "LTC-EUR", {})
    assert (request.url, request.params) == (BASE + "/search", {"query": "LTC"})


# -- settings, coverage, demo mode ---------------------------------------------------------------


def test_coingecko_per_minute_auto_is_30_with_a_key_and_5_without_unless_set():
    assert make().limits().per_minute == 30
    assert make(key="").limits().per_minute == 5
    assert make(per_minute=12).limits().per_minute == 12 and make(key="", per_minute=0).limits().per_minute == 0
    assert Settings.from_env({"STOCKCACHE_COINGECKO_PER_MINUTE": "auto"}).get("coingecko_per_minute") == "auto"
    assert Settings.from_env({"STOCKCACHE_COINGECKO_PER_MINUTE": "45"}).get("coingecko_per_minute") == 45
    with pytest.raises(ConfigError, match="STOCKCACHE_COINGECKO_PER_MINUTE"):
        Settings.from_env({"STOCKCACHE_COINGECKO_PER_MINUTE": "fast"})
    assert make(key="").startup_note() == "CoinGecko: keyless (no COINGECKO_API_KEY; 5 calls/minute, shared per IP)"


def test_coingecko_runs_keyless_beside_another_key_with_its_own_key_alone_and_never_in_demo_mode():
    assert "coingecko" not in build_providers(Settings())  # no keys at all: the offline demo
    assert Settings().demo
    beside = build_providers(Settings(finnhub_api_key="f"))
    assert "coingecko" in beside and beside["coingecko"].limits().per_minute == 5
    alone = Settings(coingecko_api_key=KEY)
    assert not alone.demo and build_providers(alone)["coingecko"].limits().per_minute == 30


@pytest.mark.parametrize(("symbol", "covered"), [
    ("BTC-USD", True), ("ETH-EUR", True), ("LTC-GBP", True), ("ETH-BTC", True), ("SOL-JPY", True),
    ("BTC-USDT", False),  # stablecoins are no vs_currency of CoinGecko's
    ("AAPL", False), ("SAP.DE", False), ("^GSPC", False), ("BINANCE:BTCUSDT", False),
])
def test_coingecko_covers_crypto_pairs_in_currencies_it_prices_in(provider, symbol, covered):
    target = listing(symbol)
    for kind in ("quote", "history", "listing"):
        assert provider.covers(kind, target) is covered
    assert not provider.covers("search", target) and provider.covers("search", None)
    assert not provider.covers("profile", target)
    # docs/symbols.md lists it for no stock venue
    assert CoinGeckoProvider.plan_for("quote", listing("SAP.DE")) is None


# -- coin ids ------------------------------------------------------------------------------------


def test_coingecko_shipped_ids_need_no_lookup_other_coins_take_the_id_from_their_listing(provider):
    assert COIN_IDS["BTC"] == "bitcoin" and COIN_IDS["ETH"] == "ethereum"
    assert not provider.needs_listing("quote", listing("BTC-USD"))
    assert not provider.needs_listing("history", listing("SOL-EUR"))
    assert provider.needs_listing("quote", listing("LTC-USD")) and provider.needs_listing("history",
                                                                                          listing("DOT-EUR"))
    assert not provider.needs_listing("listing", listing("LTC-USD"))
    entry = ListingInfo(symbol="LTC-USD", name="Litecoin", currency="USD", id="litecoin").to_dict()
    assert provider.build_request("quote", "LTC-USD", {"listing": entry}).params["ids"] == "litecoin"
    chart = provider.build_request("history", "LTC-USD", {"listing": entry, "days": 5})
    assert chart.url == BASE + "/coins/litecoin/market_chart"


@pytest.mark.parametrize("entry", [None, {"id": None}, {"id": "../../simple/price"}, {"id": "a/b"}, {"id": 7}])
def test_coingecko_without_a_usable_coin_id_makes_no_request(provider, entry):
    params = {} if entry is None else {"listing": entry}
    for kind in ("quote", "history"):
        with pytest.raises(UpstreamError) as info:
            provider.build_request(kind, "LTC-USD", params)
        assert "LTC-USD" in info.value.message and not isinstance(info.value, SymbolNotFound)


def test_coingecko_listing_picks_the_best_market_cap_rank_of_the_namesakes(provider):
    info = fetch(provider, "listing", "BTC-EUR", {}, "/search", payload("coingecko_search_btc.json"))
    # batcat comes first and the Wormhole token has no rank: neither is what BTC names.
    assert info == ListingInfo(symbol="BTC-EUR", name="Bitcoin", currency="EUR", type="Crypto", id="bitcoin")
    unranked_first = {"coins": [{"id": "eth-clone", "symbol": "ETH", "name": "Clone", "market_cap_rank": None},
                                {"id": "ethereum", "symbol": "eth", "name": "Ethereum", "market_cap_rank": 2}]}
    assert fetch(provider, "listing", "ETH-USD", {}, "/search", unranked_first).id == "ethereum"
    only_unranked = {"coins": [{"id": "tiny-coin", "symbol": "TINY", "name": "Tiny", "market_cap_rank": None}]}
    assert fetch(provider, "listing", "TINY-USD", {}, "/search", only_unranked).id == "tiny-coin"


def test_coingecko_listing_of_a_ticker_no_coin_has_is_not_found(provider):
    # A search matches names too: "Bitcoin Cash" for BTC, but its ticker is BCH.
    with pytest.raises(SymbolNotFound) as info:
        fetch(provider, "listing", "BCHX-USD", {}, "/search", payload("coingecko_search_btc.json"))
    assert not isinstance(info.value, NoData) and info.value.to_dict()["symbol"] == "BCHX-USD"


def test_coingecko_search_lists_coins_as_dollar_pairs_best_rank_first_one_per_ticker(provider):
    results = fetch(provider, "search", "", {"q": "bitcoin"}, "/search", payload("coingecko_search_btc.json"))
    assert results == [{"symbol": "BTC-USD", "name": "Bitcoin", "type": "Crypto"},
                       {"symbol": "BCH-USD", "name": "Bitcoin Cash", "type": "Crypto"}]
    # No coin matches: no data, so the route reports the stock providers' own answer or failure.
    with pytest.raises(NoData):
        fetch(provider, "search", "", {"q": "zz"}, "/search", {"coins": [], "exchanges": []})


# -- quotes --------------------------------------------------------------------------------------


def test_coingecko_quote_derives_the_previous_close_from_the_24h_change(provider):
    quote = fetch(provider, "quote", "BTC-USD", {}, "/simple/price", payload("coingecko_simple_price.json"))
    price, percent = 67187.3358936566, 3.63727894677354
    previous = price / (1 + percent / 100)  # the price 24 hours ago: price = previous * (1 + percent/100)
    assert isinstance(quote, Quote) and quote.price == price and quote.currency == "USD"
    assert quote.previous_close == pytest.approx(previous, rel=1e-11)
    assert quote.change == pytest.approx(price - previous, rel=1e-9)
    assert quote.change_percent == pytest.approx(percent, abs=1e-4)
    assert quote.timestamp == 1711356300 and (quote.open, quote.high, quote.low) == (None, None, None)


def test_coingecko_quote_change_arithmetic_on_round_numbers(provider):
    body = {"ethereum": {"eur": 3300.0, "eur_24h_change": 10.0, "last_updated_at": 1711356300}}
    quote = fetch(provider, "quote", "ETH-EUR", {}, "/simple/price", body)
    assert (quote.previous_close, quote.change, quote.change_percent, quote.currency) == (3000.0, 300.0, 10.0, "EUR")
    down = fetch(provider, "quote", "ETH-EUR", {}, "/simple/price", {"ethereum": {"eur": 1500.0,
                                                                                  "eur_24h_change": -25.0}})
    assert (down.previous_close, down.change, down.timestamp) == (2000.0, -500.0, None)


def test_coingecko_stale_price_with_null_change_has_no_previous_close(provider):
    body = {"bitcoin": {"usd": 64000.5, "usd_24h_change": None, "last_updated_at": 1711356300}}
    quote = fetch(provider, "quote", "BTC-USD", {}, "/simple/price", body)
    assert quote.price == 64000.5 and (quote.previous_close, quote.change, quote.change_percent) == (None, None, None)


def test_coingecko_quote_of_an_id_left_out_is_not_found_and_a_currency_left_out_is_no_data(provider):
    with pytest.raises(SymbolNotFound) as info:
        fetch(provider, "quote", "BTC-USD", {}, "/simple/price", {})
    assert not isinstance(info.value, NoData) and info.value.to_dict()["symbol"] == "BTC-USD"
    with pytest.raises(NoData):
        fetch(provider, "quote", "BTC-USD", {}, "/simple/price", {"bitcoin": {"eur": 60000.0}})


# -- many symbols in one call --------------------------------------------------------------------


def _entry(symbol: str, coin: str) -> dict[str, Any]:
    return ListingInfo(symbol=symbol, name=None, currency=listing(symbol).quote, id=coin).to_dict()


def test_coingecko_batch_asks_every_coin_and_currency_in_one_call_and_costs_one_unit(provider):
    symbols = ["BTC-USD", "ETH-EUR", "BTC-EUR", "LTC-USD", "AVAX-USD"]
    params = {"listings": {"LTC-USD": _entry("LTC-USD", "litecoin"), "AVAX-USD": None}}
    request = provider.build_batch_request("quote", symbols, params)
    assert request.url == BASE + "/simple/price"
    assert request.params["ids"] == "bitcoin,ethereum,litecoin"  # AVAX's id is not known: left out
    assert request.params["vs_currencies"] == "eur,usd"
    assert request.params["include_24hr_change"] == "true" and KEY not in repr(request)
    assert provider.batch["quote"] == MAX_IDS and MAX_IDS >= 40  # a 40-pair page is one call
    assert provider.units("quote", 40) == 1
    with pytest.raises(ValueError):
        provider.build_batch_request("quote", [f"C{i}X-USD" for i in range(MAX_IDS + 1)], {})
    with pytest.raises(ValueError):
        provider.build_batch_request("history", ["BTC-USD", "ETH-USD"], {})


def test_coingecko_batch_answer_gives_each_symbol_its_own_quote_or_error(provider):
    symbols = ["BTC-USD", "ETH-EUR", "BTC-EUR", "DOT-USD", "AVAX-USD", "SOL-USD"]
    params = {"listings": {"DOT-USD": _entry("DOT-USD", "polkadot")}}
    body = {"bitcoin": {"usd": 66000.0, "usd_24h_change": 10.0, "eur": 60500.0, "eur_24h_change": 10.0,
                        "last_updated_at": 1711356300},
            "ethereum": {"usd": 3300.0, "eur": 3025.0, "eur_24h_change": -50.0, "last_updated_at": 1711356240},
            "solana": {"usd": "a lot"}}
    out = provider.parse_batch("quote", symbols, params, 200, {}, json.dumps(body).encode())
    assert set(out) == set(symbols)
    assert (out["BTC-USD"].price, out["BTC-USD"].previous_close, out["BTC-USD"].currency) == (66000.0, 60000.0,
                                                                                               "USD")
    assert (out["BTC-EUR"].price, out["BTC-EUR"].previous_close, out["BTC-EUR"].currency) == (60500.0, 55000.0,
                                                                                               "EUR")
    assert (out["ETH-EUR"].symbol, out["ETH-EUR"].previous_close, out["ETH-EUR"].timestamp) == ("ETH-EUR", 6050.0,
                                                                                                 1711356240)
    assert type(out["DOT-USD"]) is SymbolNotFound  # an id left out of the answer: unknown to CoinGecko
    assert out["DOT-USD"].to_dict()["symbol"] == "DOT-USD"
    assert type(out["AVAX-USD"]) is UpstreamError  # its id was never known, so never asked
    assert type(out["SOL-USD"]) is UpstreamError  # a bad row fails its own symbol only


@pytest.mark.parametrize(("status", "body", "error"), [
    (429, RATE_LIMIT, RateLimited),
    (401, {"error": {"status": {"error_code": 10002, "error_message": "API Key Missing or Invalid."}}},
     UpstreamAuthError),
    (500, {"error": "Internal Server Error"}, UpstreamError),
    (200, b"<html>Just a moment...</html>", UpstreamError),
    (200, b"[]", UpstreamError),
])
def test_coingecko_batch_failure_of_the_whole_call_is_every_symbols(provider, status, body, error):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(error):
        provider.parse_batch("quote", ["BTC-USD", "ETH-USD"], {}, status, {}, raw)


# -- history -------------------------------------------------------------------------------------


def _chart(days: int, close_of: Any, *, now_ms: int) -> dict[str, Any]:
    """A market_chart body: a point at 00:00 UTC of each of ``days`` days up to today, then "now"."""
    stamps = [MIDNIGHT_MS - back * DAY_MS for back in range(days - 1, -1, -1)] + [now_ms]
    prices = [[ms, close_of(ms)] for ms in stamps]
    return {"prices": prices, "market_caps": [[ms, p * 19e6] for ms, p in prices],
            "total_volumes": [[ms, p * 500_000.0] for ms, p in prices]}


@pytest.mark.parametrize("now_ms", [int(NOW * 1000), MIDNIGHT_MS + 20 * 3_600_000 + 417])  # 08:45, 20:00
def test_coingecko_history_reads_milliseconds_dates_each_midnight_point_as_the_day_before_and_drops_now(
        provider, now_ms):
    assert now_ms % DAY_MS != 0  # "now" is intraday

    def close_of(ms: int) -> float:
        return 1000.0 + (ms - MIDNIGHT_MS) / DAY_MS * 10 if ms % DAY_MS == 0 else 99999.0

    history = fetch(provider, "history", "BTC-EUR", {"days": 3}, "/coins/bitcoin/market_chart",
                    _chart(4, close_of, now_ms=now_ms))
    assert isinstance(history, History) and history.currency == "EUR" and history.interval == "1d"
    # 00:00 of 2024-03-25 closes 2024-03-24; today's bar (and "now") is not complete, so it is not there.
    assert [c.date for c in history.candles] == ["2024-03-22", "2024-03-23", "2024-03-24"]
    assert [c.close for c in history.candles] == [980.0, 990.0, 1000.0]
    assert [c.open for c in history.candles] == [970.0, 980.0, 990.0]  # the close before: it trades all night
    assert all(c.high == c.close and c.low == c.open for c in history.candles)
    assert [c.volume for c in history.candles] == [500_000] * 3  # volume in EUR / price = coins
    assert 99999.0 not in {c.close for c in history.candles}


def test_coingecko_history_keeps_the_last_days_asked_unsorted_and_repeated_points_included(provider):
    body = _chart(40, lambda ms: 50.0 + (ms - MIDNIGHT_MS) / DAY_MS, now_ms=MIDNIGHT_MS + 3_600_000)
    body["prices"] = body["prices"][::-1] + [body["prices"][0]]
    history = fetch(provider, "history", "ETH-USD", {"days": 30}, "/coins/ethereum/market_chart", body)
    dates = [c.date for c in history.candles]
    assert len(dates) == 30 and dates == sorted(dates) and len(set(dates)) == 30
    assert dates[-1] == "2024-03-24" and history.candles[-1].close == 50.0


def test_coingecko_history_dates_points_a_little_off_midnight_by_the_nearest_day(provider):
    body = _chart(3, lambda ms: 7.0 if ms < MIDNIGHT_MS else 8.0, now_ms=MIDNIGHT_MS + 5_000_000)
    body["prices"] = [[ms + 250 if ms % DAY_MS == 0 else ms, price] for ms, price in body["prices"]]
    body["prices"][0][0] -= 500
    history = fetch(provider, "history", "SOL-USD", {"days": 5}, "/coins/solana/market_chart", body)
    assert [(c.date, c.open, c.close) for c in history.candles] == [("2024-03-23", 7.0, 7.0),
                                                                    ("2024-03-24", 7.0, 8.0)]


def test_coingecko_history_of_an_unknown_coin_is_not_found(provider):
    with pytest.raises(SymbolNotFound) as info:
        fetch(provider, "history", "BTC-USD", {"days": 5}, "/coins/bitcoin/market_chart",
              {"error": "coin not found"}, status=404)
    assert info.value.to_dict()["symbol"] == "BTC-USD"
    with pytest.raises(NoData):
        fetch(provider, "history", "BTC-USD", {"days": 5}, "/coins/bitcoin/market_chart",
              {"prices": [[int(NOW * 1000), 1.0]], "market_caps": [], "total_volumes": []})


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "headers", "retry_after"), [
    (429, {}, 60),  # Retry-After is undocumented: a minute
    (429, {"Retry-After": "17"}, 17),
    (200, {}, 60),  # the error body with HTTP 200
])
def test_coingecko_429_is_rate_limited_with_or_without_retry_after(provider, status, headers, retry_after):
    with pytest.raises(RateLimited) as info:
        fetch(provider, "quote", "BTC-USD", {}, "/simple/price", RATE_LIMIT, status=status, headers=headers)
    assert info.value.retry_after == retry_after


@pytest.mark.parametrize(("status", "body", "error", "words"), [
    (401, {"error": {"status": {"error_code": 10002, "error_message": "API Key Missing or Invalid. Please "
                                "check your API key at https://www.coingecko.com/en/developers/dashboard"}}},
     UpstreamAuthError, "refused the API key"),
    (400, {"status": {"error_code": 10010, "error_message": "If you are using Pro API key, please change your root "
                      "URL from api.coingecko.com to pro-api.coingecko.com"}}, UpstreamAuthError, "pro-api"),
    (401, {"error": {"status": {"error_code": 10011, "error_message": "wrong host"}}}, UpstreamAuthError, "host"),
    (401, {"error": {"status": {"error_code": 10005, "error_message": "You may not have access to this endpoint."}}},
     UpstreamAuthError, "plan"),
    (403, b"error code: 1020", UpstreamAuthError, "HTTP 403"),
    (401, {"error": {"status": {"error_code": 10012, "error_message": "exceeds the allowed time range"}}},
     UpstreamError, "time range"),
    (404, {"error": "Incorrect path. Please check https://www.coingecko.com/api/"}, UpstreamError, "HTTP 404"),
    (408, b"", UpstreamError, "HTTP 408"),
    (500, {"error": "Internal Server Error"}, UpstreamError, "HTTP 500"),
    (502, b"<html>Bad gateway</html>", UpstreamError, "HTTP 502"),
    (503, {"status": {"error_code": 503, "error_message": "Service Unavailable"}}, UpstreamError, "HTTP 503"),
    (200, {"error": "something went wrong"}, UpstreamError, "something went wrong"),
])
def test_coingecko_errors_are_classified_by_error_code_then_status(provider, status, body, error, words):
    with pytest.raises(StockcacheError) as info:
        fetch(provider, "quote", "BTC-USD", {}, "/simple/price", body, status=status)
    assert type(info.value) is error and words in info.value.message


def test_coingecko_an_error_text_quoting_the_key_is_redacted(provider):
    body = {"error": {"status": {"error_code": 10002, "error_message": f"Invalid key {KEY}"}}}
    with pytest.raises(UpstreamAuthError) as info:
        fetch(provider, "quote", "BTC-USD", {}, "/simple/price", body, status=401)
    assert KEY not in info.value.message and KEY not in json.dumps(info.value.to_dict())


@pytest.mark.parametrize(("kind", "path", "body"), [
    ("quote", "/simple/price", b"not json"),
    ("quote", "/simple/price", b"<!DOCTYPE html><html></html>"),
    ("quote", "/simple/price", b'["bitcoin"]'),
    ("quote", "/simple/price", b'{"bitcoin": 5}'),
    ("quote", "/simple/price", b'{"bitcoin": {"usd": "67000"}}'),
    ("quote", "/simple/price", b'{"bitcoin": {"usd": true}}'),
    ("quote", "/simple/price", b'{"bitcoin": {"usd": 67000, "usd_24h_change": -100}}'),
    ("quote", "/simple/price", b'{"bitcoin": {"usd": 67000, "usd_24h_change": "up"}}'),
    ("history", "/coins/bitcoin/market_chart", b'{"prices": {}}'),
    ("history", "/coins/bitcoin/market_chart", b'{"market_caps": []}'),
    ("history", "/coins/bitcoin/market_chart", b'{"prices": [[1711324800000]]}'),
    ("history", "/coins/bitcoin/market_chart", b'{"prices": [["1711324800000", 5.0], [1711411200000, 5.0]]}'),
    ("history", "/coins/bitcoin/market_chart", b'{"prices": [[1711324800000.5, 5.0]]}'),
    ("history", "/coins/bitcoin/market_chart", b'{"prices": [[1711238400000, 5.0], [1711324800000, null]]}'),
    ("listing", "/search", b'{"coins": {}}'),
    ("listing", "/search", b'{"coins": [{"id": 1, "symbol": "BTC"}]}'),
    ("listing", "/search", b'{"coins": [{"id": "bitcoin", "symbol": "BTC", "market_cap_rank": "1"}]}'),
    ("listing", "/search", b'{"coins": [{"id": "bit/coin", "symbol": "BTC", "market_cap_rank": 1}]}'),
    ("search", "/search", b'{"nfts": []}'),
])
def test_coingecko_malformed_bodies_are_upstream_errors(provider, kind, path, body):
    params = {"days": 5} if kind == "history" else {"q": "btc"} if kind == "search" else {}
    with pytest.raises(StockcacheError) as info:
        fetch(provider, kind, "BTC-USD", params, path, body)
    assert type(info.value) is UpstreamError
