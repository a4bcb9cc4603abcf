"""Drop-in rendering: a recorded provider payload, parsed into our models and rendered back, is the payload.

Each test runs the real provider parser on a recorded body (tests/unit/payloads),
shapes the model as the service answers it, and renders it for the drop-in API:
what a client of that API reads must come back unchanged, apart from the
documented fields our cache does not keep.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from stockcache.errors import (
    InvalidRequest,
    RateLimited,
    StockcacheError,
    SymbolNotFound,
    Unauthorized,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)
from stockcache.upstream.providers import AlphaVantageProvider, FinnhubProvider, dropin
from stockcache.upstream.providers import alphavantage_dropin as av
from stockcache.upstream.providers import finnhub_dropin as fh
from stockcache.upstream.providers.alphavantage import AlphaVantageConfig, classify_message
from stockcache.upstream.providers.finnhub import FinnhubConfig

PAYLOADS = Path(__file__).parent / "payloads"
NOW = 1_715_100_000.0  # 2024-05-07T16:40Z, a Tuesday
SECRET = "TESTKEY_secret_5e6f7a8b"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_bytes())


def served(model: Any, source: str = "finnhub") -> dict[str, Any]:
    """The model as StockService answers it: its fields plus where it came from."""
    data = model.to_dict() if hasattr(model, "to_dict") else model
    out = dict(data) if isinstance(data, dict) else {"results": list(data)}
    return {**out, "source": source, "cache": "memory", "fetched_at": "2024-05-07T16:40:00Z", "age": 3,
            "stale": False}


def finnhub(kind: str, name: str, symbol: str = "AAPL", **params: Any) -> dict[str, Any]:
    provider = FinnhubProvider(FinnhubConfig(api_key=SECRET, url="https://finnhub.test/api/v1"), clock=lambda: NOW,
                               candles=True)
    body = (PAYLOADS / name).read_bytes()
    return served(provider.parse(kind, symbol, params, 200, {}, body))


def alphavantage(kind: str, name: str, symbol: str = "IBM", **params: Any) -> dict[str, Any]:
    provider = AlphaVantageProvider(AlphaVantageConfig(api_key=SECRET, url="https://av.test/query"), clock=lambda: NOW)
    body = (PAYLOADS / name).read_bytes()
    return served(provider.parse(kind, symbol, params, 200, {}, body), "alphavantage")


# -- Finnhub -------------------------------------------------------------------------------------


def test_dropin_render_finnhub_quote_is_the_recorded_body():
    assert fh.finnhub_quote(finnhub("quote", "finnhub_quote.json")) == payload("finnhub_quote.json")


def test_dropin_render_finnhub_profile_gives_market_cap_and_shares_back_in_millions():
    profile = finnhub("profile", "finnhub_profile2.json")
    assert profile["market_cap"] == 3_149_828_200_000  # stored in units
    assert fh.finnhub_profile(profile) == payload("finnhub_profile2.json")


def test_dropin_render_finnhub_profile_fills_missing_values_as_finnhub_does():
    body = fh.finnhub_profile({"symbol": "XYZ", "name": "XYZ Corp"})
    assert body["ticker"] == "XYZ" and body["logo"] == "" and body["marketCapitalization"] == 0
    assert set(body) == set(payload("finnhub_profile2.json"))


def test_dropin_render_finnhub_news_is_a_bare_array_newest_first_within_the_window():
    news = finnhub("news", "finnhub_company_news.json", days=7)
    recorded = payload("finnhub_company_news.json")
    body = fh.finnhub_news(news, 0, NOW)
    assert [item["datetime"] for item in body] == sorted((r["datetime"] for r in recorded), reverse=True)
    strip = lambda items: sorted(({k: v for k, v in i.items() if k != "id"} for i in items),  # noqa: E731
                                 key=lambda i: i["datetime"])
    assert strip(body) == strip(recorded)  # ids are ours (Finnhub's are not cached) but stable integers
    assert all(isinstance(item["id"], int) for item in body)
    assert fh.finnhub_news(news, 0, NOW) == body
    # Only articles published within [start, end] are answered.
    inside = fh.finnhub_news(news, 1714989600, 1715000000)
    assert [item["headline"] for item in inside] == ["Apple to hold event"]


def test_dropin_render_finnhub_metric_keeps_the_cached_figures_under_finnhub_names():
    body = fh.finnhub_metric(finnhub("metric", "finnhub_metric.json"))
    recorded = payload("finnhub_metric.json")
    kept = {k: v for k, v in recorded["metric"].items() if k != "10DayAverageTradingVolume"}
    assert body == {"metric": kept, "metricType": "all", "series": {"annual": {}, "quarterly": {}}, "symbol": "AAPL"}


def test_dropin_render_finnhub_search_is_the_recorded_body():
    search = finnhub("search", "finnhub_search.json", q="apple")
    assert fh.finnhub_search(search) == payload("finnhub_search.json")


def test_dropin_render_finnhub_candles_are_the_recorded_columns():
    history = finnhub("history", "finnhub_candle.json", days=100)
    recorded = payload("finnhub_candle.json")
    assert fh.finnhub_candles(history, 0, recorded["t"][-1]) == recorded
    # from/to select bars by the 00:00 UTC stamp of their day, inclusive.
    assert fh.finnhub_candles(history, recorded["t"][1], recorded["t"][1])["c"] == [recorded["c"][1]]
    assert fh.finnhub_candles(history, 0, recorded["t"][0] - 1) == {"s": "no_data"}


@pytest.mark.parametrize("error, status, message, headers", [
    (Unauthorized(), 401, "Invalid API key", {}),
    (RateLimited(retry_after=42), 429, fh.FINNHUB_LIMIT, {"Retry-After": "42"}),
    (RateLimited(), 429, fh.FINNHUB_LIMIT, {}),
    (UpstreamAuthError(), 403, fh.FINNHUB_NO_ACCESS, {}),
    (UpstreamTimeout(), 504, None, {}),
    (UpstreamError(f"finnhub answered 500 for token={SECRET}"), 502, None, {}),
    (InvalidRequest("Missing symbol."), 422, "Missing symbol.", {}),
    (StockcacheError(), 500, "Internal error.", {}),
])
def test_dropin_render_finnhub_errors_use_finnhub_statuses_and_one_key(error, status, message, headers):
    got_status, body, got_headers = fh.finnhub_error(error)
    assert (got_status, got_headers) == (status, headers)
    assert list(body) == ["error"] and isinstance(body["error"], str)
    if message is not None:
        assert body["error"] == message
    assert SECRET not in json.dumps(body)


# -- Alpha Vantage -----------------------------------------------------------------------------


def test_dropin_render_av_global_quote_is_the_recorded_body_but_volume():
    quote = alphavantage("quote", "av_global_quote.json", symbol="MSFT")
    recorded = payload("av_global_quote.json")["Global Quote"]
    body = av.av_global_quote(quote)["Global Quote"]
    assert body.pop("06. volume") == "0"  # the cached quote has no volume (documented)
    recorded.pop("06. volume")
    assert body == recorded


def test_dropin_render_av_global_quote_from_a_finnhub_quote_has_the_same_numbers():
    quote = finnhub("quote", "finnhub_quote.json")
    body = av.av_global_quote(quote)["Global Quote"]
    assert (float(body["05. price"]), float(body["09. change"])) == (261.74, 2.29)
    assert body["10. change percent"] == "0.8826%"
    assert body["07. latest trading day"] == "2020-02-25"  # t=1582641000 is 09:30 in New York that day


def test_dropin_render_av_overview_is_the_recorded_body_for_what_we_cache():
    profile = alphavantage("profile", "av_overview.json")
    metric = alphavantage("metric", "av_overview.json")
    recorded = payload("av_overview.json")
    body = av.av_overview(profile, metric)
    different = {k for k in body if body[k] != recorded.get(k)}
    assert different == {"Sector"}  # we keep the industry only, and answer it for both
    assert all(isinstance(v, str) for v in body.values())


def test_dropin_render_av_overview_without_figures_says_none():
    body = av.av_overview(alphavantage("profile", "av_overview.json"), None)
    assert body["PERatio"] == body["Beta"] == "None" and body["MarketCapitalization"] == "153717006000"


def test_dropin_render_av_daily_is_the_recorded_body_dates_descending():
    history = alphavantage("history", "av_time_series_daily.json", days=100)
    recorded = payload("av_time_series_daily.json")
    body = av.av_daily(history)
    assert body == recorded
    assert list(json.loads(json.dumps(body))["Time Series (Daily)"]) == sorted(
        recorded["Time Series (Daily)"], reverse=True)


def test_dropin_render_av_news_keeps_the_articles_and_neutral_sentiment():
    news = alphavantage("news", "av_news_sentiment.json", days=365)
    recorded = payload("av_news_sentiment.json")["feed"]
    body = av.av_news([news], [news["symbol"]], 0, NOW)
    assert body["items"] == str(len(recorded)) == str(len(body["feed"]))
    keep = ("title", "url", "time_published", "summary", "banner_image", "source")
    rows = lambda feed: sorted((tuple(i[k] or None for k in keep) for i in feed), reverse=True)  # noqa: E731
    assert rows(body["feed"]) == rows(recorded)  # an empty banner_image is cached as no image (null)
    times = [i["time_published"] for i in body["feed"]]
    assert times == sorted(times, reverse=True)
    assert {i["overall_sentiment_label"] for i in body["feed"]} == {"Neutral"}
    earliest = av.av_news([news], [news["symbol"]], 0, NOW, sort="EARLIEST", limit=1)
    assert earliest["items"] == "1" and earliest["feed"][0]["time_published"] == min(times)


def test_dropin_render_av_search_keeps_symbol_name_and_type():
    search = alphavantage("search", "av_symbol_search.json", q="BA")
    search["query"] = "BA"
    body = av.av_search(search)
    recorded = payload("av_symbol_search.json")["bestMatches"]
    keep = ("1. symbol", "2. name", "3. type", "9. matchScore")
    assert [tuple(m[k] for k in keep) for m in body["bestMatches"]] == [tuple(m[k] for k in keep) for m in recorded]


def test_dropin_render_search_types_translate_between_the_providers():
    from_finnhub = finnhub("search", "finnhub_search.json", q="apple")
    assert {m["3. type"] for m in av.av_search(from_finnhub)["bestMatches"]} == {"Equity"}
    from_av = alphavantage("search", "av_symbol_search.json", q="BA")
    assert [r["type"] for r in fh.finnhub_search(from_av)["result"]] == ["Common Stock", "ETP"]


@pytest.mark.parametrize("error, key, words", [
    (Unauthorized(), "Error Message", "apikey is invalid or missing"),
    (RateLimited(f"We have detected your API key as {SECRET}", retry_after=30), "Information", "rate limit"),
    (UpstreamAuthError(), "Information", "premium"),
    (UpstreamTimeout(), "Information", "try again later"),
    (UpstreamError(f"token={SECRET}"), "Information", "try again later"),
    (InvalidRequest("GLOBAL_QUOTE needs a symbol."), "Error Message", "Invalid API call"),
    (SymbolNotFound(), "Error Message", "Invalid API call"),
])
def test_dropin_render_av_errors_are_one_key_bodies_without_secrets(error, key, words):
    body, headers = av.av_error(error, "GLOBAL_QUOTE")
    assert list(body) == [key] and words in body[key]
    assert SECRET not in json.dumps(body)
    if isinstance(error, RateLimited):
        assert headers == {"Retry-After": "30"}


@pytest.mark.parametrize(("wait", "text"), [(1, av.AV_BURST), (60, av.AV_BURST), (7200, av.AV_DAILY_CAP),
                                            (None, av.AV_DAILY_CAP)])
def test_dropin_render_av_rate_limit_says_it_in_alpha_vantages_words(wait, text):
    """Scripts tell throttling from data by the text: the drop-in's is the real one, as our own adapter reads it."""
    body, _ = av.av_error(RateLimited(retry_after=wait), "GLOBAL_QUOTE")
    assert body == {"Information": text}
    error_class, _, fields = classify_message("Information", text, kind="quote", symbol="IBM", now=NOW)
    assert error_class is RateLimited and (fields["retry_after"] <= 60) is (text == av.AV_BURST)


