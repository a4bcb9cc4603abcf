"""The fake Alpha Vantage's own ways over real HTTP: its suffixes, pence, news quirks and throttling texts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from bench.fake_upstream import FakeUpstream
from stockcache.upstream.providers import DemoMarket

pytestmark = pytest.mark.timeout(60)

KEY = "TESTKEY_alphav_9a8b7c"
NOW = datetime(2025, 12, 29, 15, 0, tzinfo=UTC).timestamp()  # Monday: London and Xetra open, New York open
NO_ARTICLES = "No articles found. Please adjust the time range or refer to the API documentation"


@pytest.fixture
def fake(clock):
    clock.set(NOW)
    with FakeUpstream(clock=clock, expected_keys={"alphavantage": KEY}) as server:
        yield server


@pytest.fixture
def get(fake):
    session = requests.Session()

    def get(**params: str) -> dict:
        return session.get(fake.alphavantage_url, params={"apikey": KEY, **params}, timeout=10).json()

    yield get
    session.close()


def av_time(text: str) -> str:
    """A reference reading of time_published, in all its observed forms, as ISO 8601 UTC."""
    text = text.removesuffix("Z")
    parsed = datetime.strptime(text, "%Y%m%dT%H%M%S" if len(text) == 15 else "%Y%m%dT%H%M")
    return parsed.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def window(days: int) -> dict[str, str]:
    start = datetime.fromtimestamp(NOW - days * 86400, UTC)
    return {"time_from": start.strftime("%Y%m%dT%H%M")}


def test_alphavantage_serves_listings_under_its_own_suffixes(get):
    market = DemoMarket(marked=False)
    sap = get(function="GLOBAL_QUOTE", symbol="SAP.DEX")["Global Quote"]
    assert sap["01. symbol"] == "SAP.DEX" and sap["05. price"] == f"{market.quote('SAP.DE', NOW).price:.4f}"
    vod = get(function="GLOBAL_QUOTE", symbol="VOD.LON")["Global Quote"]
    assert vod["05. price"] == f"{market.quote('VOD.L', NOW).price:.4f}"  # pence, as listed
    assert "currency" not in " ".join(vod).lower()  # GLOBAL_QUOTE says no currency
    for symbol, ours in (("MC.PAR", "MC.PA"), ("ASML.AMS", "ASML.AS"), ("RY.TRT", "RY.TO"), ("0700.HKG", "0700.HK"),
                         ("SAP.FRK", "SAP.F")):
        assert get(function="GLOBAL_QUOTE", symbol=symbol)["Global Quote"]["05. price"] == (
            f"{market.quote(ours, NOW).price:.4f}")
    series = get(function="TIME_SERIES_DAILY", symbol="VOD.LON")
    closes = {day: bar["4. close"] for day, bar in series["Time Series (Daily)"].items()}
    assert closes == {c.date: f"{c.close:.4f}" for c in market.history("VOD.L", NOW, 100).candles}
    assert series["Meta Data"]["5. Time Zone"] == "Europe/London"


@pytest.mark.parametrize("symbol", ["SAP.DE", "VOD.L", "MC.PA", "ENEL.MI", "NESN.SW", "7203.T"])
def test_alphavantage_does_not_know_yahoo_suffixes_or_unverified_venues(get, symbol):
    assert get(function="GLOBAL_QUOTE", symbol=symbol) == {"Global Quote": {}}
    assert get(function="OVERVIEW", symbol=symbol) == {}
    assert "Error Message" in get(function="TIME_SERIES_DAILY", symbol=symbol)


def test_alphavantage_overview_and_search_report_the_listing_currency(get):
    vod = get(function="OVERVIEW", symbol="VOD.LON")
    assert (vod["Symbol"], vod["Currency"], vod["Country"], vod["Exchange"]) == (
        "VOD.LON", "GBX", "United Kingdom", "LSE")
    assert get(function="OVERVIEW", symbol="VWRA.LON")["Currency"] == "USD"  # never pence from the venue alone
    assert get(function="OVERVIEW", symbol="SAP.DEX")["Currency"] == "EUR"
    assert get(function="OVERVIEW", symbol="AAPL")["Currency"] == "USD"
    matches = {m["1. symbol"]: m for m in get(function="SYMBOL_SEARCH", keywords="SAP")["bestMatches"]}
    assert {"SAP", "SAP.DEX", "SAP.FRK"} <= set(matches)
    assert (matches["SAP.DEX"]["4. region"], matches["SAP.DEX"]["8. currency"]) == ("XETRA", "EUR")
    assert matches["SAP.FRK"]["4. region"] == "Frankfurt" and matches["SAP"]["8. currency"] == "USD"
    vodafone = get(function="SYMBOL_SEARCH", keywords="vodafone")["bestMatches"][0]
    assert (vodafone["1. symbol"], vodafone["4. region"], vodafone["8. currency"]) == (
        "VOD.LON", "United Kingdom", "GBX")
    assert (vodafone["5. marketOpen"], vodafone["6. marketClose"], vodafone["7. timezone"]) == (
        "08:00", "16:30", "UTC+00")
    assert all(not m["1. symbol"].endswith(".MI") for m in get(function="SYMBOL_SEARCH", keywords="enel")[
        "bestMatches"])


def test_alphavantage_news_limit_defaults_to_50_and_goes_to_1000(get):
    market = DemoMarket(marked=False)
    start = NOW - 90 * 86400
    expected = market.news("AAPL", start, NOW, limit=1000, per_day=3).articles
    assert len(expected) > 50
    cut = get(function="NEWS_SENTIMENT", tickers="AAPL", **window(90))
    assert cut["items"] == "50" and len(cut["feed"]) == 50  # silently cut
    full = get(function="NEWS_SENTIMENT", tickers="AAPL", limit="1000", **window(90))
    assert [a["url"] for a in full["feed"]] == [a.url for a in expected]
    assert [av_time(a["time_published"]) for a in full["feed"]] == [a.published_at for a in expected]
    assert int(full["items"]) == len(expected)
    assert len(get(function="NEWS_SENTIMENT", tickers="AAPL", limit="5000", **window(90))["feed"]) == len(expected)
    earliest = get(function="NEWS_SENTIMENT", tickers="AAPL", sort="EARLIEST", limit="3", **window(90))["feed"]
    assert [a["url"] for a in earliest] == [a.url for a in expected[-3:][::-1]]


def test_alphavantage_news_tickers_are_and_ed(get):
    both = get(function="NEWS_SENTIMENT", tickers="AAPL,MSFT", limit="1000", **window(90))["feed"]
    assert both
    for article in both:
        assert {"AAPL", "MSFT"} <= {t["ticker"] for t in article["ticker_sentiment"]}
    apple = {a["url"] for a in get(function="NEWS_SENTIMENT", tickers="AAPL", limit="1000", **window(90))["feed"]}
    microsoft = {a["url"] for a in get(function="NEWS_SENTIMENT", tickers="MSFT", limit="1000", **window(90))["feed"]}
    urls = {a["url"] for a in both}
    assert urls <= apple | microsoft and len(urls) < len(apple)
    assert get(function="NEWS_SENTIMENT", tickers="AAPL,ZZZZ1")["Information"].startswith("Invalid inputs.")


def test_alphavantage_news_empty_window_for_a_known_ticker_says_no_articles(get):
    night = datetime(2025, 12, 29, 1, 0, tzinfo=UTC)
    body = get(function="NEWS_SENTIMENT", tickers="AAPL", time_from=night.strftime("%Y%m%dT%H%M"),
               time_to=night.replace(hour=2).strftime("%Y%m%dT%H%M"))
    assert set(body) == {"Information"} and body["Information"].startswith(NO_ARTICLES)
    assert get(function="NEWS_SENTIMENT", tickers="ZZZZ1")["Information"].startswith("Invalid inputs.")


def test_alphavantage_news_time_published_quirks_when_switched_on(fake, get):
    fake.av_news_quirks = False
    plain = get(function="NEWS_SENTIMENT", tickers="AAPL", limit="1000", **window(300))["feed"]
    assert {len(a["time_published"]) for a in plain} == {15}
    fake.av_news_quirks = True
    quirky = get(function="NEWS_SENTIMENT", tickers="AAPL", limit="1000", **window(300))["feed"]
    forms = {len(a["time_published"]) for a in quirky}
    assert forms == {13, 15, 16}  # 20240103T1658, 20240103T165800, 20240103T165800Z
    assert [av_time(a["time_published"]) for a in quirky] == [av_time(a["time_published"]) for a in plain]


@pytest.mark.parametrize(("style", "field", "quotes_key"), [
    ("detected", "Information", True), ("thankyou", "Information", False), ("thankyou-note", "Note", False)])
def test_alphavantage_daily_cap_in_each_real_wording(fake, get, style, field, quotes_key):
    fake.av_daily_cap = style
    fake.set_rate_limit("alphavantage", per_day=1)
    assert "Global Quote" in get(function="GLOBAL_QUOTE", symbol="IBM")
    body = get(function="GLOBAL_QUOTE", symbol="IBM")
    assert set(body) == {field} and "rate limit is 25 requests per day" in body[field]
    assert (KEY in body[field]) is quotes_key
