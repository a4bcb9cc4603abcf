"""The official Finnhub and Alpha Vantage Python clients, pointed at stockcache, behave as against the real APIs.

The real ``finnhub-python`` and ``alpha-vantage`` packages drive a running
service (waitress on loopback) backed by the fake upstream. The service's
clock is a FakeClock starting at the real time (the fake upstream dates its
data by the real clock), so TTLs are crossed by advancing it, never by sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import finnhub
import pytest
import requests
from alpha_vantage.alphaintelligence import AlphaIntelligence
from alpha_vantage.alphavantage import AlphaVantage
from alpha_vantage.fundamentaldata import FundamentalData
from alpha_vantage.timeseries import TimeSeries

from ..conftest import FakeClock
from .conftest import Api, Live, start_service, upstream_settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def live(tmp_path, upstream, clock) -> Iterator[Live]:
    service = start_service(upstream_settings(tmp_path, upstream), clock=clock)
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def token(live) -> str:
    """A long-lived stockcache API token, as a script owner would create with `tokens create`."""
    auth = live.runtime.auth
    live.runtime.store.create_user("script", auth.hash_password("a long enough password"))
    secret, _ = auth.create_api_token("script", label="drop-in")
    return secret


@pytest.fixture
def fh(live, token) -> Iterator[finnhub.Client]:
    client = finnhub.Client(api_key=token)
    client.API_URL = live.url + "/finnhub/api/v1"
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def av(live) -> Iterator[str]:
    """Point the alpha-vantage package at stockcache; the URL is a class attribute, so restore it."""
    saved = AlphaVantage._ALPHA_VANTAGE_API_URL
    AlphaVantage._ALPHA_VANTAGE_API_URL = live.url + "/alphavantage/query?"
    try:
        yield live.url
    finally:
        AlphaVantage._ALPHA_VANTAGE_API_URL = saved


def _today(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


# -- data through the official clients ------------------------------------------------------------


def test_dropin_finnhub_client_reads_every_served_endpoint(fh, clock):
    quote = fh.quote("AAPL")  # the client asks for /api/v1//quote: the double slash must work
    assert set(quote) == {"c", "d", "dp", "h", "l", "o", "pc", "t"} and quote["c"] > 0
    assert quote["l"] <= quote["c"] <= quote["h"] and isinstance(quote["t"], int)

    profile = fh.company_profile2(symbol="aapl")
    assert profile["ticker"] == "AAPL" and profile["name"] == "Apple Inc"
    assert 1e5 < profile["marketCapitalization"] < 1e8  # millions, as Finnhub sends it
    assert 1e3 < profile["shareOutstanding"] < 1e6

    today = _today(clock)
    news = fh.company_news("AAPL", _from=(today - timedelta(days=20)).strftime("%Y-%m-%d"),
                           to=today.strftime("%Y-%m-%d"))
    assert isinstance(news, list) and news
    assert {"category", "datetime", "headline", "id", "image", "related", "source", "summary", "url"} <= set(news[0])
    stamps = [item["datetime"] for item in news]
    assert stamps == sorted(stamps, reverse=True) and stamps[-1] >= clock() - 21 * 86400

    metric = fh.company_basic_financials("AAPL", "all")
    assert metric["symbol"] == "AAPL" and metric["metricType"] == "all"
    assert metric["metric"]["52WeekHigh"] >= metric["metric"]["52WeekLow"] > 0

    found = fh.symbol_lookup("apple")
    assert found["count"] == len(found["result"]) >= 1 and found["result"][0]["symbol"] == "AAPL"

    candles = fh.stock_candles("AAPL", "D", int(clock() - 30 * 86400), int(clock()))
    assert candles["s"] == "ok" and 15 <= len(candles["t"]) <= 23
    assert len(candles["c"]) == len(candles["o"]) == len(candles["v"]) == len(candles["t"])
    assert all(t % 86400 == 0 for t in candles["t"]) and candles["t"] == sorted(candles["t"])


def test_dropin_alphavantage_client_reads_every_served_function(av, token):
    quote, _ = TimeSeries(key=token).get_quote_endpoint("MSFT")
    assert quote["01. symbol"] == "MSFT" and float(quote["05. price"]) > 0
    assert quote["10. change percent"].endswith("%")

    overview, _ = FundamentalData(key=token).get_company_overview("MSFT")
    assert overview["Symbol"] == "MSFT" and overview["Name"] == "Microsoft Corp"
    assert int(overview["MarketCapitalization"]) > 1e9 and float(overview["PERatio"]) > 0

    series, meta = TimeSeries(key=token).get_daily("MSFT")
    assert meta["2. Symbol"] == "MSFT" and meta["4. Output Size"] == "Compact"
    dates = list(series)
    assert len(dates) == 100 and dates == sorted(dates, reverse=True) and meta["3. Last Refreshed"] == dates[0]
    assert set(series[dates[0]]) == {"1. open", "2. high", "3. low", "4. close", "5. volume"}

    frame, _ = TimeSeries(key=token, output_format="pandas").get_daily("MSFT")
    assert list(frame.columns) == ["1. open", "2. high", "3. low", "4. close", "5. volume"] and len(frame) == 100
    assert frame["4. close"].dtype == float  # the strings parse as numbers

    feed, _ = AlphaIntelligence(key=token).get_news_sentiment(tickers="MSFT")  # a DataFrame, by the client
    assert len(feed) >= 1 and {"title", "url", "time_published", "overall_sentiment_label"} <= set(feed.columns)

    matches, _ = TimeSeries(key=token).get_symbol_search("micro")
    assert "MSFT" in set(matches["1. symbol"])


def test_dropin_same_data_gives_the_same_numbers_on_all_three_apis(live, fh, av, token, clock):
    native = Api(live.url, token)
    ours = native.get("/api/quote/NVDA").json()
    theirs = fh.quote("NVDA")
    av_quote, _ = TimeSeries(key=token).get_quote_endpoint("NVDA")
    assert (theirs["c"], theirs["d"], theirs["dp"], theirs["pc"]) == (
        ours["price"], ours["change"], ours["change_percent"], ours["previous_close"])
    assert (float(av_quote["05. price"]), float(av_quote["09. change"]), float(av_quote["08. previous close"]),
            float(av_quote["10. change percent"].rstrip("%"))) == (
        ours["price"], ours["change"], ours["previous_close"], ours["change_percent"])

    profile = native.get("/api/profile/NVDA").json()
    assert round(fh.company_profile2(symbol="NVDA")["marketCapitalization"] * 1e6) == profile["market_cap"]
    overview, _ = FundamentalData(key=token).get_company_overview("NVDA")
    assert int(overview["MarketCapitalization"]) == profile["market_cap"]
    assert int(overview["SharesOutstanding"]) == profile["shares_outstanding"]

    history = native.get("/api/history/NVDA?days=100").json()["candles"]
    series, _ = TimeSeries(key=token).get_daily("NVDA")
    candles = fh.stock_candles("NVDA", "D", 0, int(clock()))
    assert [c["close"] for c in history] == [float(series[d]["4. close"]) for d in sorted(series)] == candles["c"]


# -- the cache behind them ------------------------------------------------------------------------


def test_dropin_repeated_calls_cost_one_upstream_call_per_ttl(live, fh, av, token, upstream, clock):
    native = Api(live.url, token)
    ts, fd = TimeSeries(key=token), FundamentalData(key=token)
    for _ in range(3):
        fh.quote("AAPL")
        ts.get_quote_endpoint("AAPL")
        fh.company_profile2(symbol="AAPL")
        fd.get_company_overview("AAPL")
        fh.company_basic_financials("AAPL", "all")
        fh.stock_candles("AAPL", "D", 0, int(clock()))
        ts.get_daily("AAPL")
        fh.symbol_lookup("apple")
        ts.get_symbol_search("Apple ")
    native.get("/api/quote/AAPL")
    # A 20-day Finnhub window and Alpha Vantage's default window share one cached 30-day fetch.
    since = (_today(clock) - timedelta(days=20)).strftime("%Y-%m-%d")
    fh.company_news("AAPL", _from=since, to=_today(clock).strftime("%Y-%m-%d"))
    AlphaIntelligence(key=token).get_news_sentiment(tickers="AAPL")

    calls = {endpoint: upstream.calls(endpoint=endpoint) for endpoint in (
        "quote", "GLOBAL_QUOTE", "stock/profile2", "stock/metric", "TIME_SERIES_DAILY", "search",
        "company-news")}
    assert calls == {"quote": 1, "GLOBAL_QUOTE": 0, "stock/profile2": 1, "stock/metric": 1,
                     "TIME_SERIES_DAILY": 1, "search": 1, "company-news": 1}

    clock.advance(301)  # past the quote TTL (300 s), within every other one
    fh.quote("AAPL")
    ts.get_quote_endpoint("AAPL")
    fh.company_profile2(symbol="AAPL")
    assert (upstream.calls(endpoint="quote"), upstream.calls(endpoint="stock/profile2")) == (2, 1)

    # The drop-in reads count in the same statistics as the native API's.
    upstream_stats = live.runtime.service.stats()["upstream"]
    assert upstream_stats["finnhub"]["calls"] == upstream.calls(provider="finnhub")
    assert upstream_stats["alphavantage"]["calls"] == upstream.calls(provider="alphavantage")


def test_dropin_serves_stale_data_when_the_upstream_is_rate_limited(live, fh, token, upstream, clock):
    fresh = fh.quote("MSFT")
    clock.advance(301)
    upstream.set_fault("429", retry_after=30)
    assert fh.quote("MSFT") == fresh  # stale-if-error: the script keeps working
    answer = requests.get(live.url + "/finnhub/api/v1/quote", params={"symbol": "MSFT", "token": token}, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-Stockcache-Stale"] == "true"


# -- errors, as the providers give them -----------------------------------------------------------


def test_dropin_unknown_symbol_answers_like_the_providers(fh, av, token, upstream):
    assert fh.quote("ZZZZ1") == {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
    assert fh.company_profile2(symbol="ZZZZ1") == {}
    assert fh.stock_candles("ZZZZ1", "D", 0, 2_000_000_000) == {"s": "no_data"}
    assert fh.company_news("ZZZZ1", _from="2026-01-01", to="2026-01-31") == []
    assert fh.company_basic_financials("ZZZZ1", "all")["metric"] == {}
    assert fh.quote("not a symbol!")["c"] == 0  # like Finnhub: no validation error, just nothing

    assert TimeSeries(key=token).get_quote_endpoint("ZZZZ1") == ({}, None)
    with pytest.raises(ValueError, match="Invalid API call"):
        TimeSeries(key=token).get_daily("ZZZZ1")
    with pytest.raises(ValueError, match="no return was given"):  # OVERVIEW's {} for unknown symbols
        FundamentalData(key=token).get_company_overview("ZZZZ1")
    # Finnhub (the news source) answers [] for unknown and quiet symbols alike: Alpha Vantage's own
    # "No articles found" (which its client raises on, as it does against the real API).
    with pytest.raises(ValueError, match="No articles found"):
        AlphaIntelligence(key=token).get_news_sentiment(tickers="ZZZZ1")
    with pytest.raises(ValueError, match="No articles found"):  # tickers are AND-ed: none is about both
        AlphaIntelligence(key=token).get_news_sentiment(tickers="ZZZZ1,AAPL")
    assert fh.quote("ZZZZ1")["c"] == 0
    assert upstream.calls(endpoint="quote", symbol="ZZZZ1") == 1  # the not-found is cached briefly too


def test_dropin_bad_or_missing_token_is_refused_like_the_providers(live, av, token, upstream):
    for bad, message in (("sc_notatoken_x", "Invalid API key"), ("", "Please use an API key.")):
        client = finnhub.Client(api_key=bad)
        client.API_URL = live.url + "/finnhub/api/v1"
        with pytest.raises(finnhub.FinnhubAPIException) as caught:
            client.quote("AAPL")
        assert (caught.value.status_code, caught.value.message) == (401, message)
    revoked_user_token = token
    live.runtime.auth.revoke_api_token(revoked_user_token)
    with pytest.raises(ValueError, match="apikey is invalid or missing"):
        TimeSeries(key=revoked_user_token).get_quote_endpoint("AAPL")
    answer = requests.get(live.url + "/alphavantage/query",
                          params={"function": "GLOBAL_QUOTE", "symbol": "AAPL", "apikey": "x" * 50}, timeout=10)
    assert answer.status_code == 200 and "x" * 50 not in answer.text  # never echoed
    assert upstream.calls() == 0


def test_dropin_rate_limited_raises_like_the_providers(live, fh, av, token, upstream):
    upstream.set_fault("429", retry_after=30)  # Finnhub says 429, Alpha Vantage its burst Information
    with pytest.raises(finnhub.FinnhubAPIException) as caught:
        fh.quote("META")
    assert caught.value.status_code == 429 and "API limit reached" in caught.value.message
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    with pytest.raises(ValueError, match="rate limit"):
        TimeSeries(key=token).get_quote_endpoint("TSLA")


def test_dropin_finnhub_refuses_what_stockcache_does_not_serve(fh, upstream, clock):
    for call in (lambda: fh.stock_insider_transactions("AAPL"),
                 lambda: fh.stock_candles("AAPL", "5", int(clock() - 86400), int(clock()))):
        with pytest.raises(finnhub.FinnhubAPIException) as caught:
            call()
        assert caught.value.status_code == 403 and "don't have access" in caught.value.message
    with pytest.raises(finnhub.FinnhubAPIException) as caught:
        fh.company_news("AAPL", _from="last week", to="today")
    assert caught.value.status_code == 422
    assert upstream.calls() == 0


def test_dropin_alphavantage_full_output_is_premium_and_csv_is_refused(av, token, upstream):
    with pytest.raises(ValueError, match="premium"):
        TimeSeries(key=token).get_daily("AAPL", outputsize="full")
    with pytest.raises(ValueError, match="does not exist"):
        TimeSeries(key=token).get_intraday("AAPL")
    answer = requests.get(av + "/alphavantage/query", params={
        "function": "GLOBAL_QUOTE", "symbol": "AAPL", "apikey": token, "datatype": "csv"}, timeout=10)
    assert answer.status_code == 200 and "Error Message" in answer.json()
    assert upstream.calls() == 0


def test_dropin_finnhub_takes_the_token_from_a_header_and_accepts_jwts(live, token):
    url = live.url + "/finnhub/api/v1/quote"
    by_header = requests.get(url, params={"symbol": "AAPL"}, headers={"X-Finnhub-Token": token}, timeout=10)
    assert by_header.status_code == 200 and by_header.headers["Content-Type"] == "application/json"
    user = live.runtime.store.get_user_by_name("script")[0]
    jwt = live.runtime.auth.issue_jwt(user.id, user.username, False)
    by_jwt = requests.get(url, params={"symbol": "AAPL", "token": jwt}, timeout=10)
    assert by_jwt.json() == by_header.json()
    assert requests.post(url, params={"token": token}, timeout=10).status_code == 405


def test_dropin_tokens_never_reach_a_log_line(live, fh, av, token, caplog):
    caplog.set_level(logging.DEBUG)
    fh.quote("AAPL")
    TimeSeries(key=token).get_quote_endpoint("AAPL")
    bad = "sc_badtoken_" + "q" * 20
    requests.get(live.url + "/finnhub/api/v1//quote", params={"symbol": "AAPL", "token": bad}, timeout=10)
    requests.get(live.url + "/alphavantage/query", params={"function": "OVERVIEW", "apikey": bad}, timeout=10)
    ours = [r for r in caplog.records if r.name.startswith(("stockcache", "waitress", "bottle"))]
    access = [r.getMessage() for r in ours if r.name == "stockcache.access"]
    assert any("/finnhub/api/v1/<path:path>" in line for line in access)
    assert any("/alphavantage/query" in line for line in access)
    for record in ours:
        text = record.getMessage() + str(record.exc_text or "")
        assert token not in text and bad not in text and "token=" not in text and "apikey=" not in text