def test_dropin_render_av_news_of_several_tickers_keeps_only_articles_about_all_of_them():
    def feed(symbol, urls):
        return {"symbol": symbol, "articles": [
            {"headline": u, "summary": "", "url": f"https://example.com/{u}", "source": "x",
             "published_at": f"2025-12-2{i}T10:00:00Z", "image": None} for i, u in enumerate(urls)]}

    body = av.av_news([feed("SAP.DE", ["a", "b", "c"]), feed("AAPL", ["b", "c", "d"])], ["SAP.DEX", "AAPL"], 0, 4e9)
    assert sorted(item["title"] for item in body["feed"]) == ["b", "c"]
    assert {t["ticker"] for item in body["feed"] for t in item["ticker_sentiment"]} == {"SAP.DEX", "AAPL"}
    none = av.av_news([feed("SAP.DE", ["a"]), feed("AAPL", ["d"])], ["SAP.DE", "AAPL"], 0, 4e9)
    assert none == {"Information": av.AV_NO_ARTICLES}


def test_dropin_render_av_unknown_function_does_not_echo_markup():
    body = av.av_unknown_function("<script>alert(1)</script>")
    assert "<" not in body["Error Message"] and "GLOBAL_QUOTE" in body["Error Message"]


# -- windows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first, days", [
    (date(2024, 5, 7), 7), (date(2024, 4, 30), 7), (date(2024, 4, 29), 30), (date(2024, 3, 1), 90),
    (date(2023, 6, 1), 365), (date(2020, 1, 1), 365), (date(2024, 6, 1), 7),
])
def test_dropin_render_news_windows_round_up_so_sliding_windows_share_a_fetch(first, days):
    assert dropin.news_window(first, date(2024, 5, 7)) == days
