"""International listings: each provider's symbol form, its coverage, and prices in the right currency.

The upstreams are `responses` with the real APIs' shapes (upstream-apis.md):
Alpha Vantage quotes London in pence with no currency in GLOBAL_QUOTE, and
names the unit only in SYMBOL_SEARCH (``8. currency``); Finnhub's free plan
serves US listings only.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from stockcache import currency
from stockcache.errors import NoData, SymbolNotCovered, SymbolNotFound
from stockcache.metrics import Metrics
from stockcache.models import Candle, History, Quote
from stockcache.symbols import listing
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig, AlphaVantageProvider
from stockcache.upstream.providers.finnhub import FinnhubConfig, FinnhubProvider
from tests.unit.conftest import AV, AV_KEY, FH, FH_KEY


def _av(clock):
    return AlphaVantageProvider(AlphaVantageConfig(api_key=AV_KEY, url=AV), clock=clock)


def _fh(clock, plan="free"):
    return FinnhubProvider(FinnhubConfig(api_key=FH_KEY, url=FH, plan=plan), clock=clock)


def _global_quote(symbol, price, previous, day="2025-12-29"):
    change = round(price - previous, 4)
    return {"Global Quote": {"01. symbol": symbol, "02. open": f"{previous:.4f}", "03. high": f"{price + 1:.4f}",
                             "04. low": f"{previous - 1:.4f}", "05. price": f"{price:.4f}", "06. volume": "1000",
                             "07. latest trading day": day, "08. previous close": f"{previous:.4f}",
                             "09. change": f"{change:.4f}", "10. change percent": f"{change / previous * 100:.4f}%"}}


def _match(symbol, name, currency_code, region="United Kingdom"):
    return {"1. symbol": symbol, "2. name": name, "3. type": "Equity", "4. region": region,
            "5. marketOpen": "08:00", "6. marketClose": "16:30", "7. timezone": "UTC+01",
            "8. currency": currency_code, "9. matchScore": "1.0000"}


class AlphaVantageFake:
    """Answers GLOBAL_QUOTE and SYMBOL_SEARCH per Alpha Vantage symbol, and counts calls by function."""

    def __init__(self, quotes, matches):
        self.quotes, self.matches, self.calls = quotes, matches, []

    def __call__(self, request):
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        self.calls.append((query["function"], query.get("symbol") or query.get("keywords")))
        if query["function"] == "GLOBAL_QUOTE":
            body = self.quotes.get(query["symbol"], {"Global Quote": {}})
        elif query["function"] == "SYMBOL_SEARCH":
            body = {"bestMatches": self.matches.get(query["keywords"], [])}
        else:
            body = {"Information": "This fake answers GLOBAL_QUOTE and SYMBOL_SEARCH only."}
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def count(self, function):
        return sum(1 for name, _ in self.calls if name == function)


# -- currencies --------------------------------------------------------------------------------


@pytest.mark.parametrize(("reported", "expected"), [
    ("GBp", ("GBP", 100)), ("GBX", ("GBP", 100)), ("GBx", ("GBP", 100)), ("ZAc", ("ZAR", 100)),
    ("ILA", ("ILS", 100)), ("GBP", ("GBP", 1)), ("usd", ("USD", 1)), ("EUR", ("EUR", 1)),
])
def test_currency_minor_units_name_their_major_unit_and_factor(reported, expected):
    assert currency.major(reported) == expected


@pytest.mark.parametrize("junk", ["", "POUND", "£", "G8P", "US"])
def test_currency_that_is_not_a_code_is_refused(junk):
    with pytest.raises(ValueError):
        currency.major(junk)


def test_currency_pence_quote_becomes_pounds_and_keeps_its_percentages():
    pence = Quote("VOD.L", price=7250.5, change=-12.5, change_percent=-0.1721, high=7300.0, low=7200.0,
                  open=7263.0, previous_close=7263.0, timestamp=1_767_000_000)
    pounds = currency.in_major(pence, "GBX")
    assert pounds.currency == "GBP"
    assert (pounds.price, pounds.change, pounds.high, pounds.low, pounds.open, pounds.previous_close) == (
        72.505, -0.125, 73.0, 72.0, 72.63, 72.63)
    assert pounds.change_percent == pence.change_percent and pounds.timestamp == pence.timestamp


def test_currency_pence_history_becomes_pounds_bar_by_bar_and_volumes_stay():
    bars = (Candle("2025-12-26", 7200.0, 7300.0, 7100.0, 7250.0, 900), Candle("2025-12-29", 7250.0, 7260.0, 7000.0,
                                                                               7010.0, 1200))
    history = currency.in_major(History("VOD.L", bars), "GBp")
    assert history.currency == "GBP"
    assert [(c.open, c.high, c.low, c.close, c.volume) for c in history.candles] == [
        (72.0, 73.0, 71.0, 72.5, 900), (72.5, 72.6, 70.0, 70.1, 1200)]


@pytest.mark.parametrize(("symbol", "expected", "needs_listing"), [
    ("AAPL", (None, "USD"), False),  # the US venue trades in dollars; its MIC is the provider's to say
    ("SAP.DE", ("XETR", "EUR"), False),
    ("MC.PA", ("XPAR", "EUR"), False),
    ("VOD.L", ("XLON", None), True),  # London: pence, pounds or dollars; never guessed from the venue
    ("NESN.SW", ("XSWX", None), True),
    ("BTC-EUR", (None, "EUR"), False),
    ("^GSPC", (None, None), False),  # an index is in points
])
def test_currency_settle_takes_from_the_venue_only_what_is_certain(symbol, expected, needs_listing):
    bare = Quote(symbol, 10.0, None, None, None, None, None, None, None)
    settled, wanted = currency.settle(bare, listing(symbol))
    assert (settled.exchange, settled.currency) == expected
    assert wanted is needs_listing


# -- symbol forms and coverage -----------------------------------------------------------------


@pytest.mark.parametrize(("symbol", "theirs"), [
    ("SAP.DE", "SAP.DEX"), ("SAP.F", "SAP.FRK"), ("VOD.L", "VOD.LON"), ("MC.PA", "MC.PAR"),
    ("ASML.AS", "ASML.AMS"), ("RY.TO", "RY.TRT"), ("0700.HK", "0700.HKG"), ("BRK.B", "BRK.B"), ("AAPL", "AAPL"),
])
def test_alphavantage_is_sent_its_own_suffix(clock, symbol, theirs):
    request = _av(clock).build_request("quote", symbol, {})
    assert request.params["symbol"] == theirs


@pytest.mark.parametrize("symbol", ["ENEL.MI", "NESN.SW", "ERIC-B.ST", "7203.T", "BTC-USD", "^GSPC"])
def test_alphavantage_does_not_claim_venues_whose_suffix_is_unverified(clock, symbol):
    assert not _av(clock).covers("quote", listing(symbol))


def test_finnhub_free_plan_covers_us_listings_only_and_paid_covers_every_venue(clock):
    free, paid = _fh(clock), _fh(clock, "paid")
    for kind in ("quote", "profile", "news", "metric"):
        assert free.covers(kind, listing("AAPL")) and free.covers(kind, listing("BRK.B"))
        assert not free.covers(kind, listing("SAP.DE")) and not free.covers(kind, listing("VOD.L"))
        assert paid.covers(kind, listing("SAP.DE")) and paid.covers(kind, listing("7203.T"))
    assert not free.covers("history", listing("AAPL")) and paid.covers("history", listing("SAP.DE"))
    assert free.covers("search", None)


@responses.activate
def test_alphavantage_search_results_are_written_the_way_stockcache_takes_them(clock):
    body = {"bestMatches": [_match("SAP.DEX", "SAP SE", "EUR", "XETRA"), _match("SAP", "SAP SE ADR", "USD", "US"),
                            _match("SAPG.BSE", "Sapg", "INR", "India/Bombay")]}
    results = _av(clock).parse("search", "SAP", {"q": "SAP"}, 200, {}, json.dumps(body).encode())
    assert [r["symbol"] for r in results] == ["SAP.DE", "SAP", "SAPG.BSE"]


# -- through the read-through path -------------------------------------------------------------


@responses.activate
def test_readthrough_london_quote_in_pence_is_served_in_pounds_with_one_search_a_day(build, clock):
    fake = AlphaVantageFake({"VOD.LON": _global_quote("VOD.LON", 7250.5, 7263.0)},
                            {"VOD": [_match("VOD", "Vodafone Group PLC ADR", "USD", "United States"),
                                     _match("VOD.LON", "Vodafone Group PLC", "GBX")]})
    responses.add_callback(responses.GET, AV, callback=fake)
    rt = build([_av(clock)])
    quote = rt.one("quote", "VOD.L")
    assert (quote["symbol"], quote["currency"], quote["exchange"], quote["price"]) == ("VOD.L", "GBP", "XLON", 72.505)
    assert quote["previous_close"] == 72.63
    clock.advance(400)  # past the quote TTL: the quote is fetched again, the listing's unit is not
    assert rt.one("quote", "VOD.L")["price"] == 72.505
    assert fake.count("GLOBAL_QUOTE") == 2 and fake.count("SYMBOL_SEARCH") == 1


@responses.activate
def test_readthrough_london_etf_priced_in_dollars_is_never_divided(build, clock):
    fake = AlphaVantageFake({"VWRA.LON": _global_quote("VWRA.LON", 152.34, 151.0)},
                            {"VWRA": [_match("VWRA.LON", "Vanguard FTSE All-World USD Acc", "USD")]})
    responses.add_callback(responses.GET, AV, callback=fake)
    quote = build([_av(clock)]).one("quote", "VWRA.L")
    assert (quote["currency"], quote["price"]) == ("USD", 152.34)


@responses.activate
def test_readthrough_london_quote_whose_unit_nobody_names_has_no_currency_rather_than_a_guess(build, clock):
    fake = AlphaVantageFake({"BP.LON": _global_quote("BP.LON", 431.2, 430.0)}, {})
    responses.add_callback(responses.GET, AV, callback=fake)
    quote = build([_av(clock)]).one("quote", "BP.L")
    assert quote["currency"] is None and quote["price"] == 431.2


@responses.activate
def test_readthrough_xetra_quote_is_in_euros_without_a_search(build, clock):
    fake = AlphaVantageFake({"SAP.DEX": _global_quote("SAP.DEX", 231.45, 229.9)}, {})
    responses.add_callback(responses.GET, AV, callback=fake)
    quote = build([_av(clock)]).one("quote", "SAP.DE")
    assert (quote["symbol"], quote["currency"], quote["exchange"], quote["price"]) == ("SAP.DE", "EUR", "XETR", 231.45)
    assert fake.count("SYMBOL_SEARCH") == 0


@responses.activate
def test_readthrough_xetra_listing_never_reaches_finnhub_free_and_never_opens_its_circuit(build, clock):
    responses.add(responses.GET, f"{FH}/quote", status=403, json={"error": "You don't have access to this resource."})
    fake = AlphaVantageFake({"SAP.DEX": _global_quote("SAP.DEX", 231.45, 229.9)}, {})
    responses.add_callback(responses.GET, AV, callback=fake)
    rt = build([_fh(clock), _av(clock)], threshold=1)
    assert rt.one("quote", "SAP.DE")["source"] == "alphavantage"
    assert not [c for c in responses.calls if c.request.url.startswith(FH)]
    assert rt.router.breakers["finnhub"].state == "closed"


@responses.activate
def test_readthrough_symbol_no_configured_provider_covers_names_the_key_that_would(build, clock):
    rt = build([_fh(clock)])
    found, errors = rt.many("quote", ["SAP.DE", "VOD.L"])
    assert not found
    error = errors["SAP.DE"]
    assert isinstance(error, SymbolNotCovered) and error.code == "symbol_not_covered" and error.status == 404
    assert error.message.startswith("SAP.DE (Xetra) is not covered by Finnhub's free plan; set ALPHAVANTAGE_API_KEY")
    assert "STOCKCACHE_FINNHUB_PLAN=paid" in error.message
    assert errors["VOD.L"].fields["symbol"] == "VOD.L"
    assert len(responses.calls) == 0


@responses.activate
def test_readthrough_finnhub_empty_profile_asks_the_next_provider(build, clock):
    responses.add(responses.GET, f"{FH}/stock/profile2", json={})
    overview = {"Symbol": "IBM", "Name": "International Business Machines", "Currency": "USD", "Exchange": "NYSE",
                "Country": "USA", "Sector": "TECHNOLOGY", "MarketCapitalization": "228000000000", "Beta": "0.70",
                "PERatio": "24.5", "EPS": "10.1", "DividendYield": "0.0295", "52WeekHigh": "250.0",
                "52WeekLow": "160.0"}
    responses.add(responses.GET, AV, json=overview)
    rt = build([_fh(clock), _av(clock)])
    profile = rt.one("profile", "IBM")
    assert profile["source"] == "alphavantage" and profile["name"] == "International Business Machines"
    # The same OVERVIEW answer held the key figures: reading them costs no call.
    calls = len(responses.calls)
    metric = rt.one("metric", "IBM")
    assert metric["metrics"]["pe_ratio"] == 24.5 and metric["cache"] == "memory"
    assert len(responses.calls) == calls
    assert rt.metrics.get(Metrics.UPSTREAM_ERRORS, "finnhub") == 0


@responses.activate
def test_readthrough_no_provider_with_data_is_not_found(build, clock):
    responses.add(responses.GET, f"{FH}/stock/profile2", json={})
    responses.add(responses.GET, AV, json={})
    _, errors = build([_fh(clock), _av(clock)]).many("profile", ["QQQQ"])
    assert type(errors["QQQQ"]) is SymbolNotFound and errors["QQQQ"].fields["symbol"] == "QQQQ"


@pytest.mark.parametrize("body", [{}, {"metric": {}}, {"metric": None, "series": {}}, {"series": {"annual": {}}}])
def test_finnhub_metric_without_figures_is_no_data_not_a_failure(clock, body):
    with pytest.raises(NoData):
        _fh(clock).parse("metric", "AAPL", {}, 200, {}, json.dumps(body).encode())


# -- Alpha Vantage news, as the real feed answers ------------------------------------------------


def test_alphavantage_news_asks_for_every_article_of_the_window_in_one_call(clock):
    request = _av(clock).build_request("news", "SAP.DE", {"days": 30})
    assert request.params["limit"] == "1000" and request.params["tickers"] == "SAP.DEX"


def test_alphavantage_news_no_articles_found_is_a_quiet_window_not_an_unknown_symbol(clock):
    body = {"Information": "No articles found. Please adjust the time range or refer to the API documentation "
                           "https://www.alphavantage.co/documentation#news-sentiment and try again."}
    news = _av(clock).parse("news", "IBM", {"days": 7}, 200, {}, json.dumps(body).encode())
    assert news.symbol == "IBM" and news.articles == ()


@pytest.mark.parametrize(("stamp", "iso"), [
    ("20240103T165812", "2024-01-03T16:58:12Z"),
    ("20240103T165812Z", "2024-01-03T16:58:12Z"),
    ("20240103T1658", "2024-01-03T16:58:00Z"),  # not 16:05:08
    ("20240103T1658Z", "2024-01-03T16:58:00Z"),
])
def test_alphavantage_news_time_published_with_or_without_seconds_and_z(clock, stamp, iso):
    body = {"items": "1", "feed": [{"title": "t", "url": "https://example.com/a", "time_published": stamp,
                                    "summary": "s", "source": "x"}]}
    news = _av(clock).parse("news", "IBM", {"days": 7}, 200, {}, json.dumps(body).encode())
    assert news.articles[0].published_at == iso


def test_alphavantage_unknown_ticker_in_news_is_still_not_found(clock):
    body = {"Information": "Invalid inputs. Please refer to the API documentation "
                           "https://www.alphavantage.co/documentation#newsapi and try again."}
    with pytest.raises(SymbolNotFound):
        _av(clock).parse("news", "QQQQ", {"days": 7}, 200, {}, json.dumps(body).encode())
