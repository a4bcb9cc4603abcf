"""Finnhub adapter: recorded payloads through build_request -> requests (mocked) -> parse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from stockcache.errors import InvalidRequest, SymbolNotFound, UpstreamAuthError
from stockcache.models import History, News, Profile, Quote
from stockcache.upstream.providers import FinnhubProvider
from stockcache.upstream.providers.finnhub import FinnhubConfig

BASE = "https://finnhub.io/api/v1"
KEY = "TESTKEY_finnhub_9f8e7d"
PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_715_100_000.0  # 2024-05-07T16:40Z, a Tuesday


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


@pytest.fixture
def provider() -> FinnhubProvider:
    return FinnhubProvider(FinnhubConfig(api_key=KEY, url=BASE), clock=lambda: NOW)


def fetch(provider: FinnhubProvider, kind: str, symbol: str, params: dict[str, Any], path: str,
          body: bytes, status: int = 200) -> Any:
    """Mock the real URL, send the built request with requests, parse the response."""
    request = provider.build_request(kind, symbol, params)
    with responses.RequestsMock() as mock:
        mock.add(responses.GET, BASE + path, body=body, status=status, content_type="application/json")
        response = requests.request(request.method, request.url, params=request.params, headers=request.headers)
        sent = mock.calls[0].request
    assert KEY not in sent.url, "the key must never be in the URL"
    assert sent.headers["X-Finnhub-Token"] == KEY
    return provider.parse(kind, symbol, params, response.status_code, response.headers, response.content)


def test_finnhub_quote_parses_every_field(provider):
    quote = fetch(provider, "quote", "AAPL", {}, "/quote", payload("finnhub_quote.json"))
    assert quote == Quote(symbol="AAPL", price=261.74, change=2.29, change_percent=0.8826, high=263.31,
                          low=260.68, open=261.07, previous_close=259.45, timestamp=1582641000)


def test_finnhub_quote_all_zero_is_symbol_not_found(provider):
    with pytest.raises(SymbolNotFound) as info:
        fetch(provider, "quote", "ZZZZ", {}, "/quote", payload("finnhub_quote_unknown.json"))
    assert info.value.to_dict()["symbol"] == "ZZZZ"


def test_finnhub_profile_converts_millions_to_units(provider):
    profile = fetch(provider, "profile", "AAPL", {}, "/stock/profile2", payload("finnhub_profile2.json"))
    assert isinstance(profile, Profile)
    assert profile.market_cap == 3_149_828_200_000
    assert profile.shares_outstanding == 15_037_870_000
    assert (profile.name, profile.exchange, profile.industry, profile.ipo, profile.country, profile.currency) == (
        "Apple Inc", "NASDAQ NMS - GLOBAL MARKET", "Technology", "1980-12-12", "US", "USD")
    assert profile.weburl == "https://www.apple.com/"
    assert profile.logo.endswith("AAPL.png")


def test_finnhub_empty_profile_is_symbol_not_found(provider):
    with pytest.raises(SymbolNotFound):
        fetch(provider, "profile", "ZZZZ", {}, "/stock/profile2", b"{}")


def test_finnhub_news_newest_first_with_dates_from_clock(provider):
    request = provider.build_request("news", "AAPL", {"days": 7})
    assert request.params == {"symbol": "AAPL", "from": "2024-04-30", "to": "2024-05-07"}
    news = fetch(provider, "news", "AAPL", {"days": 7}, "/company-news", payload("finnhub_company_news.json"))
    assert isinstance(news, News)
    assert [a.url for a in news.articles] == [
        "https://example.com/news/2", "https://example.com/news/1", "https://example.com/news/3"]
    assert news.articles[0].published_at == "2024-05-07T10:00:00Z"
    assert news.articles[0].image is None  # "" from Finnhub
    assert news.articles[0].source == "Reuters"


def test_finnhub_empty_news_is_empty_not_missing(provider):
    news = fetch(provider, "news", "AAPL", {"days": 7}, "/company-news", b"[]")
    assert news == News(symbol="AAPL", articles=())


def test_finnhub_metric_is_normalised_dict(provider):
    metric = fetch(provider, "metric", "AAPL", {}, "/stock/metric", payload("finnhub_metric.json"))
    assert metric == {"symbol": "AAPL", "metrics": {
        "52_week_high": 260.1, "52_week_low": 164.08, "beta": 1.24, "market_cap": 3_450_000_000_000,
        "pe_ratio": 37.9, "eps": 6.08, "dividend_yield": 0.44}}
    assert provider.build_request("metric", "AAPL", {}).params == {"symbol": "AAPL", "metric": "all"}


def test_finnhub_empty_metric_is_symbol_not_found(provider):
    with pytest.raises(SymbolNotFound):
        fetch(provider, "metric", "ZZZZ", {}, "/stock/metric", b'{"metric":{},"metricType":"all","series":{}}')


def test_finnhub_search_maps_description_to_name(provider):
    result = fetch(provider, "search", "", {"q": "apple"}, "/search", payload("finnhub_search.json"))
    assert result[0] == {"symbol": "AAPL", "name": "APPLE INC", "type": "Common Stock"}
    assert len(result) == 2
    assert fetch(provider, "search", "", {"q": "zzzz"}, "/search", b'{"count":0,"result":[]}') == []


def test_finnhub_history_not_in_plan_without_candles(provider):
    assert "history" not in provider.kinds
    with pytest.raises(UpstreamAuthError) as info:
        provider.build_request("history", "AAPL", {"days": 30})
    assert "not in plan" in info.value.message


def test_finnhub_history_with_candles_oldest_first_capped():
    provider = FinnhubProvider(FinnhubConfig(api_key=KEY, url=BASE), clock=lambda: NOW, candles=True)
    assert "history" in provider.kinds
    request = provider.build_request("history", "AAPL", {"days": 2})
    assert request.params["resolution"] == "D" and int(request.params["to"]) == int(NOW)
    history = fetch(provider, "history", "AAPL", {"days": 2}, "/stock/candle", payload("finnhub_candle.json"))
    assert isinstance(history, History)
    assert [c.date for c in history.candles] == ["2024-05-07", "2024-05-08"]
    assert history.candles[-1].close == 170.2 and history.candles[-1].volume == 4100000
    with pytest.raises(SymbolNotFound):
        fetch(provider, "history", "ZZZZ", {"days": 2}, "/stock/candle", b'{"s":"no_data"}')


@pytest.mark.parametrize("params", [{"days": 0}, {"days": 366}, {"days": "x"}, {"days": True}])
def test_finnhub_news_rejects_bad_days(provider, params):
    with pytest.raises(InvalidRequest):
        provider.build_request("news", "AAPL", params)


def test_finnhub_double_slash_base_url_is_normalised():
    provider = FinnhubProvider(FinnhubConfig(api_key=KEY, url=BASE + "/"), clock=lambda: NOW)
    assert provider.build_request("quote", "AAPL", {}).url == BASE + "/quote"


def test_finnhub_unknown_kind_is_a_programming_error(provider):
    with pytest.raises(ValueError):
        provider.build_request("analysis", "AAPL", {})


def test_finnhub_payload_files_are_json():
    for path in PAYLOADS.glob("finnhub_*.json"):
        json.loads(path.read_bytes())
