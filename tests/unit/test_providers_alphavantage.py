"""Alpha Vantage adapter: recorded payloads through build_request -> requests (mocked) -> parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from stockcache.errors import InvalidRequest, SymbolNotFound
from stockcache.models import History, News, Profile, Quote
from stockcache.upstream.providers import AlphaVantageProvider
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig

BASE = "https://www.alphavantage.co/query"
KEY = "TESTKEY_alphavantage_1a2b3c"
PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_715_100_000.0  # 2024-05-07T16:40Z


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


@pytest.fixture
def provider() -> AlphaVantageProvider:
    return AlphaVantageProvider(AlphaVantageConfig(api_key=KEY, url=BASE), clock=lambda: NOW)


def fetch(provider: AlphaVantageProvider, kind: str, symbol: str, params: dict[str, Any], body: bytes,
          status: int = 200) -> tuple[Any, dict[str, list[str]]]:
    """Mock the real URL, send the built request, parse; also return the query that was sent."""
    request = provider.build_request(kind, symbol, params)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, BASE, body=body, status=status, content_type="application/json")
        response = requests.request(request.method, request.url, params=request.params, headers=request.headers)
        query = parse_qs(urlsplit(mock.calls[0].request.url).query)
    result = provider.parse(kind, symbol, params, response.status_code, response.headers, response.content)
    return result, query


def test_alphavantage_quote_strings_to_numbers(provider):
    quote, query = fetch(provider, "quote", "MSFT", {}, payload("av_global_quote.json"))
    assert query == {"function": ["GLOBAL_QUOTE"], "symbol": ["MSFT"], "apikey": [KEY]}
    assert isinstance(quote, Quote)
    assert (quote.price, quote.open, quote.high, quote.low, quote.previous_close, quote.change) == (
        112.13, 112.63, 113.17, 110.64, 112.79, -0.66)
    assert quote.change_percent == -0.5852
    assert quote.timestamp == 1538769600  # 2018-10-05 16:00 New York


def test_alphavantage_empty_global_quote_is_symbol_not_found(provider):
    with pytest.raises(SymbolNotFound) as info:
        fetch(provider, "quote", "ZZZZ", {}, b'{"Global Quote": {}}')
    assert info.value.fields["symbol"] == "ZZZZ"


def test_alphavantage_overview_profile_in_units(provider):
    profile, query = fetch(provider, "profile", "IBM", {}, payload("av_overview.json"))
    assert query["function"] == ["OVERVIEW"]
    assert isinstance(profile, Profile)
    assert profile.name == "International Business Machines"
    assert profile.market_cap == 153_717_006_000 and profile.shares_outstanding == 918_462_000
    assert (profile.exchange, profile.currency, profile.country) == ("NYSE", "USD", "USA")
    assert profile.industry == "COMPUTER & OFFICE EQUIPMENT"
    assert profile.weburl == "https://www.ibm.com" and profile.description.startswith("IBM")


def test_alphavantage_empty_overview_is_symbol_not_found(provider):
    for kind in ("profile", "metric"):
        with pytest.raises(SymbolNotFound):
            fetch(provider, kind, "ZZZZ", {}, b"{}")


def test_alphavantage_overview_metrics_normalised(provider):
    metric, _ = fetch(provider, "metric", "IBM", {}, payload("av_overview.json"))
    assert metric == {"symbol": "IBM", "metrics": {
        "52_week_high": 199.18, "52_week_low": 120.55, "beta": 0.697, "market_cap": 153_717_006_000,
        "pe_ratio": 18.94, "eps": 8.82, "dividend_yield": 3.98}}


def test_alphavantage_history_compact_oldest_first_capped(provider):
    history, query = fetch(provider, "history", "IBM", {"days": 30}, payload("av_time_series_daily.json"))
    assert query["outputsize"] == ["compact"] and query["function"] == ["TIME_SERIES_DAILY"]
    assert isinstance(history, History)
    assert len(history.candles) == 30
    dates = [c.date for c in history.candles]
    assert dates == sorted(dates) and dates[-1] == "2024-05-06"
    last = history.candles[-1]
    assert (last.open, last.high, last.low, last.close, last.volume) == (166.5, 168.67, 166.38, 168.61, 4222266)
    full, _ = fetch(provider, "history", "IBM", {"days": 100}, payload("av_time_series_daily.json"))
    assert len(full.candles) == 100


@pytest.mark.parametrize("days", [0, 101, None])
def test_alphavantage_history_days_bounded(provider, days):
    with pytest.raises(InvalidRequest):
        provider.build_request("history", "IBM", {"days": days})


def test_alphavantage_news_newest_first_iso_utc(provider):
    news, query = fetch(provider, "news", "IBM", {"days": 7}, payload("av_news_sentiment.json"))
    assert query["function"] == ["NEWS_SENTIMENT"] and query["tickers"] == ["IBM"]
    assert query["sort"] == ["LATEST"] and query["time_from"] == ["20240430T1640"]
    assert isinstance(news, News)
    assert [a.published_at for a in news.articles] == [
        "2024-01-26T09:05:00Z", "2024-01-25T15:30:00Z", "2024-01-24T12:00:00Z"]
    assert news.articles[1].headline == "IBM beats estimates"
    assert news.articles[1].image == "https://example.com/av/1.jpg"
    assert news.articles[0].image is None and news.articles[2].image is None


def test_alphavantage_empty_feed_is_empty_news(provider):
    news, _ = fetch(provider, "news", "IBM", {"days": 7}, b'{"items": "0", "feed": []}')
    assert news == News(symbol="IBM", articles=())


def test_alphavantage_search(provider):
    result, query = fetch(provider, "search", "", {"q": "BA"}, payload("av_symbol_search.json"))
    assert query["keywords"] == ["BA"]
    assert result == [{"symbol": "BA", "name": "The Boeing Company", "type": "Equity"},
                      {"symbol": "BAB", "name": "Invesco Taxable Municipal Bond ETF", "type": "ETF"}]
    empty, _ = fetch(provider, "search", "", {"q": "nothing"}, b'{"bestMatches": []}')
    assert empty == []


def test_alphavantage_trailing_question_mark_base_url():
    provider = AlphaVantageProvider(AlphaVantageConfig(api_key=KEY, url=BASE + "?"), clock=lambda: NOW)
    assert provider.build_request("quote", "IBM", {}).url == BASE
